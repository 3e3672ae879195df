"""`python -m src.arc`: decoding arcs, their drawings, where arcs come from.

In-process through `arc.show(Options(...))` and `arc.call(argv)` (the
tool's flags live in a FlagValues of its own, so they do not clash with the
entry points' flags of the same names), and one subprocess run of the
command line.
"""

import io
import json
import os
import subprocess
import sys

import pytest
from absl import flags

from src import arc as arc_tool
from src import registry
from src.arc import Options
from src.macro import arcs as macro_arcs
from src.micro import arcs as micro_arcs
from src.errors import UserError
from src.ptb import arcs as ptb_arcs
from tests.conftest import REPO_ROOT

# The reference README's macro example: "A concrete example can be found in
# our script ./scripts/cifar10_macro_final.sh", whose arc is built one part
# per line, part i (1-based) being "a number in [0, 1, 2, 3, 4, 5] that
# specifies the operation at layer i-th, corresponding to conv_3x3,
# separable_conv_3x3, conv_5x5, separable_conv_5x5, average_pooling,
# max_pooling" followed by "a sequence of i - 1 numbers, each is either 0 or
# 1, indicating whether a skip connection should be formed from a the
# corresponding past layer to the current layer".
README_MACRO_PARTS = [
    "0",
    "3 0",
    "0 1 0",
    "2 0 0 1",
    "2 0 0 0 0",
    "3 1 1 0 1 0",
    "2 0 0 0 0 0 1",
    "2 0 1 1 0 1 1 1",
    "1 0 1 1 1 0 1 0 1",
    "0 0 0 0 0 0 0 0 0 0",
    "2 0 0 0 0 0 1 0 0 0 0",
    "0 1 0 0 1 1 0 0 0 0 1 1",
    "2 0 1 0 0 0 0 0 1 0 1 1 0",
    "1 0 0 1 0 0 0 1 1 1 0 1 0 1",
    "0 1 1 0 1 0 1 0 0 0 0 0 1 0 0",
    "2 0 0 1 0 0 0 0 0 0 0 1 0 1 0 1",
    "2 0 1 0 0 0 1 0 0 1 1 1 1 0 0 1 0",
    "2 0 0 0 0 1 0 1 0 1 0 0 1 0 1 0 0 1",
    "3 0 1 1 0 1 0 0 0 0 0 1 0 1 0 1 0 0 0",
    "3 0 1 1 0 0 0 0 0 0 0 0 0 1 1 0 0 0 0 1",
    "0 1 0 0 1 0 1 1 0 0 0 1 0 0 0 0 0 1 1 0 0",
    "3 0 1 0 1 1 0 0 1 0 1 1 0 1 1 0 1 0 0 1 0 0",
    "0 1 0 1 0 1 0 0 0 0 0 0 0 0 1 0 1 0 0 1 0 0 0",
    "0 1 1 0 0 0 1 1 1 0 1 0 0 0 1 0 1 0 0 1 1 0 0 0",
]
README_MACRO_ARC = " ".join(README_MACRO_PARTS)
# The README's operation names, by number, and this port's names for them.
README_MACRO_OPS = {
    "conv_3x3": "conv_3x3", "separable_conv_3x3": "sep_conv_3x3",
    "conv_5x5": "conv_5x5", "separable_conv_5x5": "sep_conv_5x5",
    "average_pooling": "avg_pool_3x3", "max_pooling": "max_pool_3x3"}
README_MACRO_OP_ORDER = ["conv_3x3", "separable_conv_3x3", "conv_5x5",
                         "separable_conv_5x5", "average_pooling",
                         "max_pooling"]

# The README's micro example (./scripts/cifar10_micro_final.sh): "A micro
# cell with B + 2 blocks can be specified using B blocks, corresponding to
# blocks numbered 2, 3, ..., B+1, each block consists of 4 numbers index_1,
# op_1, index_2, op_2 ... index_1 and index_2 can be any previous index.
# op_1 and op_2 can be [0, 1, 2, 3, 4], corresponding to
# separable_conv_3x3, separable_conv_5x5, average_pooling, max_pooling,
# identity. A micro architecture can be specified by two sequences of cells
# concatenated after each other": the normal cell, then the reduction cell.
README_MICRO_NORMAL = "0 2 0 0 0 4 0 1 0 4 1 1 1 0 0 1 0 2 1 1"
README_MICRO_REDUCE = "1 0 1 0 0 3 0 2 1 1 3 1 1 0 0 4 0 3 1 1"
README_MICRO_ARC = README_MICRO_NORMAL + " " + README_MICRO_REDUCE
README_MICRO_OPS = ["sep_conv_3x3", "sep_conv_5x5", "avg_pool_3x3",
                    "max_pool_3x3", "identity"]

PTB_FINAL_ARC = "0 0 0 1 1 2 1 2 0 2 0 5 1 1 0 6 1 8 1 8 1 8 1"


def show(**kw):
    out = io.StringIO()
    assert arc_tool.show(Options(**kw), out=out) == 0
    return out.getvalue().splitlines()


def user_error(**kw):
    with pytest.raises(UserError) as e:
        arc_tool.show(Options(**kw), out=io.StringIO())
    assert "\n" not in str(e.value)
    return str(e.value)


def test_readme_macro_example_decodes_part_by_part():
    lines = show(search_space="macro", arc=README_MACRO_ARC)
    # 300 integers: 24 layers, inferred (24 + 24 * 23 / 2).
    assert lines[0] == ("macro arc: 24 layers, whole channels "
                        "(300 integers)")
    for i, part in enumerate(README_MACRO_PARTS, 1):
        values = [int(v) for v in part.split()]
        layer = i - 1
        # Printed back as the search prints it: one part per line.
        assert "  layer {:>2}: {}".format(layer, part) in lines
        # "The operation at layer i-th".
        op = README_MACRO_OPS[README_MACRO_OP_ORDER[values[0]]]
        # "The corresponding past layer" of skip bit j is the j-th output
        # so far in the reference's code (general_child._model keeps
        # [stem, layer 0, ...], and the previous layer is always the
        # input): the stem for j = 0, else layer j - 1.
        sources = ["stem" if j == 0 else "layer {}".format(j - 1)
                   for j, bit in enumerate(values[1:]) if bit]
        expected = "  layer {}: {}".format(layer, op)
        if sources:
            expected += "  skip from " + ", ".join(sources)
        assert expected in lines, expected
    assert ("  layer 5: sep_conv_5x5  skip from stem, layer 0, layer 2"
            in lines)
    assert any("after layers 7 and 15" in line for line in lines)


def test_readme_micro_example_decodes_block_by_block():
    lines = show(search_space="micro", arc=README_MICRO_ARC)
    assert lines[0] == "micro arc: 5 nodes per cell (40 integers)"
    assert lines[1] == "  normal cell:    " + README_MICRO_NORMAL
    assert lines[2] == "  reduction cell: " + README_MICRO_REDUCE
    assert "block k + 2 of the reference README" in lines[4]

    def name(index):
        # Indices 0 and 1 are the cell's inputs, block b is node b - 2.
        return "input {}".format(index) if index < 2 else "node {}".format(
            index - 2)

    for cell, text in (("normal", README_MICRO_NORMAL),
                       ("reduction", README_MICRO_REDUCE)):
        values = [int(v) for v in text.split()]
        start = lines.index("  {} cell:".format(cell))
        for block in range(2, 7):
            i1, op1, i2, op2 = values[4 * (block - 2):4 * (block - 1)]
            assert lines[start + block - 1] == (
                "    node {}: {}({}) + {}({})".format(
                    block - 2, README_MICRO_OPS[op1], name(i1),
                    README_MICRO_OPS[op2], name(i2)))
    # What no block reads is concatenated into the cell's output.
    assert ("    output: concat(node 0, node 1, node 2, node 3, node 4)"
            in lines)
    assert "    output: concat(node 0, node 2, node 3, node 4)" in lines


def test_ptb_listing_names_each_node_and_the_average():
    lines = show(search_space="ptb", arc=PTB_FINAL_ARC)
    assert lines[0] == "ptb cell: 12 nodes (23 integers)"
    assert "  node 0: tanh(input + state)" in lines
    assert "  node 3: relu(node 2)  -> output" in lines
    assert lines[-1] == "  h_t: mean of nodes 3, 4, 7, 9, 10, 11"


def test_macro_dot_has_layers_ops_and_skip_edges():
    # Layer 0 sep_conv_3x3; layer 1 conv_3x3 with a skip from the stem;
    # layer 2 max_pool_3x3 with a skip from layer 0.
    dot = arc_tool.to_dot(macro_arcs.MacroArc.parse("1 0 1 5 0 1", 3, 6,
                                                    True), "macro")
    assert dot.startswith("digraph macro {") and dot.endswith("}\n")
    for line in ['stem [label="stem\\nconv_3x3"];',
                 'layer_0 [label="layer 0\\nsep_conv_3x3\\n(then halve '
                 'resolution)"];',
                 'layer_2 [label="layer 2\\nmax_pool_3x3"];',
                 "stem -> layer_0;", "layer_0 -> layer_1;",
                 "layer_1 -> layer_2;",
                 'stem -> layer_1 [style="dashed", label="skip"];',
                 'layer_0 -> layer_2 [style="dashed", label="skip"];',
                 "layer_2 -> output;"]:
        assert "  " + line in dot.splitlines(), line
    assert dot.count("skip") == 2


def test_per_channel_macro_dot_lists_channel_slices():
    arc = macro_arcs.MacroArc.parse("0 2 1 1  0 1 0 3 1", 2, 2, False)
    dot = arc_tool.to_dot(arc, "macro")
    assert 'layer_0 [label="layer 0\\nconv_3x3[0:2]\\nsep_conv_3x3[1:2]"];' \
        in dot
    assert 'layer_1 [label="layer 1\\nconv_3x3[0:1]\\nsep_conv_3x3[0:3]"];' \
        in dot
    assert 'stem -> layer_1 [style="dashed", label="skip"];' in dot


def test_micro_dot_has_two_cells_op_nodes_and_the_concat():
    # One node per cell. Normal: identity(input 1) + sep_conv_3x3(input 0),
    # so both inputs are read and only node 0 is concatenated. Reduction:
    # max_pool_3x3(input 1) twice: input 0 is a loose end too.
    arc = micro_arcs.MicroArc.parse("1 4 0 0  1 3 1 3", 1)
    lines = arc_tool.to_dot(arc, "micro").splitlines()
    for line in ["subgraph cluster_normal {", 'label="normal cell";',
                 "subgraph cluster_reduce {", 'label="reduction cell";']:
        assert "  " + line in lines or "    " + line in lines, line
    body = {line.strip() for line in lines}
    for line in ['normal_in0 [label="c_{k-2}", shape="ellipse"];',
                 'normal_in1 [label="c_{k-1}", shape="ellipse"];',
                 'normal_n0 [label="node 0\\n+", shape="circle"];',
                 'normal_n0_op1 [label="identity", style="rounded"];',
                 'normal_n0_op2 [label="sep_conv_3x3", style="rounded"];',
                 "normal_in1 -> normal_n0_op1;",
                 "normal_n0_op1 -> normal_n0;",
                 "normal_in0 -> normal_n0_op2;",
                 "normal_n0_op2 -> normal_n0;",
                 'normal_out [label="c_{k}\\nconcat", shape="ellipse"];',
                 "normal_n0 -> normal_out;",
                 'reduce_n0_op1 [label="max_pool_3x3", style="rounded"];',
                 "reduce_in1 -> reduce_n0_op1;",
                 "reduce_in1 -> reduce_n0_op2;",
                 "reduce_in0 -> reduce_out;",
                 "reduce_n0 -> reduce_out;"]:
        assert line in body, line
    assert "normal_in0 -> normal_out;" not in body
    assert "reduce_in1 -> reduce_out;" not in body


def test_ptb_dot_feeds_node_0_and_averages_the_loose_ends():
    # node 0 tanh; node 1 relu(node 0); node 2 sigmoid(node 0).
    dot = arc_tool.to_dot(ptb_arcs.PtbArc.parse("0 0 1 0 3", 3), "ptb")
    body = {line.strip() for line in dot.splitlines()}
    for line in ['x_t [label="x_t", shape="ellipse"];',
                 'h_prev [label="h_{t-1}", shape="ellipse"];',
                 'node_0 [label="node 0\\ntanh"];',
                 'node_2 [label="node 2\\nsigmoid"];',
                 "x_t -> node_0;", "h_prev -> node_0;",
                 "node_0 -> node_1;", "node_0 -> node_2;",
                 "node_1 -> avg;", "node_2 -> avg;", "avg -> h_t;"]:
        assert line in body, line
    assert "node_0 -> avg;" not in body


@pytest.mark.parametrize("kw, header", [
    (dict(search_space="macro", arc="0 3 0 0 1 0"),
     "macro arc: 3 layers, whole channels (6 integers)"),
    # Per channel, 2 branches: 4 + 0 skips, then 4 + 1.
    (dict(search_space="macro", arc="0 2 1 1 0 1 0 3 1",
          child_num_branches=2, controller_search_whole_channels=False),
     "macro arc: 2 layers, per channel, 2 branches (9 integers)"),
    (dict(search_space="micro", arc="0 2 0 0 1 4 2 1  1 0 1 0 0 3 2 2"),
     "micro arc: 2 nodes per cell (16 integers)"),
    (dict(search_space="ptb", arc=PTB_FINAL_ARC),
     "ptb cell: 12 nodes (23 integers)"),
    (dict(search_space="ptb", arc="2"), "ptb cell: 1 nodes (1 integers)"),
])
def test_sizes_are_inferred_from_the_length(kw, header):
    assert show(**kw)[0] == header


@pytest.mark.parametrize("kw, fragment", [
    (dict(search_space="macro", arc="0 3 0 1"),
     "--arc has 4 integers, which fits no number of layers (n layers need "
     "n + n(n-1)/2: 3 for 2 layers, 6 for 3)"),
    (dict(search_space="micro", arc="0 0 0 0"),
     "--arc has 4 integers, not a multiple of 8"),
    (dict(search_space="ptb", arc="0 0"), "--arc has 2 integers, an even "
     "number"),
    (dict(search_space="macro", arc=""), "--arc is empty"),
    (dict(arc="0"), "which search space is --arc? give --search_space"),
    (dict(search_space="dense", arc="0"), "--search_space='dense' is "
     "unknown"),
])
def test_sizes_that_cannot_be_inferred_say_which_flag_to_give(kw, fragment):
    assert fragment in user_error(**kw)


def test_given_sizes_are_checked_by_the_entry_points_parse():
    message = user_error(search_space="macro", arc="0 3 0",
                         child_num_layers=3)
    with pytest.raises(UserError) as e:
        macro_arcs.MacroArc.parse("0 3 0", 3, 6, True, flag="--arc")
    assert message == str(e.value)


@pytest.mark.parametrize("space, text, parse", [
    ("macro", "0 7 0", lambda t: macro_arcs.MacroArc.parse(
        t, 2, 6, True, flag="--arc")),
    ("macro", "0 3 2", lambda t: macro_arcs.MacroArc.parse(
        t, 2, 6, True, flag="--arc")),
    ("macro", "0 x 0", lambda t: macro_arcs.MacroArc.parse(
        t, 2, 6, True, flag="--arc")),
    ("micro", "0 0 2 0 0 0 0 5", lambda t: micro_arcs.MicroArc.parse(
        t, 1, flag="--arc")),
    ("ptb", "0 1 0", lambda t: ptb_arcs.PtbArc.parse(t, 2, flag="--arc")),
])
def test_malformed_arcs_give_the_entry_points_message(space, text, parse):
    with pytest.raises(UserError) as e:
        parse(text)
    assert user_error(search_space=space, arc=text) == str(e.value)


def write_arcs_jsonl(path, records):
    with open(path, "w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
        f.write("not json\n")


def macro_record(arc, reward, epoch=1):
    parsed = macro_arcs.MacroArc.parse(arc, 2, 6, True)
    return {"epoch": epoch, "arc": arc, "reward": reward,
            "ops": [macro_arcs.MACRO_OPS[o] for o in parsed.ops],
            "layers": parsed.describe()}


def test_arc_file_with_arcs_jsonl_picks_the_best_reward(tmp_path):
    path = str(tmp_path / "arcs.jsonl")
    write_arcs_jsonl(path, [macro_record("0 1 0", 0.25),
                            macro_record("2 3 1", 0.5),
                            macro_record("4 5 0", 0.5, epoch=2),
                            macro_record("1 1 1", 0.125)])
    # The space comes from the record's keys, the size from the length.
    lines = show(arc_file=path)
    assert lines[0] == ("from {} record 1 of 4 (line 2, epoch 1, reward 0.5;"
                        " the best reward)".format(path))
    assert lines[2] == "  2 3 1"
    assert "  layer 1: sep_conv_5x5  skip from stem" in lines
    assert show(arc_file=path, index=-1)[2] == "  1 1 1"
    assert show(arc_file=path, index=0)[2] == "  0 1 0"
    assert "--index=4 is out of range" in user_error(arc_file=path, index=4)


def test_arc_file_records_of_micro_and_ptb_searches(tmp_path):
    micro = str(tmp_path / "micro.jsonl")
    write_arcs_jsonl(micro, [{"epoch": 1, "arc": README_MICRO_ARC,
                              "reward": 0.1, "normal": README_MICRO_NORMAL,
                              "reduce": README_MICRO_REDUCE}])
    assert show(arc_file=micro)[1].startswith("micro arc: 5 nodes")
    ptb = str(tmp_path / "ptb.jsonl")
    write_arcs_jsonl(ptb, [{"epoch": 1, "arc": PTB_FINAL_ARC, "reward": 0.07,
                            "cell": []}])
    assert show(arc_file=ptb)[1] == "ptb cell: 12 nodes (23 integers)"
    # A per-channel macro search records no "ops".
    channels = str(tmp_path / "channels.jsonl")
    write_arcs_jsonl(channels, [{"epoch": 1, "arc": "0 2 1 1 0 1 0 3 1",
                                 "reward": 0.2, "layers": []}])
    lines = show(arc_file=channels, child_num_branches=2)
    assert lines[1] == ("macro arc: 2 layers, per channel, 2 branches "
                        "(9 integers)")
    assert "  layer 0: conv_3x3[0:2], sep_conv_3x3[1:2]" in lines


def test_arc_file_with_one_arc_and_output_dir(tmp_path):
    best = tmp_path / "best_arc.txt"
    best.write_text(README_MICRO_ARC + "\n")
    lines = show(arc_file=str(best), search_for="micro")
    assert lines[:2] == ["from {}".format(best),
                         "micro arc: 5 nodes per cell (40 integers)"]
    # A run's folder: its arcs.jsonl first, else best_arc.txt.
    assert show(output_dir=str(tmp_path), search_space="micro")[0] == (
        "from {}".format(best))
    assert "holds one arc" in user_error(arc_file=str(best), index=0,
                                         search_space="micro")
    assert "no arcs.jsonl or best_arc.txt" in user_error(
        output_dir=str(tmp_path / "nothing"), search_space="micro")
    assert "cannot read --arc_file=" in user_error(
        arc_file=str(tmp_path / "missing.txt"), search_space="micro")
    assert "no arc given" in user_error(search_space="micro")


def test_a_runs_flagfile_keeps_only_this_tools_flags(tmp_path):
    flagfile = tmp_path / "flags.txt"
    flagfile.write_text("# a run's flags\n--batch_size=32\n"
                        "--child_fixed_arc=0 3 0\n--child_num_layers=2\n"
                        "--controller_search_whole_channels\n"
                        "--nochild_use_aux_heads\n--search_for=macro\n")
    argv = arc_tool.expand_flagfiles(
        ["arc", "--flagfile={}".format(flagfile), "--dot=x.dot", "--bogus"])
    # Flags typed on the command line stay, so absl still rejects typos.
    assert argv == ["arc", "--child_fixed_arc=0 3 0", "--child_num_layers=2",
                    "--controller_search_whole_channels",
                    "--search_for=macro", "--dot=x.dot", "--bogus"]
    assert arc_tool.expand_flagfiles(
        ["arc", "--flagfile", str(flagfile)])[1] == "--child_fixed_arc=0 3 0"
    # The arc of a fixed-arc run's flagfile is shown.
    lines = show(child_fixed_arc="0 3 0", child_num_layers=2,
                 controller_search_whole_channels=True, search_for="macro")
    assert lines[0] == "macro arc: 2 layers, whole channels (3 integers)"


def test_dot_writes_the_file_and_skips_the_png_without_dot(tmp_path,
                                                           monkeypatch):
    monkeypatch.setattr(arc_tool.shutil, "which", lambda name: None)
    path = str(tmp_path / "cell.dot")
    lines = show(search_space="ptb", arc="0 0 1", dot=path)
    with open(path) as f:
        assert f.read() == arc_tool.to_dot(ptb_arcs.PtbArc.parse("0 0 1", 2),
                                           "ptb")
    assert lines[-2] == "wrote {}".format(path)
    assert lines[-1].startswith("note: the Graphviz `dot` program is not on "
                                "PATH, so no PNG")
    assert not os.path.exists(str(tmp_path / "cell.png"))


def test_dot_renders_the_png_when_dot_is_installed(tmp_path, monkeypatch):
    # A stand-in for Graphviz's dot: copies its input to the -o file.
    fake = tmp_path / "dot"
    fake.write_text('#!/bin/sh\ncp "$2" "$4"\n')
    fake.chmod(0o755)
    monkeypatch.setattr(arc_tool.shutil, "which", lambda name: str(fake))
    path = str(tmp_path / "net.dot")
    lines = show(search_space="macro", arc="0 1 1", dot=path)
    assert lines[-1] == "wrote {}".format(tmp_path / "net.png")
    assert (tmp_path / "net.png").read_text().startswith("digraph macro {")
    assert arc_tool.png_path("net") == "net.png"
    assert "give it a .dot suffix" in user_error(
        search_space="macro", arc="0", dot=str(tmp_path / "x.png"))


def test_command_line_error_is_one_line_with_exit_status_2(tmp_path):
    # A run's flagfile (with flags this tool does not define) holding a
    # malformed arc: the entry point's own message, as it would print it.
    flagfile = tmp_path / "flags.txt"
    flagfile.write_text("--batch_size=32\n--child_fixed_arc=0 7 0\n"
                        "--child_num_layers=2\n--child_out_filters=16\n"
                        "--controller_search_whole_channels\n"
                        "--search_for=macro\n--seed=1\n")
    result = subprocess.run(
        [sys.executable, "-m", "src.arc", "--flagfile={}".format(flagfile)],
        cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=60)
    with pytest.raises(UserError) as e:
        macro_arcs.MacroArc.parse("0 7 0", 2, 4, True)
    assert result.returncode == 2, result.stderr
    assert result.stderr == "error: {}\n".format(e.value)
    assert result.stdout == ""


# ------------------------------------------- spaces from the registry

def test_spaces_and_search_for_values_come_from_the_registry():
    assert list(arc_tool.arc_classes()) == registry.names()
    assert arc_tool.search_for_spaces() == {
        "macro": "macro", "micro": "micro", "enas": "ptb", "rhn": "ptb",
        "base": "ptb", "enas_lm": "enas_lm"}
    # The reference's other PTB names are still accepted.
    for value in ("enas", "rhn", "base"):
        assert show(search_for=value, arc="0 0 1")[0] == (
            "ptb cell: 2 nodes (3 integers)")
    assert "--search_for='dense' is unknown: give --search_space=macro|" \
        "micro|ptb|enas_lm" in user_error(search_for="dense", arc="0")
    # A size flag only one space has names it.
    assert show(arc="0 0 1", child_rhn_depth=2)[0].startswith("ptb cell")
    assert "which search space" in user_error(arc="0", child_num_cells=1)
    assert [s.name for s in arc_tool.size_flags()] == [
        "child_num_layers", "child_num_branches",
        "controller_search_whole_channels", "child_num_cells",
        "child_rhn_depth", "controller_num_layers",
        "child_average_loose_ends"]
    with pytest.raises(TypeError, match="no size flag child_num_cels"):
        arc_tool.Options(child_num_cels=1)


EXAMPLE_ARCS = {"macro": "0 3 0", "micro": "0 0 0 0 1 1 1 1",
                "ptb": "0 0 1", "enas_lm": "0 0 1 3"}


def test_record_keys_are_those_of_each_spaces_arcs_jsonl_records():
    """RECORD_KEYS name the space of an arcs.jsonl record: the search
    writes them (`SearchSpace.arc_record`), and no other space's record
    has them."""
    assert set(EXAMPLE_ARCS) == set(registry.names())
    keys = {}
    for name in registry.names():
        cls = registry.arcs(name)
        record = registry.space(name).arc_record(
            cls.from_text(EXAMPLE_ARCS[name]))
        assert set(cls.RECORD_KEYS) & set(record), name
        keys[name] = set(record)
    for name in registry.names():
        for other in registry.names():
            if other != name:
                assert not set(registry.arcs(name).RECORD_KEYS) & \
                    keys[other], (name, other)


def call(argv, capsys):
    status = arc_tool.call(["arc"] + argv)
    out, err = capsys.readouterr()
    return status, out, err


def test_call_in_process_leaves_the_global_flags_alone(capsys, tmp_path):
    """The tool parses into a FlagValues of its own: it runs again and
    again in one process, beside an entry point defining --output_dir and
    --search_for, and defines nothing in absl's global flags."""
    before = set(flags.FLAGS)
    status, out, err = call(["--search_space=micro",
                             "--arc=" + README_MICRO_ARC], capsys)
    assert (status, err) == (0, "")
    assert out.splitlines() == show(search_space="micro",
                                    arc=README_MICRO_ARC)
    # A second call does not see the first one's flags.
    status, out, err = call(["--arc=0 3 0", "--search_for=macro"], capsys)
    assert status == 0 and out.startswith("macro arc: 2 layers")
    assert set(flags.FLAGS) == before
    # A run's flagfile gives the arc; its other flags are dropped.
    flagfile = tmp_path / "flags.txt"
    flagfile.write_text("--batch_size=32\n--child_fixed_arc=0 3 0\n"
                        "--search_for=macro\n")
    status, out, _ = call(["--flagfile={}".format(flagfile)], capsys)
    assert status == 0 and out.splitlines()[1] == "  0 3 0"


def test_call_beside_global_flags_of_the_same_names(capsys):
    """An entry point of the old kind, defining --output_dir and
    --search_for in absl's global flags, does not clash with the tool."""
    added = [name for name in ("output_dir", "search_for")
             if name not in flags.FLAGS]
    for name in added:
        flags.DEFINE_string(name, "elsewhere", "An entry point's.")
    try:
        status, out, err = call(["--search_for=rhn", "--arc=0 0 1"], capsys)
    finally:
        for name in added:
            delattr(flags.FLAGS, name)
    assert (status, err) == (0, "")
    assert out.startswith("ptb cell: 2 nodes")


@pytest.mark.parametrize("argv, err", [
    (["--bogus"], "error: Unknown command line flag 'bogus'; see --help for "
     "the flags\n"),
    (["--index=x"], None),
    (["--flagfile=/nonexistent/flags.txt"], "error: cannot read --flagfile="
     "/nonexistent/flags.txt: No such file or directory\n"),
    (["--flagfile"], "error: --flagfile needs a file: give --flagfile=PATH\n"),
    (["--arc=0 3 0", "0"], "error: unexpected arguments 0: every option is "
     "a --flag, e.g. --arc=\"0 3 0\" (quote the arc)\n"),
    (["--search_space=macro", "--arc=0 7 0"], "error: --arc: layer 1, "
     "position 1: op 7 is out of range 0..5 (conv_3x3, sep_conv_3x3, "
     "conv_5x5, sep_conv_5x5, avg_pool_3x3, max_pool_3x3)\n"),
])
def test_call_errors_are_one_line_with_status_2(argv, err, capsys):
    status, out, got = call(argv, capsys)
    assert status == 2 and out == ""
    assert got.startswith("error: ") and got.count("\n") == 1
    if err is not None:
        assert got == err


def test_help_prints_the_doc_and_the_flags(capsys):
    status, out, err = call(["--help"], capsys)
    assert status == 0 and err == ""
    assert out.startswith(arc_tool.__doc__.strip().splitlines()[0])
    for name in arc_tool.flag_names():
        assert "--{}:".format(name) in out or \
            "--[no]{}:".format(name) in out, name
