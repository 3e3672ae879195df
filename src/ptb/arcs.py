"""Recurrent cells as values: parse, validate, print back, decode.

The encoding is the reference's `--child_fixed_arc` for PTB: `2 * rhn_depth
- 1` integers. The first is node 0's activation (node 0 reads the word's
embedding and the previous step's state); then, for each node i >= 1, the
node it reads (`0 .. i - 1`) and its activation. The cell's output is the
mean of the nodes no other node reads ("loose ends"); the last node is
always one. Pure Python, no TensorFlow.
"""

import dataclasses

from src.cifar10.arcs import _parse_ints
from src.errors import UserError

# The child's activations, by the integer the controller samples.
PTB_FUNCS = ("tanh", "relu", "identity", "sigmoid")


def ptb_arc_length(rhn_depth):
    """Number of integers in a PTB arc."""
    return 2 * rhn_depth - 1


@dataclasses.dataclass(frozen=True)
class PtbArc:
    """A recurrent cell of `rhn_depth` nodes.

    funcs: per node, the activation id (index into PTB_FUNCS).
    prevs: per node, the node it reads; None for node 0 (input and state).
    """
    rhn_depth: int
    funcs: tuple
    prevs: tuple

    @classmethod
    def parse(cls, text, rhn_depth, num_funcs=len(PTB_FUNCS),
              flag="--child_fixed_arc"):
        """Parses and validates an arc string (or a sequence of ints).

        num_funcs: how many activation ids are valid (the controller may
          sample fewer than the child's four). Raises UserError naming the
          node and position of the first problem.
        """
        if rhn_depth < 1:
            raise UserError("--child_rhn_depth must be at least 1, got {}"
                            .format(rhn_depth))
        values = _parse_ints(text, flag)
        expected = ptb_arc_length(rhn_depth)
        if len(values) != expected:
            raise UserError(
                "{} has {} integers but --child_rhn_depth={} needs {} (one "
                "activation for node 0, then a previous node and an "
                "activation per node): check the arc or --child_rhn_depth"
                .format(flag, len(values), rhn_depth, expected))
        names = ", ".join(PTB_FUNCS[:num_funcs])

        def func_at(pos, node):
            f = values[pos]
            if not 0 <= f < num_funcs:
                raise UserError(
                    "{}: node {}, position {}: activation {} is out of range "
                    "0..{} ({})".format(flag, node, pos, f, num_funcs - 1,
                                        names))
            return f

        funcs, prevs = [func_at(0, 0)], [None]
        for node in range(1, rhn_depth):
            pos = 2 * node - 1
            prev = values[pos]
            if not 0 <= prev < node:
                raise UserError(
                    "{}: node {}, position {}: previous node {} must be one "
                    "of the earlier nodes 0..{}".format(
                        flag, node, pos, prev, node - 1))
            prevs.append(prev)
            funcs.append(func_at(pos + 1, node))
        return cls(rhn_depth, tuple(funcs), tuple(prevs))

    def to_list(self):
        out = [self.funcs[0]]
        for node in range(1, self.rhn_depth):
            out += [self.prevs[node], self.funcs[node]]
        return out

    def __str__(self):
        return " ".join(str(v) for v in self.to_list())

    def loose_ends(self):
        """The nodes no other node reads, in order (never empty)."""
        used = set(self.prevs[1:])
        return [n for n in range(self.rhn_depth) if n not in used]

    def describe(self):
        """One readable line per node."""
        loose = set(self.loose_ends())
        lines = []
        for node in range(self.rhn_depth):
            source = ("input + state" if node == 0
                      else "node {}".format(self.prevs[node]))
            lines.append("node {}: {}({}){}".format(
                node, PTB_FUNCS[self.funcs[node]], source,
                "  -> output" if node in loose else ""))
        return lines
