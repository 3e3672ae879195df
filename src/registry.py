"""The search spaces and the entry points that run them, by name.

Every tool takes a space from here: the entry points, `src.arc`,
`src.logs`, `src.export` and `src.bench`. Adding a search space is one
package (BUILD.md, Architecture: "Adding a search space") and one line in
`SPACES` (and in `ENTRY_POINTS` when it has entry points of its own).

This module imports no TensorFlow: `arcs(name)` loads only a space's arc
module (plain Python), so the light tools start at once; `space(name)`
loads the space's TensorFlow side.
"""

import dataclasses
import importlib


@dataclasses.dataclass(frozen=True)
class SpaceInfo:
    """Where a search space lives.

    entry: the entry point (a key of ENTRY_POINTS) whose flags run it;
    search_for: the `--search_for` value that picks it there;
    arcs: module of its arc class (`ARC_CLASS`; no TensorFlow);
    space: module of its `SPACE` object (`src.space.SearchSpace`);
    search_entry, final_entry: the entry points of its search and of its
      final training (default: `entry` for both; enas_lm has one of each);
    fixed_arc_flag, epochs_flag: the names of the flags that give those
      entry points a fixed arc and the number of epochs (`src.study`
      passes them to a retraining).
    """
    entry: str
    search_for: str
    arcs: str
    space: str
    search_entry: str = None
    final_entry: str = None
    fixed_arc_flag: str = "child_fixed_arc"
    epochs_flag: str = "num_epochs"

    def __post_init__(self):
        for name in ("search_entry", "final_entry"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, self.entry)


@dataclasses.dataclass(frozen=True)
class EntryInfo:
    """An entry point: `python -m <module>`, its flags (`define_flags(fv)`
    in `flags`) and the spaces it runs."""
    module: str
    flags: str
    spaces: tuple


SPACES = {
    "macro": SpaceInfo("cifar10", "macro", "src.macro.arcs",
                       "src.macro.space"),
    "micro": SpaceInfo("cifar10", "micro", "src.micro.arcs",
                       "src.micro.space"),
    "ptb": SpaceInfo("ptb", "enas", "src.ptb.arcs", "src.ptb.space"),
    "enas_lm": SpaceInfo("enas_lm_fixed", "enas_lm", "src.enas_lm.arcs",
                         "src.enas_lm.space", search_entry="enas_lm_search",
                         final_entry="enas_lm_fixed",
                         fixed_arc_flag="fixed_arc",
                         epochs_flag="child_num_train_epochs"),
}

ENTRY_POINTS = {
    "cifar10": EntryInfo("src.cifar10.main", "src.cifar10.flags",
                         ("macro", "micro")),
    "ptb": EntryInfo("src.ptb.main", "src.ptb.flags", ("ptb",)),
    "enas_lm_fixed": EntryInfo("src.enas_lm.fixed", "src.enas_lm.fixed_flags",
                               ("enas_lm",)),
    "enas_lm_search": EntryInfo("src.enas_lm.search",
                                "src.enas_lm.search_flags", ("enas_lm",)),
}


def names():
    return list(SPACES)


def info(name):
    """The SpaceInfo of `name`; ValueError naming the known spaces."""
    try:
        return SPACES[name]
    except KeyError:
        raise ValueError("unknown search space {!r}: use one of {}".format(
            name, ", ".join(SPACES))) from None


def arcs(name):
    """The arc class of space `name` (parse, print, describe, DOT)."""
    return importlib.import_module(info(name).arcs).ARC_CLASS


def space(name):
    """The `SearchSpace` object of `name` (loads TensorFlow)."""
    return importlib.import_module(info(name).space).SPACE


def entry(name):
    """The EntryInfo of entry point `name`."""
    try:
        return ENTRY_POINTS[name]
    except KeyError:
        raise ValueError("unknown entry point {!r}: use one of {}".format(
            name, ", ".join(ENTRY_POINTS))) from None


def space_for(entry_name, search_for):
    """The space that entry point `entry_name` runs for `--search_for`, or
    None when no space of that entry point answers to it."""
    for name in entry(entry_name).spaces:
        if SPACES[name].search_for == search_for:
            return name
    return None


def define_entry_flags(entry_name, flag_values):
    """Defines entry point `entry_name`'s flags into `flag_values`."""
    importlib.import_module(entry(entry_name).flags).define_flags(flag_values)
    return flag_values
