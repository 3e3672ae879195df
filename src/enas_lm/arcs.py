"""Recurrent cells of the corrected PTB model (enas_lm) as values: parse,
validate, print back, draw, and convert to and from the reference's PTB
encoding (`src.ptb.arcs.PtbArc`).

The encoding is enas_lm's `--fixed_arc` (and what its controller samples):
one `prev func` pair per node after node 0, so `2 * num_layers` integers.
Node 0 is fixed: tanh of the input and the previous state, a highway step
from the state. Node k (1..num_layers) reads node `prev` (0..k-1) and
applies function `func` (ENAS_LM_FUNCS: 0 tanh, 1 relu, 2 sigmoid,
3 identity) in a highway step from it. The cell's output is the mean of
nodes 1..num_layers (enas_lm's GPU code, `average_loose_ends=False`) or of
the nodes no other node reads (its TPU code's `child_average_loose_ends`).
Pure Python, no TensorFlow.
"""

import dataclasses

from src.arc_values import (SizeFlag, arc_ints, dot_edge, dot_node,
                             ints_text, parse_ints, size_arg)
from src.errors import UserError
from src.ptb.arcs import PTB_FUNCS, PtbArc

# The functions, by the integer in an arc (enas_lm's order).
ENAS_LM_FUNCS = ("tanh", "relu", "sigmoid", "identity")

# The README's arc for the fixed model (`fixed.py`), 8 nodes after node 0.
README_FIXED_ARC = "0 2 1 0 2 1 2 2 4 0 5 0 3 2 6 2"


def enas_lm_arc_length(num_layers):
    """Number of integers in an arc of `num_layers` nodes after node 0."""
    return 2 * num_layers


@dataclasses.dataclass(frozen=True)
class EnasLmArc:
    """A recurrent cell of node 0 and `num_layers` chosen nodes.

    prevs[k - 1], funcs[k - 1]: the node that node k (1..num_layers) reads
      (0..k-1) and its function id (index into ENAS_LM_FUNCS).
    average_loose_ends: the output is the mean of the loose ends (True) or
      of nodes 1..num_layers (False, enas_lm's GPU code).
    """
    num_layers: int
    prevs: tuple
    funcs: tuple
    average_loose_ends: bool = False

    # For `python -m src.arc` (see `from_text`): the key of this space's
    # arcs.jsonl records, no other `--search_for` names, the flags only
    # this space has, and the size flags it reads.
    RECORD_KEYS = ("enas_lm_cell",)
    SEARCH_FOR_ALIASES = ()
    SPACE_FLAGS = ("controller_num_layers", "child_average_loose_ends")
    SIZE_FLAGS = (
        SizeFlag("controller_num_layers", "integer", None,
                 "enas_lm nodes after node 0 (default: the arc's length / "
                 "2; the search's default is 9)."),
        SizeFlag("child_average_loose_ends", "boolean", None,
                 "enas_lm: the output is the mean of the loose ends, not of "
                 "every node after node 0 (default: false)."),
    )

    @classmethod
    def parse(cls, text, num_layers, average_loose_ends=False,
              flag="--fixed_arc"):
        """Parses and validates an arc string (or a sequence of ints).

        Raises UserError naming the node and position of the first problem.
        """
        if num_layers < 1:
            raise UserError("an enas_lm cell needs at least 1 node after "
                            "node 0, got {}".format(num_layers))
        values = parse_ints(text, flag)
        expected = enas_lm_arc_length(num_layers)
        if len(values) != expected:
            raise UserError(
                "{} has {} integers but {} nodes need {} (a previous node "
                "and a function per node after node 0)".format(
                    flag, len(values), num_layers, expected))
        prevs, funcs = [], []
        for node in range(1, num_layers + 1):
            pos = 2 * (node - 1)
            prev, func = values[pos], values[pos + 1]
            if not 0 <= prev < node:
                raise UserError(
                    "{}: node {}, position {}: previous node {} must be one "
                    "of the earlier nodes 0..{}".format(
                        flag, node, pos, prev, node - 1))
            if not 0 <= func < len(ENAS_LM_FUNCS):
                raise UserError(
                    "{}: node {}, position {}: function {} is out of range "
                    "0..{} ({})".format(flag, node, pos + 1, func,
                                        len(ENAS_LM_FUNCS) - 1,
                                        ", ".join(ENAS_LM_FUNCS)))
            prevs.append(prev)
            funcs.append(func)
        return cls(num_layers, tuple(prevs), tuple(funcs),
                   bool(average_loose_ends))

    @classmethod
    def from_text(cls, text, sizes=None, record=None, flag="--fixed_arc"):
        """Parses an arc whose size may be unknown:
        sizes["controller_num_layers"] (missing or None: the arc's length
        / 2) and sizes["child_average_loose_ends"] (default False). `record`
        (an arcs.jsonl record) is not needed. UserError naming the flag."""
        count = len(arc_ints(text, flag))
        num_layers = size_arg(sizes, "controller_num_layers")
        if num_layers is None:
            if count % 2:
                raise UserError(
                    "{} has {} integers, an odd number (an enas_lm cell has "
                    "a previous node and a function per node): check the "
                    "arc, or give --controller_num_layers".format(flag, count))
            num_layers = count // 2
        return cls.parse(text, num_layers,
                         size_arg(sizes, "child_average_loose_ends", False),
                         flag=flag)

    def to_list(self):
        out = []
        for prev, func in zip(self.prevs, self.funcs):
            out += [prev, func]
        return out

    def __str__(self):
        return ints_text(self.to_list())

    def loose_ends(self):
        """The nodes no other node reads, in order (node 0 never is one:
        node 1 reads it)."""
        used = set(self.prevs)
        return [n for n in range(1, self.num_layers + 1) if n not in used]

    def averaged(self):
        """The nodes whose mean is the cell's output (and next state)."""
        if self.average_loose_ends:
            return self.loose_ends()
        return list(range(1, self.num_layers + 1))

    def describe(self):
        """One readable line per node."""
        out = set(self.averaged())
        lines = ["node 0: tanh(input + state)"]
        for node in range(1, self.num_layers + 1):
            lines.append("node {}: {}(node {}){}".format(
                node, ENAS_LM_FUNCS[self.funcs[node - 1]],
                self.prevs[node - 1], "  -> output" if node in out else ""))
        return lines

    def listing(self):
        """The lines `python -m src.arc` prints: the arc, each node, and the
        nodes averaged into h_t."""
        lines = ["enas_lm cell: {} nodes after node 0 ({} integers)".format(
            self.num_layers, len(self.to_list())),
            "  {}".format(self),
            "",
            "Nodes (node 0 reads the word's embedding and the previous "
            "state; each other node reads one earlier node; every step is "
            "a highway step from what the node reads):"]
        lines.extend("  " + line for line in self.describe())
        lines.append("  h_t: mean of nodes {} ({})".format(
            ", ".join(str(n) for n in self.averaged()),
            "the loose ends" if self.average_loose_ends
            else "every node after node 0"))
        return lines

    def dot_lines(self):
        """Graphviz DOT of the cell: x_t and h_{t-1} into node 0, each node
        from the node it reads, the averaged nodes into h_t."""
        out = ["digraph enas_lm {", "  rankdir=TB;", "  node [shape=box];",
               dot_node("x_t", "x_t", shape="ellipse"),
               dot_node("h_prev", "h_{t-1}", shape="ellipse"),
               dot_node("node_0", "node 0\\ntanh")]
        for node in range(1, self.num_layers + 1):
            out.append(dot_node("node_{}".format(node), "node {}\\n{}".format(
                node, ENAS_LM_FUNCS[self.funcs[node - 1]])))
        out.append(dot_node("avg", "average", shape="circle"))
        out.append(dot_node("h_t", "h_t", shape="ellipse"))
        out.append(dot_edge("x_t", "node_0"))
        out.append(dot_edge("h_prev", "node_0"))
        for node in range(1, self.num_layers + 1):
            out.append(dot_edge("node_{}".format(self.prevs[node - 1]),
                                "node_{}".format(node)))
        for node in self.averaged():
            out.append(dot_edge("node_{}".format(node), "avg"))
        out.append(dot_edge("avg", "h_t"))
        out.append("}")
        return out

    # ------------------------------------------ the reference's encoding

    def to_ptb(self):
        """The same cell in the reference's PTB encoding (a PtbArc of
        `num_layers + 1` nodes, node 0 tanh). The reference averages the
        loose ends, so a cell averaging every node converts only when every
        node is a loose end; UserError otherwise."""
        if self.averaged() != self.loose_ends():
            raise UserError(
                "enas_lm arc {} averages every node after node 0 but nodes "
                "{} are read by others; the reference's PTB cell averages "
                "only the loose ends: no PTB arc computes it (with "
                "--child_average_loose_ends it converts)".format(
                    self, ", ".join(str(n) for n in sorted(set(self.prevs)
                                                           - {0}))))
        values = [PTB_FUNCS.index("tanh")]
        for prev, func in zip(self.prevs, self.funcs):
            values += [prev, PTB_FUNCS.index(ENAS_LM_FUNCS[func])]
        return PtbArc.parse(values, self.num_layers + 1)

    @classmethod
    def from_ptb(cls, ptb_arc, average_loose_ends=True):
        """The enas_lm cell of a reference PTB cell (a PtbArc): node 0 must
        be tanh and, unless `average_loose_ends`, every node after node 0
        a loose end. UserError naming what does not convert."""
        if ptb_arc.rhn_depth < 2:
            raise UserError(
                "PTB arc {} has only node 0; an enas_lm cell needs at least "
                "1 node after node 0".format(ptb_arc))
        if PTB_FUNCS[ptb_arc.funcs[0]] != "tanh":
            raise UserError(
                "PTB arc {}: node 0, position 0: activation {} ({}); enas_lm's "
                "node 0 is always tanh: no enas_lm arc computes it".format(
                    ptb_arc, ptb_arc.funcs[0], PTB_FUNCS[ptb_arc.funcs[0]]))
        prevs = tuple(ptb_arc.prevs[1:])
        funcs = tuple(ENAS_LM_FUNCS.index(PTB_FUNCS[f])
                      for f in ptb_arc.funcs[1:])
        arc = cls(ptb_arc.rhn_depth - 1, prevs, funcs,
                  bool(average_loose_ends))
        if arc.averaged() != [n for n in ptb_arc.loose_ends() if n]:
            raise UserError(
                "PTB arc {} averages its loose ends {}; enas_lm without "
                "--child_average_loose_ends averages every node after node "
                "0: no enas_lm arc computes it (convert with "
                "average_loose_ends)".format(
                    ptb_arc, ", ".join(str(n) for n in ptb_arc.loose_ends())))
        return arc


ARC_CLASS = EnasLmArc
