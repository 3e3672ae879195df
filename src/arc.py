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

Every search space comes from `src.registry`, and everything about one
from its arc class (`registry.arcs(name)`): `from_text` parses with the
sizes inferred, `listing()` and `dot_lines()` print it, `SIZE_FLAGS` are
the size flags, `RECORD_KEYS`, `SEARCH_FOR_ALIASES` and `SPACE_FLAGS` say
which space an arcs.jsonl record or a flag names. Adding a space needs no
edit here. Validation is the entry points' own (`MacroArc.parse`,
`MicroArc.parse`, `PtbArc.parse`): a malformed arc prints one `error: ...`
line and exits with status 2.

The flags live in a FlagValues of this tool's own (`src.tool`), so `call`
runs beside an entry point in one process. No TensorFlow: this starts in a
fraction of a second.
"""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

from absl import flags

from src import flagfile, registry, tool
from src.errors import UserError

# The flags this tool defines besides the size flags of the spaces' arc
# classes (`SIZE_FLAGS`); a run's flagfile may hold many more, which
# `expand_flagfiles` leaves out.
TOOL_FLAGS = ("search_space", "arc", "arc_file", "index", "dot",
              "search_for", "child_fixed_arc", "output_dir")


def arc_classes():
    """{space name: arc class}, in the registry's order."""
    return {name: registry.arcs(name) for name in registry.names()}


def search_for_spaces():
    """{`--search_for` value: space name}: each space's value in the
    registry, and its arc class's `SEARCH_FOR_ALIASES` (PTB: the
    reference's rhn and base)."""
    out = {}
    for name, cls in arc_classes().items():
        out[registry.info(name).search_for] = name
        for alias in cls.SEARCH_FOR_ALIASES:
            out.setdefault(alias, name)
    return out


def size_flags():
    """The size flags of every space's arc class (`SizeFlag`s), each name
    once, in the registry's order."""
    out = {}
    for cls in arc_classes().values():
        for size in cls.SIZE_FLAGS:
            out.setdefault(size.name, size)
    return list(out.values())


def flag_names():
    """Every flag this tool defines."""
    return TOOL_FLAGS + tuple(size.name for size in size_flags())


class Options:
    """What to decode and how (the flags of the same names; `sizes` the
    size flags of the arc classes, by name). None means "not given": the
    search space then comes from search_for, the arcs.jsonl record or a
    size flag only one space has (`SPACE_FLAGS`); the sizes from the arc's
    length (`from_text` of the space's arc class)."""

    def __init__(self, search_space=None, arc=None, arc_file=None,
                 index=None, dot=None, search_for=None, child_fixed_arc=None,
                 output_dir=None, **sizes):
        known = {size.name for size in size_flags()}
        unknown = sorted(set(sizes) - known)
        if unknown:
            raise TypeError("Options has no size flag {}: the spaces' arc "
                            "classes have {}".format(
                                ", ".join(unknown), ", ".join(sorted(known))))
        self.search_space = search_space
        self.arc = arc
        self.arc_file = arc_file
        self.index = index
        self.dot = dot
        self.search_for = search_for
        self.child_fixed_arc = child_fixed_arc
        self.output_dir = output_dir
        self.sizes = dict(sizes)

    def __getattr__(self, name):
        # A size flag by name (opts.child_num_layers); None: not given.
        if name != "sizes" and name in {s.name for s in size_flags()}:
            return self.sizes.get(name)
        raise AttributeError(name)

    def __eq__(self, other):
        return isinstance(other, Options) and vars(self) == vars(other)

    def __repr__(self):
        fields = {k: v for k, v in vars(self).items() if k != "sizes"}
        fields.update(self.sizes)
        return "Options({})".format(", ".join(
            "{}={!r}".format(k, v) for k, v in fields.items()
            if v is not None))


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


def _or_list(names):
    """"a, b or c"."""
    names = list(names)
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " or " + names[-1]


def _infer_space(opts, source):
    """--search_space, else --search_for's space, else the space whose arc
    class's RECORD_KEYS the arcs.jsonl record has, else the space whose
    SPACE_FLAGS are given."""
    classes = arc_classes()
    if opts.search_space is not None:
        if opts.search_space not in classes:
            raise UserError("--search_space={!r} is unknown: use {}".format(
                opts.search_space, _or_list(classes)))
        return opts.search_space
    if opts.search_for is not None:
        spaces = search_for_spaces()
        if opts.search_for not in spaces:
            raise UserError("--search_for={!r} is unknown: give "
                            "--search_space={}".format(
                                opts.search_for, "|".join(classes)))
        return spaces[opts.search_for]
    record = source.record or {}
    for name, cls in classes.items():
        if any(key in record for key in cls.RECORD_KEYS):
            return name
    for name, cls in classes.items():
        if any(opts.sizes.get(flag) is not None for flag in cls.SPACE_FLAGS):
            return name
    raise UserError("which search space is {}? give --search_space={}"
                    .format(source.flag, _or_list(classes)))


# ---------------------------------------------------------------- parsing

def parse_arc(opts, source, space):
    """The arc as an instance of the space's arc class (`from_text`: sizes
    not given are inferred from its length). Raises its UserErrors."""
    return registry.arcs(space).from_text(source.text, opts.sizes,
                                          record=source.record,
                                          flag=source.flag)


def listing(arc, space=None):
    """The readable lines printed for an arc (its class's `listing()`)."""
    return arc.listing()


def to_dot(arc, space=None):
    """Graphviz DOT text of the network an arc describes (its class's
    `dot_lines()`: macro the stem, layers and skips; micro the two cells;
    ptb the recurrent cell). `space`, if given, must be the arc's."""
    if space is not None:
        if space not in registry.names():
            raise ValueError("unknown search space {!r}".format(space))
        if not isinstance(arc, registry.arcs(space)):
            raise ValueError("{!r} is not an arc of the {} search space"
                             .format(arc, space))
    return "\n".join(arc.dot_lines()) + "\n"


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

def _known_flag(item, known):
    flag = item.lstrip("-").split("=", 1)[0]
    return item.startswith("-") and (
        flag in known or (flag.startswith("no") and "=" not in item
                          and flag[2:] in known))


def expand_flagfiles(argv, known=None):
    """argv with each --flagfile replaced by its flags (`src.flagfile`),
    keeping only the flags named in `known` (default: this tool's; a run's
    flagfile holds all of the entry point's flags, this tool reads only the
    arc and its sizes). Flags given on the command line itself are left as
    they are, so a typo is still an error. A flagfile that cannot be read
    is left as it is, for the parse to report (one `error:` line)."""
    known = set(flag_names() if known is None else known)
    try:
        groups = flagfile.flagfile_groups(argv[1:])
    except UserError:  # a --flagfile with no file: for the parse too
        return list(argv)
    out = list(argv[:1])
    for group, path in groups:
        if path is None:
            out.extend(group)
            continue
        try:
            args = flagfile.file_args(path) if path else []
        except UserError:
            out.extend(group)
            continue
        out.extend(item for item in args if _known_flag(item, known))
    return out


def define_flags(fv):
    """Defines this tool's absl flags into `fv`: its own, and the size
    flags of every space's arc class (named as the entry points' flags, so
    a run's flagfile gives them)."""
    classes = arc_classes()
    space_flags = ["--" + flag for cls in classes.values()
                   for flag in cls.SPACE_FLAGS]
    search_for = []
    for name in classes:
        value = registry.info(name).search_for
        search_for.append(value if value == name
                          else "{} ({})".format(value, name))
    d = dict(flag_values=fv)
    flags.DEFINE_string("search_space", None, "{} (default: from "
                        "--search_for, the arcs.jsonl record{}).".format(
                            _or_list(classes),
                            "".join(", or " + f for f in space_flags)), **d)
    flags.DEFINE_string("arc", None, "The arc, as for --child_fixed_arc.",
                        **d)
    flags.DEFINE_string("arc_file", None, "A file with one arc "
                        "(best_arc.txt) or a search's arcs.jsonl.", **d)
    flags.DEFINE_integer("index", None, "The arcs.jsonl record to show (0 "
                         "the first, -1 the last); default: the best "
                         "reward.", **d)
    flags.DEFINE_string("dot", None, "Write a Graphviz drawing here (and a "
                        "PNG beside it when `dot` is installed).", **d)
    flags.DEFINE_string("search_for", None, "As the entry points: {}."
                        .format(_or_list(search_for)), **d)
    flags.DEFINE_string("child_fixed_arc", None, "As the entry points: the "
                        "arc when --arc and --arc_file are not given.", **d)
    flags.DEFINE_string("output_dir", None, "A run's folder: its arcs.jsonl "
                        "(best reward) or best_arc.txt, when no arc is "
                        "given.", **d)
    define = {"integer": flags.DEFINE_integer,
              "boolean": flags.DEFINE_boolean}
    for size in size_flags():
        define[size.kind](size.name, size.default, size.help, **d)
    return fv


def options_from_flags(f):
    """Options from parsed flags; a size flag not given is None (inferred),
    whatever the default its help shows."""
    values = {name: f[name].value for name in TOOL_FLAGS}
    sizes = {size.name: f[size.name].value if f[size.name].present else None
             for size in size_flags()}
    return Options(**values, **sizes)


def main(f, argv):
    if len(argv) > 1:
        raise UserError("unexpected arguments {}: every option is a --flag, "
                        "e.g. --arc=\"0 3 0\" (quote the arc)".format(
                            " ".join(argv[1:])))
    try:
        return show(options_from_flags(f))
    except BrokenPipeError:
        # The reader stopped early (`| head`): not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def call(argv=None):
    """The command line in this process, returning its exit status:
    flagfiles narrowed to this tool's flags, then its own FlagValues (no
    clash with an entry point's flags); user errors become one line and
    status 2."""
    argv = list(sys.argv if argv is None else argv)
    return tool.call(define_flags, main, expand_flagfiles(argv), __doc__)


def run(argv=None):
    """`python -m src.arc`: `call(argv)`, then exit with its status."""
    sys.exit(call(argv))


if __name__ == "__main__":
    run()
