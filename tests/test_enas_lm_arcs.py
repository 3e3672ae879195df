"""EnasLmArc: enas_lm's `prev func` encoding, and its conversion to and
from the reference's PTB encoding."""

import subprocess
import sys
from pathlib import Path

import pytest

from src import arc as arc_tool
from src.enas_lm.arcs import (ENAS_LM_FUNCS, README_FIXED_ARC, EnasLmArc,
                              enas_lm_arc_length)
from src.errors import UserError
from src.ptb.arcs import PtbArc

REPO_ROOT = Path(__file__).resolve().parent.parent

# The three arcs of the recorded search case (goldens/lm_search).
SEARCH_GOLDEN_ARCS = ("0 2 1 0 2 1 2 2 4 0 5 0 3 2 6 2 7 1",
                      "0 0 1 1 2 2 3 3 4 0 5 1 6 2 7 3 8 0",
                      "0 3 0 2 0 1 0 0 1 3 2 2 0 1 4 0 5 3")


def test_the_readme_arc_decodes_into_nodes_and_what_is_averaged():
    arc = EnasLmArc.parse(README_FIXED_ARC, 8)
    assert arc.prevs == (0, 1, 2, 2, 4, 5, 3, 6)
    assert arc.funcs == (2, 0, 1, 2, 0, 0, 2, 2)
    assert str(arc) == README_FIXED_ARC
    assert arc.to_list() == [int(v) for v in README_FIXED_ARC.split()]
    # The GPU code averages every node after node 0, the TPU code only the
    # loose ends (the README: nodes 1-8 against nodes 7 and 8).
    assert arc.averaged() == list(range(1, 9))
    assert arc.loose_ends() == [7, 8]
    loose = EnasLmArc.parse(README_FIXED_ARC, 8, average_loose_ends=True)
    assert loose.averaged() == [7, 8]
    assert arc.describe()[0] == "node 0: tanh(input + state)"
    assert arc.describe()[1] == "node 1: sigmoid(node 0)  -> output"
    assert loose.describe()[1] == "node 1: sigmoid(node 0)"
    assert loose.describe()[7] == "node 7: sigmoid(node 3)  -> output"


def test_the_function_ids_are_enas_lms_order():
    assert ENAS_LM_FUNCS == ("tanh", "relu", "sigmoid", "identity")
    arc = EnasLmArc.parse("0 0 1 1 2 2 3 3", 4)
    assert [ENAS_LM_FUNCS[f] for f in arc.funcs] == [
        "tanh", "relu", "sigmoid", "identity"]


def test_every_recorded_search_arc_parses_with_nine_nodes():
    for text in SEARCH_GOLDEN_ARCS:
        assert str(EnasLmArc.parse(text, 9)) == text
    assert enas_lm_arc_length(9) == 18


@pytest.mark.parametrize("text, layers, fragment", [
    ("0 0 1", 2, "has 3 integers but 2 nodes need 4"),
    ("0 0 x 1", 2, "position 2 is 'x', not an integer"),
    ("1 0 0 0", 2, "node 1, position 0: previous node 1 must be one of the "
                   "earlier nodes 0..0"),
    ("0 0 2 0", 2, "node 2, position 2: previous node 2"),
    ("0 0 -1 0", 2, "previous node -1"),
    ("0 4 0 0", 2, "node 1, position 1: function 4 is out of range 0..3 "
                   "(tanh, relu, sigmoid, identity)"),
    ("0 0 0 2.5", 2, "not an integer"),
])
def test_malformed_arcs_get_one_line_errors_naming_the_node_and_position(
        text, layers, fragment):
    with pytest.raises(UserError) as e:
        EnasLmArc.parse(text, layers)
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_from_text_infers_the_size_and_reads_the_averaging_flag():
    assert EnasLmArc.from_text(README_FIXED_ARC) == EnasLmArc.parse(
        README_FIXED_ARC, 8)
    assert EnasLmArc.from_text(
        README_FIXED_ARC, {"child_average_loose_ends": True}).averaged() == [
            7, 8]
    with pytest.raises(UserError, match="has 16 integers but 9 nodes need 18"):
        EnasLmArc.from_text(README_FIXED_ARC, {"controller_num_layers": 9})
    with pytest.raises(UserError) as e:
        EnasLmArc.from_text("0 0 1", flag="--arc")
    assert str(e.value) == (
        "--arc has 3 integers, an odd number (an enas_lm cell has a previous "
        "node and a function per node): check the arc, or give "
        "--controller_num_layers")


def test_listing_and_dot_lines_show_the_averaged_nodes():
    lines = EnasLmArc.parse(README_FIXED_ARC, 8).listing()
    assert lines[:2] == ["enas_lm cell: 8 nodes after node 0 (16 integers)",
                         "  " + README_FIXED_ARC]
    assert lines[-1] == ("  h_t: mean of nodes 1, 2, 3, 4, 5, 6, 7, 8 (every "
                         "node after node 0)")
    loose = EnasLmArc.parse(README_FIXED_ARC, 8, True)
    assert loose.listing()[-1] == "  h_t: mean of nodes 7, 8 (the loose ends)"
    dot = loose.dot_lines()
    assert dot[0] == "digraph enas_lm {" and dot[-1] == "}"
    assert '  node_0 [label="node 0\\ntanh"];' in dot
    assert '  node_3 [label="node 3\\nrelu"];' in dot
    assert "  node_3 -> node_7;" in dot and "  node_7 -> avg;" in dot
    assert "  node_1 -> avg;" not in dot
    assert "  node_1 -> avg;" in EnasLmArc.parse(
        README_FIXED_ARC, 8).dot_lines()


# ------------------------------------------- the reference's PTB encoding

def test_a_loose_end_cell_converts_to_ptb_and_back():
    arc = EnasLmArc.parse(README_FIXED_ARC, 8, average_loose_ends=True)
    ptb = arc.to_ptb()
    # Node 0 tanh; sigmoid 2 -> 3, identity 3 -> 2 in the PTB order.
    assert str(ptb) == "0 0 3 1 0 2 1 2 3 4 0 5 0 3 3 6 3"
    assert ptb.loose_ends() == [7, 8]
    assert EnasLmArc.from_ptb(ptb) == arc
    chain = EnasLmArc.parse("0 3 1 2", 2, True)
    assert str(chain.to_ptb()) == "0 0 2 1 3"
    assert EnasLmArc.from_ptb(chain.to_ptb()) == chain


def test_a_cell_averaging_every_node_converts_only_when_all_are_loose_ends():
    star = EnasLmArc.parse("0 0 0 1 0 3", 3)
    assert star.averaged() == star.loose_ends() == [1, 2, 3]
    assert str(star.to_ptb()) == "0 0 0 0 1 0 2"
    assert EnasLmArc.from_ptb(star.to_ptb(), average_loose_ends=False) == star
    with pytest.raises(UserError) as e:
        EnasLmArc.parse(README_FIXED_ARC, 8).to_ptb()
    assert "averages every node after node 0 but nodes 1, 2, 3, 4, 5, 6 " \
        "are read by others" in str(e.value)
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="enas_lm without "
                       "--child_average_loose_ends averages every node"):
        EnasLmArc.from_ptb(PtbArc.parse("0 0 0 1 0", 3),
                           average_loose_ends=False)


def test_ptb_cells_without_an_enas_lm_form_get_one_line_errors():
    with pytest.raises(UserError) as e:
        EnasLmArc.from_ptb(PtbArc.parse("1 0 0", 2))
    assert str(e.value) == (
        "PTB arc 1 0 0: node 0, position 0: activation 1 (relu); enas_lm's "
        "node 0 is always tanh: no enas_lm arc computes it")
    with pytest.raises(UserError, match="has only node 0"):
        EnasLmArc.from_ptb(PtbArc.parse("0", 1))


# ------------------------------------------- `python -m src.arc`

def test_the_arc_tool_prints_an_enas_lm_arc_by_space_or_by_its_flags():
    opts = arc_tool.Options(search_space="enas_lm", arc=README_FIXED_ARC)
    source = arc_tool.arc_source(opts)
    arc = arc_tool.parse_arc(opts, source, "enas_lm")
    assert arc == EnasLmArc.parse(README_FIXED_ARC, 8)
    # A flag only this space has names it.
    opts = arc_tool.Options(arc=README_FIXED_ARC, child_average_loose_ends=True)
    assert arc_tool._infer_space(opts, arc_tool.arc_source(opts)) == "enas_lm"
    result = subprocess.run(
        [sys.executable, "-m", "src.arc", "--search_space=enas_lm",
         "--arc=0 5 0 0"], cwd=str(REPO_ROOT), capture_output=True,
        text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr == (
        "error: --arc: node 1, position 1: function 5 is out of range 0..3 "
        "(tanh, relu, sigmoid, identity)\n")
