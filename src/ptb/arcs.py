"""Recurrent cells as values: parse, validate, print back, decode.

The encoding is the reference's `--child_fixed_arc` for PTB: `2 * rhn_depth
- 1` integers. The first is node 0's activation (node 0 reads the word's
embedding and the previous step's state); then, for each node i >= 1, the
node it reads (`0 .. i - 1`) and its activation. The cell's output is the
mean of the nodes no other node reads ("loose ends"); the last node is
always one. Pure Python, no TensorFlow.
"""

import dataclasses

from src.arc_values import (SizeFlag, arc_ints, dot_edge, dot_node,
                             parse_ints, size_arg)
from src.errors import UserError

# The child's activations, by the integer the controller samples (the
# names; `src.ptb.ptb_child.PTB_FUNC_TABLE` pairs each with its function).
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

    # For `python -m src.arc` (see `from_text`): the keys of this space's
    # arcs.jsonl records, other `--search_for` values naming it (the
    # reference's rhn and base), size flags whose presence names it, and
    # the size flags it reads.
    RECORD_KEYS = ("cell",)
    SEARCH_FOR_ALIASES = ("rhn", "base")
    SPACE_FLAGS = ("child_rhn_depth",)
    SIZE_FLAGS = (
        SizeFlag("child_rhn_depth", "integer", None,
                 "PTB nodes (default: (the arc's length + 1) / 2)."),
    )

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
        values = parse_ints(text, flag)
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

    @classmethod
    def from_text(cls, text, sizes=None, record=None,
                  flag="--child_fixed_arc"):
        """Parses an arc whose depth may be unknown: sizes["child_rhn_depth"]
        (missing or None: (the arc's length + 1) / 2). `record` (an
        arcs.jsonl record) is not needed. UserError naming the flag to
        give."""
        count = len(arc_ints(text, flag))
        depth = size_arg(sizes, "child_rhn_depth")
        if depth is None:
            if count % 2 == 0:
                raise UserError(
                    "{} has {} integers, an even number (a PTB cell of depth "
                    "d has 2d - 1: one activation for node 0, then a "
                    "previous node and an activation per node): check the "
                    "arc, or give --child_rhn_depth".format(flag, count))
            depth = (count + 1) // 2
        return cls.parse(text, depth, flag=flag)

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

    def listing(self):
        """The lines `python -m src.arc` prints: the arc, each node, and the
        nodes averaged into h_t."""
        lines = ["ptb cell: {} nodes ({} integers)".format(
            self.rhn_depth, len(self.to_list())),
            "  {}".format(self),
            "",
            "Nodes (node 0 reads the word's embedding and the previous "
            "state; each other node reads one earlier node):"]
        lines.extend("  " + line for line in self.describe())
        lines.append("  h_t: mean of nodes {}".format(
            ", ".join(str(n) for n in self.loose_ends())))
        return lines

    def dot_lines(self):
        """Graphviz DOT of the cell: x_t and h_{t-1} into node 0, each node
        from the node it reads, the loose ends averaged into h_t."""
        out = ["digraph ptb {", "  rankdir=TB;", "  node [shape=box];",
               dot_node("x_t", "x_t", shape="ellipse"),
               dot_node("h_prev", "h_{t-1}", shape="ellipse")]
        for node in range(self.rhn_depth):
            out.append(dot_node("node_{}".format(node), "node {}\\n{}".format(
                node, PTB_FUNCS[self.funcs[node]])))
        out.append(dot_node("avg", "average", shape="circle"))
        out.append(dot_node("h_t", "h_t", shape="ellipse"))
        out.append(dot_edge("x_t", "node_0"))
        out.append(dot_edge("h_prev", "node_0"))
        for node in range(1, self.rhn_depth):
            out.append(dot_edge("node_{}".format(self.prevs[node]),
                                "node_{}".format(node)))
        for node in self.loose_ends():
            out.append(dot_edge("node_{}".format(node), "avg"))
        out.append(dot_edge("avg", "h_t"))
        out.append("}")
        return out


ARC_CLASS = PtbArc
