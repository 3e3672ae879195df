"""Reading architectures: `python -m src.arc --search_space=macro --arc=...`.

Decodes an arc string in the `--child_fixed_arc` encoding of a search space
(macro, micro or ptb) into a readable listing, and with `--dot=PATH` writes
a Graphviz drawing of the network (and PATH with .png when the `dot` program
is installed). The arc comes from `--arc`, from `--arc_file` (a
`best_arc.txt`, or an `arcs.jsonl` of a search, whose best reward is taken
unless `--index` picks a record), from `--child_fixed_arc`, or from the
`--output_dir` of a run. The size flags keep the entry points' names, so
`--flagfile=<output_dir>/flags.txt` of a run gives them; the flags of the
run that this tool does not use are ignored. Without them, the size is
inferred from the arc's length.

Validation is the entry points' own (`MacroArc.parse`, `MicroArc.parse`,
`PtbArc.parse`): a malformed arc prints one `error: ...` line and exits
with status 2. No TensorFlow: this starts in a fraction of a second.
"""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

from src.cifar10 import arcs as cifar_arcs
from src.errors import UserError
from src.ptb import arcs as ptb_arcs

SPACES = ("macro", "micro", "ptb")

# `--search_for` of the entry points, by the search space it selects (the
# PTB entry point takes "enas"; the reference also names rhn and base).
SEARCH_FOR_SPACES = {"macro": "macro", "micro": "micro", "enas": "ptb",
                     "rhn": "ptb", "base": "ptb"}

# The flags this tool defines; a run's flagfile may hold many more, which
# `expand_flagfiles` leaves out.
ARC_FLAGS = (
    "search_space", "arc", "arc_file", "index", "dot", "search_for",
    "child_fixed_arc", "output_dir", "child_num_layers", "child_num_branches",
    "controller_search_whole_channels", "child_num_cells", "child_rhn_depth",
)


@dataclasses.dataclass
class Options:
    """What to decode and how (the flags of the same names). None means
    "not given": the search space then comes from search_for, the
    arcs.jsonl record or child_rhn_depth; the sizes from the arc's length;
    whole channels is true unless an arcs.jsonl record of a per-channel
    search (no "ops") says otherwise."""
    search_space: str = None
    arc: str = None
    arc_file: str = None
    index: int = None
    dot: str = None
    search_for: str = None
    child_fixed_arc: str = None
    output_dir: str = None
    child_num_layers: int = None
    child_num_branches: int = 6
    controller_search_whole_channels: bool = None
    child_num_cells: int = None
    child_rhn_depth: int = None


@dataclasses.dataclass
class Source:
    """An arc string, the flag or file it came from (named in messages),
    a line saying where it came from, and the record it was read from
    (an arcs.jsonl line) if any."""
    text: str
    flag: str
    where: str
    record: dict = None


# ---------------------------------------------------------------- sources

def _read_text(path, flag):
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        raise UserError("cannot read {}={}: {}".format(
            flag, path, e.strerror or e)) from None


def _jsonl_records(text):
    """(line number, record) for each JSON object line (others skipped, as
    the search skips them when it looks for the best so far)."""
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "arc" in record:
            records.append((number, record))
    return records


def _from_jsonl(path, text, index, flag):
    records = _jsonl_records(text)
    if not records:
        raise UserError("{}={} holds no arcs.jsonl records with an \"arc\": "
                        "give an arcs.jsonl of a search or a file with one "
                        "arc".format(flag, path))
    if index is None:
        # The best reward, the first of equals (as best_arc.txt keeps it).
        best = 0
        for i, (_, record) in enumerate(records):
            if record.get("reward", float("-inf")) > records[best][1].get(
                    "reward", float("-inf")):
                best = i
        chosen, why = best, "the best reward"
    else:
        if not -len(records) <= index < len(records):
            raise UserError(
                "--index={} is out of range: {} holds {} records (0..{}, or "
                "negative from the end)".format(index, path, len(records),
                                                len(records) - 1))
        chosen, why = index % len(records), "--index={}".format(index)
    number, record = records[chosen]
    details = ", ".join(
        "{} {}".format(k, "{:.6g}".format(record[k])
                       if isinstance(record[k], float) else record[k])
        for k in ("epoch", "reward") if k in record)
    where = "{} record {} of {} (line {}{}; {})".format(
        path, chosen, len(records), number,
        ", " + details if details else "", why)
    return Source(str(record["arc"]), "arc in {} line {}".format(path, number),
                  where, record)


def _from_file(path, index, flag="--arc_file"):
    text = _read_text(path, flag)
    stripped = text.lstrip()
    if stripped.startswith("{"):
        return _from_jsonl(path, text, index, flag)
    if index is not None:
        raise UserError("--index picks a record of an arcs.jsonl; {}={} "
                        "holds one arc".format(flag, path))
    lines = [line.split("#", 1)[0] for line in text.splitlines()]
    arc = " ".join(" ".join(lines).split())
    if not arc:
        raise UserError("{}={} is empty: it should hold an arc, like the "
                        "best_arc.txt of a search".format(flag, path))
    return Source(arc, "arc in {}".format(path), path)


def arc_source(opts):
    """Where the arc comes from: --arc, --arc_file, --child_fixed_arc, or
    the arcs.jsonl / best_arc.txt in --output_dir, in that order (--index
    skips --child_fixed_arc: it asks for a record of an arcs.jsonl)."""
    if opts.arc is not None and opts.arc_file is not None:
        raise UserError("give either --arc or --arc_file, not both")
    if opts.arc is not None:
        return Source(opts.arc, "--arc", "--arc")
    if opts.arc_file is not None:
        return _from_file(opts.arc_file, opts.index)
    if opts.child_fixed_arc is not None and opts.index is None:
        return Source(opts.child_fixed_arc, "--child_fixed_arc",
                      "--child_fixed_arc")
    if opts.output_dir:
        for name in ("arcs.jsonl", "best_arc.txt"):
            path = os.path.join(opts.output_dir, name)
            if os.path.exists(path):
                return _from_file(path, opts.index)
        raise UserError("--output_dir={} has no arcs.jsonl or best_arc.txt "
                        "(only a search writes them): give --arc or "
                        "--arc_file".format(opts.output_dir))
    if opts.index is not None:
        raise UserError("--index picks a record of an arcs.jsonl: give it "
                        "with --arc_file or --output_dir")
    raise UserError("no arc given: pass --arc=\"0 3 0 ...\", or --arc_file="
                    "outputs/best_arc.txt (or an arcs.jsonl)")


def _infer_space(opts, source):
    if opts.search_space is not None:
        if opts.search_space not in SPACES:
            raise UserError("--search_space={!r} is unknown: use macro, "
                            "micro or ptb".format(opts.search_space))
        return opts.search_space
    if opts.search_for is not None:
        if opts.search_for not in SEARCH_FOR_SPACES:
            raise UserError("--search_for={!r} is unknown: give "
                            "--search_space=macro|micro|ptb".format(
                                opts.search_for))
        return SEARCH_FOR_SPACES[opts.search_for]
    record = source.record or {}
    if "normal" in record or "cells" in record:
        return "micro"
    if "layers" in record or "ops" in record:
        return "macro"
    if "cell" in record:
        return "ptb"
    if opts.child_rhn_depth is not None:
        return "ptb"
    raise UserError("which search space is {}? give --search_space=macro, "
                    "micro or ptb".format(source.flag))


# ---------------------------------------------------------------- parsing

def _count_ints(source):
    # The entry points' own tokenizer, so a bad token gets their message.
    return len(cifar_arcs._parse_ints(source.text, source.flag))


def _infer_macro_layers(count, num_branches, whole_channels, flag):
    n = 1
    while cifar_arcs.macro_arc_length(n, num_branches, whole_channels) < count:
        n += 1
    if cifar_arcs.macro_arc_length(n, num_branches, whole_channels) == count:
        return n
    if whole_channels:
        rule = "n layers need n + n(n-1)/2"
    else:
        rule = "n layers need 2 x {} + (layer id) per layer".format(
            num_branches)
    raise UserError(
        "{} has {} integers, which fits no number of layers ({}: {} for {} "
        "layers, {} for {}): check the arc, or give --child_num_layers{}"
        .format(flag, count, rule,
                cifar_arcs.macro_arc_length(n - 1, num_branches,
                                            whole_channels), n - 1,
                cifar_arcs.macro_arc_length(n, num_branches, whole_channels),
                n, "" if whole_channels
                else ", --child_num_branches or --controller_search_whole_"
                "channels"))


def parse_arc(opts, source, space):
    """The arc as a MacroArc, MicroArc or PtbArc; sizes not given are
    inferred from its length. Raises the parse functions' UserErrors."""
    count = _count_ints(source)
    if count == 0:
        raise UserError("{} is empty: give the arc's integers".format(
            source.flag))
    if space == "macro":
        whole = opts.controller_search_whole_channels
        if whole is None:
            # An arcs.jsonl record of a per-channel search has no "ops".
            record = source.record or {}
            whole = not ("layers" in record and "ops" not in record)
        branches = opts.child_num_branches
        if not whole and not 1 <= branches <= len(cifar_arcs.MACRO_OPS):
            raise UserError("--child_num_branches={} cannot be decoded: the "
                            "macro search space has at most {} branches"
                            .format(branches, len(cifar_arcs.MACRO_OPS)))
        layers = opts.child_num_layers
        if layers is None:
            layers = _infer_macro_layers(count, branches, whole, source.flag)
        return cifar_arcs.MacroArc.parse(source.text, layers, branches, whole,
                                         flag=source.flag)
    if space == "micro":
        cells = opts.child_num_cells
        if cells is None:
            if count % 8:
                raise UserError(
                    "{} has {} integers, not a multiple of 8 (index, op, "
                    "index, op per node, for the normal cell then the "
                    "reduction cell): check the arc, or give "
                    "--child_num_cells".format(source.flag, count))
            cells = count // 8
        return cifar_arcs.MicroArc.parse(source.text, cells, flag=source.flag)
    depth = opts.child_rhn_depth
    if depth is None:
        if count % 2 == 0:
            raise UserError(
                "{} has {} integers, an even number (a PTB cell of depth d "
                "has 2d - 1: one activation for node 0, then a previous node "
                "and an activation per node): check the arc, or give "
                "--child_rhn_depth".format(source.flag, count))
        depth = (count + 1) // 2
    return ptb_arcs.PtbArc.parse(source.text, depth, flag=source.flag)


# ---------------------------------------------------------------- listing

def _ints(values):
    return " ".join(str(v) for v in values)


def listing(arc, space):
    """The readable lines printed for an arc."""
    lines = []
    if space == "macro":
        per_layer = ("one op id" if arc.whole_channels
                     else "{} start/count values".format(
                         2 * arc.num_branches))
        lines.append("macro arc: {} layers, {} ({} integers)".format(
            arc.num_layers, "whole channels" if arc.whole_channels
            else "per channel, {} branches".format(arc.num_branches),
            len(arc.to_list())))
        lines.append("  {}".format(arc))
        lines.append("")
        lines.append("As the search prints it, one line per layer ({}, then "
                     "one skip bit per earlier output: the stem, layer 0, "
                     "...):".format(per_layer))
        width = len(str(arc.num_layers - 1))
        for layer, values in enumerate(arc.layer_lines()):
            lines.append("  layer {:>{}}: {}".format(layer, width,
                                                     _ints(values)))
        lines.append("")
        lines.append("Layers (layer l is part l + 1 of the reference README; "
                     "each reads the previous layer, or the stem):")
        lines.extend("  " + line for line in arc.describe())
        pools = [p for p in cifar_arcs.pool_layers(arc.num_layers) if p >= 0]
        lines.append("")
        if pools:
            lines.append("Resolution halves (and a fixed network's channels "
                         "double) after layers {}; then global average "
                         "pooling and the classifier.".format(
                             " and ".join(str(p) for p in pools)))
        else:
            lines.append("No pooling layers (fewer than 3 layers); then "
                         "global average pooling and the classifier.")
    elif space == "micro":
        normal, reduce_ = arc.cell_lines()
        lines.append("micro arc: {} nodes per cell ({} integers)".format(
            arc.num_cells, len(arc.to_list())))
        lines.append("  normal cell:    {}".format(_ints(normal)))
        lines.append("  reduction cell: {}".format(_ints(reduce_)))
        lines.append("")
        lines.append("Cells (index_1, op_1, index_2, op_2 per node; inputs 0 "
                     "and 1 are the outputs of the layers two back and one "
                     "back; node k is block k + 2 of the reference README):")
        lines.extend("  " + line for line in arc.describe())
    else:
        lines.append("ptb cell: {} nodes ({} integers)".format(
            arc.rhn_depth, len(arc.to_list())))
        lines.append("  {}".format(arc))
        lines.append("")
        lines.append("Nodes (node 0 reads the word's embedding and the "
                     "previous state; each other node reads one earlier "
                     "node):")
        lines.extend("  " + line for line in arc.describe())
        lines.append("  h_t: mean of nodes {}".format(
            ", ".join(str(n) for n in arc.loose_ends())))
    return lines


# ---------------------------------------------------------------- DOT

def _attrs(**attrs):
    if not attrs:
        return ""
    return " [{}]".format(", ".join(
        '{}="{}"'.format(k, str(v).replace('"', '\\"'))
        for k, v in attrs.items()))


def _node(name, label, **attrs):
    return "  {}{};".format(name, _attrs(label=label, **attrs))


def _edge(src, dst, **attrs):
    return "  {} -> {}{};".format(src, dst, _attrs(**attrs))


def _macro_dot(arc):
    pools = set(cifar_arcs.pool_layers(arc.num_layers))
    out = ["digraph macro {", "  rankdir=TB;",
           '  node [shape=box, style="rounded"];',
           _node("stem", "stem\\nconv_3x3")]
    for layer in range(arc.num_layers):
        if arc.whole_channels:
            what = cifar_arcs.MACRO_OPS[arc.ops[layer]]
        else:
            what = "\\n".join(
                "{}[{}:{}]".format(cifar_arcs.MACRO_OPS[b], s, s + c)
                for b, (s, c) in enumerate(arc.branches[layer]) if c)
        label = "layer {}\\n{}".format(layer, what)
        if layer in pools:
            label += "\\n(then halve resolution)"
        out.append(_node("layer_{}".format(layer), label))
    out.append(_node("output", "global avg pool\\nfc", shape="ellipse"))
    for layer in range(arc.num_layers):
        dst = "layer_{}".format(layer)
        out.append(_edge("stem" if layer == 0
                         else "layer_{}".format(layer - 1), dst))
        for j, bit in enumerate(arc.skips[layer]):
            if bit:
                src = "stem" if j == 0 else "layer_{}".format(j - 1)
                out.append(_edge(src, dst, style="dashed", label="skip"))
    out.append(_edge("layer_{}".format(arc.num_layers - 1), "output"))
    out.append("}")
    return out


def _micro_input(prefix, index):
    if index < 2:
        return "{}_in{}".format(prefix, index)
    return "{}_n{}".format(prefix, index - 2)


def _micro_dot(arc):
    out = ["digraph micro {", "  rankdir=TB;", "  node [shape=box];"]
    for which, prefix in (("normal", "normal"), ("reduction", "reduce")):
        out.append("  subgraph cluster_{} {{".format(prefix))
        out.append('    label="{} cell";'.format(which))
        body = [_node("{}_in0".format(prefix), "c_{k-2}", shape="ellipse"),
                _node("{}_in1".format(prefix), "c_{k-1}", shape="ellipse")]
        for node, (i1, op1, i2, op2) in enumerate(arc.cell(which)):
            name = "{}_n{}".format(prefix, node)
            body.append(_node(name, "node {}\\n+".format(node),
                              shape="circle"))
            for slot, (index, op) in enumerate(((i1, op1), (i2, op2)), 1):
                op_name = "{}_op{}".format(name, slot)
                body.append(_node(op_name, cifar_arcs.MICRO_OPS[op],
                                  style="rounded"))
                body.append(_edge(_micro_input(prefix, index), op_name))
                body.append(_edge(op_name, name))
        out_name = "{}_out".format(prefix)
        body.append(_node(out_name, "c_{k}\\nconcat", shape="ellipse"))
        for index in arc.outputs(which):
            body.append(_edge(_micro_input(prefix, index), out_name))
        out.extend("  " + line for line in body)
        out.append("  }")
    out.append("}")
    return out


def _ptb_dot(arc):
    out = ["digraph ptb {", "  rankdir=TB;", "  node [shape=box];",
           _node("x_t", "x_t", shape="ellipse"),
           _node("h_prev", "h_{t-1}", shape="ellipse")]
    for node in range(arc.rhn_depth):
        out.append(_node("node_{}".format(node), "node {}\\n{}".format(
            node, ptb_arcs.PTB_FUNCS[arc.funcs[node]])))
    out.append(_node("avg", "average", shape="circle"))
    out.append(_node("h_t", "h_t", shape="ellipse"))
    out.append(_edge("x_t", "node_0"))
    out.append(_edge("h_prev", "node_0"))
    for node in range(1, arc.rhn_depth):
        out.append(_edge("node_{}".format(arc.prevs[node]),
                         "node_{}".format(node)))
    for node in arc.loose_ends():
        out.append(_edge("node_{}".format(node), "avg"))
    out.append(_edge("avg", "h_t"))
    out.append("}")
    return out


def to_dot(arc, space):
    """Graphviz DOT text of the network an arc describes.

    macro: the stem, one node per layer (op, or channel slices) and the
      classifier; each layer's input edge and dashed skip edges.
    micro: the normal and reduction cells as two subgraphs: inputs c_{k-2}
      and c_{k-1}, per node two op nodes summed, and the concat of the loose
      ends (c_k).
    ptb: x_t and h_{t-1} into node 0, each node from the node it reads, the
      loose ends averaged into h_t.
    """
    builders = {"macro": _macro_dot, "micro": _micro_dot, "ptb": _ptb_dot}
    if space not in builders:
        raise ValueError("unknown search space {!r}".format(space))
    return "\n".join(builders[space](arc)) + "\n"


def png_path(dot_path):
    """The PNG rendered beside a DOT file: its suffix replaced by .png."""
    root, ext = os.path.splitext(dot_path)
    return (root if ext in (".dot", ".gv") else dot_path) + ".png"


def write_dot(arc, space, path, out=None):
    """Writes the DOT file, and its PNG when `dot` is on PATH (else a note
    says how to render it). Returns the PNG path or None."""
    out = out or sys.stdout
    if path.endswith(".png"):
        raise UserError("--dot={} names the DOT file; give it a .dot suffix "
                        "(the PNG is written beside it)".format(path))
    try:
        with open(path, "w") as f:
            f.write(to_dot(arc, space))
    except OSError as e:
        raise UserError("cannot write --dot={}: {}".format(
            path, e.strerror or e)) from None
    print("wrote {}".format(path), file=out)
    program = shutil.which("dot")
    png = png_path(path)
    if program is None:
        print("note: the Graphviz `dot` program is not on PATH, so no PNG; "
              "render it with: dot -Tpng {} -o {}".format(path, png),
              file=out)
        return None
    result = subprocess.run([program, "-Tpng", path, "-o", png],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError("dot could not render {}: {}".format(
            path, " ".join(result.stderr.split()) or "exit status {}".format(
                result.returncode)))
    print("wrote {}".format(png), file=out)
    return png


def show(opts, out=None):
    """Decodes the arc `opts` names, prints its listing to `out` and writes
    the drawing when `opts.dot` is set. Returns the exit status."""
    out = out or sys.stdout
    source = arc_source(opts)
    space = _infer_space(opts, source)
    arc = parse_arc(opts, source, space)
    if source.where != source.flag:
        print("from {}".format(source.where), file=out)
    for line in listing(arc, space):
        print(line, file=out)
    if opts.dot:
        print("", file=out)
        write_dot(arc, space, opts.dot, out)
    return 0


# ---------------------------------------------------------------- flags

def expand_flagfiles(argv, known=ARC_FLAGS):
    """argv with each --flagfile replaced by its flags, keeping only the
    flags named in `known` (a run's flagfile holds all of the entry point's
    flags; this tool reads only the arc and its sizes). Flags given on the
    command line itself are left as they are, so a typo is still an error.
    A flagfile that cannot be read is left for absl to report."""
    from absl import flags

    reader = flags.FlagValues()
    out, args, i = [argv[0]], list(argv[1:]), 0
    while i < len(args):
        arg = args[i]
        name = arg.lstrip("-").split("=", 1)[0]
        if not arg.startswith("-") or name != "flagfile":
            out.append(arg)
            i += 1
            continue
        group = [arg]
        if "=" not in arg and i + 1 < len(args):
            group.append(args[i + 1])
        try:
            expanded = reader.read_flags_from_files([argv[0]] + group,
                                                    force_gnu=True)[1:]
        except flags.Error:
            out.extend(group)
        else:
            for item in expanded:
                flag = item.lstrip("-").split("=", 1)[0]
                if item.startswith("-") and (
                        flag in known
                        or (flag.startswith("no") and "=" not in item
                            and flag[2:] in known)):
                    out.append(item)
        i += len(group)
    return out


def define_flags():
    """Defines this tool's absl flags (once). Only the command line calls
    it: the entry points define flags of the same names in their own
    processes."""
    from absl import flags

    if "search_space" in flags.FLAGS:
        return
    d = flags
    d.DEFINE_string("search_space", None, "macro, micro or ptb (default: "
                    "from --search_for, the arcs.jsonl record, or "
                    "--child_rhn_depth).")
    d.DEFINE_string("arc", None, "The arc, as for --child_fixed_arc.")
    d.DEFINE_string("arc_file", None, "A file with one arc (best_arc.txt) "
                    "or a search's arcs.jsonl.")
    d.DEFINE_integer("index", None, "The arcs.jsonl record to show (0 the "
                     "first, -1 the last); default: the best reward.")
    d.DEFINE_string("dot", None, "Write a Graphviz drawing here (and a PNG "
                    "beside it when `dot` is installed).")
    d.DEFINE_string("search_for", None, "As the entry points: macro, micro, "
                    "or enas (PTB).")
    d.DEFINE_string("child_fixed_arc", None, "As the entry points: the arc "
                    "when --arc and --arc_file are not given.")
    d.DEFINE_string("output_dir", None, "A run's folder: its arcs.jsonl "
                    "(best reward) or best_arc.txt, when no arc is given.")
    d.DEFINE_integer("child_num_layers", None, "Macro layers (default: "
                     "from the arc's length).")
    d.DEFINE_integer("child_num_branches", 6, "Macro branches (per-channel "
                     "arcs).")
    d.DEFINE_boolean("controller_search_whole_channels", True, "Macro arcs "
                     "with one op id per layer (else start/count pairs).")
    d.DEFINE_integer("child_num_cells", None, "Micro nodes per cell "
                     "(default: the arc's length / 8).")
    d.DEFINE_integer("child_rhn_depth", None, "PTB nodes (default: (the "
                     "arc's length + 1) / 2).")


def options_from_flags(f):
    values = {name: getattr(f, name) for name in ARC_FLAGS}
    if not f["controller_search_whole_channels"].present:
        values["controller_search_whole_channels"] = None
    return Options(**values)


def main(argv):
    from absl import flags

    if len(argv) > 1:
        raise UserError("unexpected arguments {}: every option is a --flag, "
                        "e.g. --arc=\"0 3 0\" (quote the arc)".format(
                            " ".join(argv[1:])))
    try:
        return show(options_from_flags(flags.FLAGS))
    except BrokenPipeError:
        # The reader stopped early (`| head`): not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def run(argv=None):
    """The command line: flagfiles narrowed to this tool's flags, then
    absl; user errors become one line and exit 2."""
    from src import entry_point

    define_flags()
    entry_point.run(main, expand_flagfiles(list(argv or sys.argv)))


if __name__ == "__main__":
    run()
