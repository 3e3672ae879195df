"""Reading absl flagfiles without absl: one reader for every tool.

A flagfile holds one argument a line (`--name=value`, `--name`,
`--noname`); blank lines and comments (`#`, `//`) are skipped, and a
`--flagfile=PATH` line reads PATH in its place, as absl does. The tools
read them before absl does: `src.export` and `src.bench` to pick the entry
point whose flags to define (`last_value`), `src.arc` to keep only its own
flags of a run's `flags.txt` (`expand`), `src.logs` to settle flag values
(`read`). No TensorFlow, no absl.
"""

import os
import re

from src.errors import UserError

_FLAG = re.compile(r"^--?(?P<name>[A-Za-z0-9_]+)(?:=(?P<value>.*))?$")


def _is_flagfile(arg):
    m = _FLAG.match(arg)
    return bool(m) and m["name"] == "flagfile"


def file_args(path, _stack=()):
    """The arguments of flagfile `path`, one a line, its nested flagfiles
    read in their place. A flagfile that (directly or not) names itself is
    followed once, as absl does; a file that cannot be read is a UserError
    naming it."""
    path = os.path.expanduser(path)
    real = os.path.realpath(path)
    if real in _stack:
        return []
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise UserError("cannot read --flagfile={}: {}".format(
            path, e.strerror or e)) from None
    args = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith(("#", "//")):
            continue
        if _is_flagfile(line):
            value = _FLAG.match(line)["value"]
            if value:
                args.extend(file_args(value.strip(), _stack + (real,)))
        else:
            args.append(line)
    return args


def flagfile_groups(argv):
    """argv as (group, path) pairs: each `--flagfile=PATH` or `--flagfile
    PATH` is one group with its PATH ("" for `--flagfile=`, which absl
    ignores), every other argument a group of its own with path None.
    After `--` nothing is a flagfile (absl stops there). UserError for a
    `--flagfile` with no file after it."""
    out, args, i = [], list(argv), 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            out.extend(([a], None) for a in args[i:])
            break
        if not _is_flagfile(arg):
            out.append(([arg], None))
            i += 1
            continue
        value = _FLAG.match(arg)["value"]
        group = [arg]
        if value is None:
            if i + 1 >= len(args):
                raise UserError("--flagfile needs a file: give "
                                "--flagfile=PATH")
            value = args[i + 1]
            group.append(value)
        out.append((group, value.strip()))
        i += len(group)
    return out


def expand(argv):
    """argv with every `--flagfile=PATH` / `--flagfile PATH` replaced by
    the arguments of PATH (`file_args`); the other arguments unchanged and
    in order, so the last value of a flag still wins as absl reads them."""
    out = []
    for group, path in flagfile_groups(argv):
        if path is None:
            out.extend(group)
        elif path:
            out.extend(file_args(path))
    return out


def last_value(args, name):
    """The value of the last `--name=value` or `--name value` in `args`
    (command-line arguments; their flagfiles are expanded here), as absl
    would read it, or None when it is not given. For tools that must
    choose which flags to define before absl parses them."""
    args = expand(args)
    found = None
    for i, arg in enumerate(args):
        if arg == "--":
            break
        m = _FLAG.match(arg)
        if m and m["name"] == name:
            value = m["value"]
            if value is None and i + 1 < len(args):
                value = args[i + 1]
            found = value
    return found


def read(path):
    """{name: value} of a flagfile's `--name=value`, `--name` and
    `--noname` lines (values as text, as the run printed them; `--name`
    gives "True", `--noname` gives name "False" and noname "True"). Nested
    flagfiles are followed; UserError when a file cannot be read."""
    values = {}
    for line in file_args(path):
        if not line.startswith("--"):
            continue
        name, eq, value = line[2:].partition("=")
        if eq:
            values[name] = value
        elif name.startswith("no"):
            values.setdefault(name, "True")
            values[name[2:]] = "False"
        else:
            values[name] = "True"
    return values
