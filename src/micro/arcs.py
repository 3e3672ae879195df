"""Micro (cell) architectures as values: parse, validate, print back,
decode.

The encoding is the reference's `--child_fixed_arc` for micro search: the
normal cell's 4 * num_cells integers (index, op, index, op per node), then
the reduction cell's. Pure Python, no TensorFlow, so it tests without a
model.
"""

import dataclasses

from src.arc_values import (SizeFlag, arc_ints, dot_edge, dot_node,
                             ints_text, parse_ints, size_arg)
from src.errors import UserError

# The op table of the micro search space (the reference's `_enas_cell`
# order): the integer the controller samples, the branch index of the
# search child's switch_case and the name printed for a user.
MICRO_OPS = (
    "sep_conv_3x3",
    "sep_conv_5x5",
    "avg_pool_3x3",
    "max_pool_3x3",
    "identity",
)

MICRO_CELLS = ("normal", "reduction")


def micro_arc_length(num_cells):
    """Number of integers in a micro arc: (index, op, index, op) per node,
    for the normal cell then the reduction cell."""
    return 8 * num_cells


def _micro_input_name(index):
    if index < 2:
        return "input {}".format(index)
    return "node {}".format(index - 2)


def _dot_input(prefix, index):
    if index < 2:
        return "{}_in{}".format(prefix, index)
    return "{}_n{}".format(prefix, index - 2)


@dataclasses.dataclass(frozen=True)
class MicroArc:
    """A micro architecture: a normal cell and a reduction cell.

    normal, reduce: per node k (0-based), the tuple (index_1, op_1, index_2,
    op_2). An index picks the node's input: 0 and 1 are the cell's two inputs
    (the outputs of the layers two back and one back), k' + 2 the output of
    node k' < k. Ops index `MICRO_OPS`. The node's output is op_1(input_1) +
    op_2(input_2); the cell's output concatenates the nodes (inputs 0 and 1
    included) that no node reads (`outputs(cell)`).
    """
    num_cells: int
    normal: tuple
    reduce: tuple

    # For `python -m src.arc` (see `from_text`): the keys of this space's
    # arcs.jsonl records, other `--search_for` values naming it, size flags
    # whose presence names it, and the size flags it reads.
    RECORD_KEYS = ("normal", "cells")
    SEARCH_FOR_ALIASES = ()
    SPACE_FLAGS = ()
    SIZE_FLAGS = (
        SizeFlag("child_num_cells", "integer", None,
                 "Micro nodes per cell (default: the arc's length / 8)."),
    )

    @classmethod
    def parse(cls, text, num_cells, flag="--child_fixed_arc"):
        """Parses and validates an arc string (or a sequence of ints) in the
        reference's `--child_fixed_arc` encoding: the normal cell's
        4 * num_cells integers, then the reduction cell's.

        Raises UserError naming the cell, node and position of the first
        problem.
        """
        values = parse_ints(text, flag)
        expected = micro_arc_length(num_cells)
        if len(values) != expected:
            raise UserError(
                "{} has {} integers but --child_num_cells={} needs {} (index, "
                "op, index, op per node, for the normal cell then the "
                "reduction cell): check the arc or --child_num_cells".format(
                    flag, len(values), num_cells, expected))
        cells = []
        for c, cell in enumerate(MICRO_CELLS):
            nodes = []
            for node in range(num_cells):
                start = 4 * num_cells * c + 4 * node
                quad = values[start:start + 4]
                for j, value in enumerate(quad):
                    pos = start + j
                    where = "{}: {} cell, node {}, position {}".format(
                        flag, cell, node, pos)
                    if j % 2 == 0 and not 0 <= value <= node + 1:
                        raise UserError(
                            "{}: input index {} is out of range 0..{} (0 and "
                            "1 are the cell's inputs, 2 + k node k's output; "
                            "a node can only read earlier nodes)".format(
                                where, value, node + 1))
                    if j % 2 == 1 and not 0 <= value < len(MICRO_OPS):
                        raise UserError(
                            "{}: op {} is out of range 0..{} ({})".format(
                                where, value, len(MICRO_OPS) - 1,
                                ", ".join(MICRO_OPS)))
                nodes.append(tuple(quad))
            cells.append(tuple(nodes))
        return cls(num_cells, cells[0], cells[1])

    @classmethod
    def from_text(cls, text, sizes=None, record=None,
                  flag="--child_fixed_arc"):
        """Parses an arc whose size may be unknown: sizes["child_num_cells"]
        (missing or None: the arc's length / 8). `record` (an arcs.jsonl
        record) is not needed. UserError naming the flag to give."""
        count = len(arc_ints(text, flag))
        cells = size_arg(sizes, "child_num_cells")
        if cells is None:
            if count % 8:
                raise UserError(
                    "{} has {} integers, not a multiple of 8 (index, op, "
                    "index, op per node, for the normal cell then the "
                    "reduction cell): check the arc, or give "
                    "--child_num_cells".format(flag, count))
            cells = count // 8
        return cls.parse(text, cells, flag=flag)

    @classmethod
    def from_cells(cls, normal, reduce, num_cells, flag="arc"):
        """From the two cells' flat lists (as the controller samples them)."""
        return cls.parse(list(normal) + list(reduce), num_cells, flag=flag)

    def cell(self, which):
        """The nodes of the "normal" or "reduction" cell."""
        if which not in MICRO_CELLS:
            raise ValueError("unknown cell {!r}: use one of {}".format(
                which, MICRO_CELLS))
        return self.normal if which == "normal" else self.reduce

    def to_list(self):
        """The flat integer encoding (normal cell, then reduction cell)."""
        return [v for nodes in (self.normal, self.reduce)
                for quad in nodes for v in quad]

    def __str__(self):
        return " ".join(str(v) for v in self.to_list())

    def cell_lines(self):
        """[normal list, reduction list]: the reference prints a sampled
        micro arc as these two lines."""
        return [[v for quad in nodes for v in quad]
                for nodes in (self.normal, self.reduce)]

    def outputs(self, which):
        """Indices (0, 1 the inputs, k + 2 node k) that no node reads, in
        order: the cell's output concatenates them."""
        used = {quad[i] for quad in self.cell(which) for i in (0, 2)}
        return [i for i in range(self.num_cells + 2) if i not in used]

    def describe(self):
        """Readable lines, per cell: each node's two ops and inputs, then
        what the cell's output concatenates."""
        lines = []
        for which in MICRO_CELLS:
            lines.append("{} cell:".format(which))
            for node, (i1, op1, i2, op2) in enumerate(self.cell(which)):
                lines.append("  node {}: {}({}) + {}({})".format(
                    node, MICRO_OPS[op1], _micro_input_name(i1),
                    MICRO_OPS[op2], _micro_input_name(i2)))
            lines.append("  output: concat({})".format(", ".join(
                _micro_input_name(i) for i in self.outputs(which))))
        return lines

    def listing(self):
        """The lines `python -m src.arc` prints: the two cells as the search
        prints them, then each node's ops and inputs."""
        normal, reduce_ = self.cell_lines()
        lines = ["micro arc: {} nodes per cell ({} integers)".format(
            self.num_cells, len(self.to_list())),
            "  normal cell:    {}".format(ints_text(normal)),
            "  reduction cell: {}".format(ints_text(reduce_)),
            "",
            "Cells (index_1, op_1, index_2, op_2 per node; inputs 0 and 1 "
            "are the outputs of the layers two back and one back; node k is "
            "block k + 2 of the reference README):"]
        lines.extend("  " + line for line in self.describe())
        return lines

    def dot_lines(self):
        """Graphviz DOT of the two cells as subgraphs: inputs c_{k-2} and
        c_{k-1}, per node two op nodes summed, and the concat of the loose
        ends (c_k)."""
        out = ["digraph micro {", "  rankdir=TB;", "  node [shape=box];"]
        for which, prefix in (("normal", "normal"), ("reduction", "reduce")):
            out.append("  subgraph cluster_{} {{".format(prefix))
            out.append('    label="{} cell";'.format(which))
            body = [dot_node("{}_in0".format(prefix), "c_{k-2}",
                             shape="ellipse"),
                    dot_node("{}_in1".format(prefix), "c_{k-1}",
                             shape="ellipse")]
            for node, (i1, op1, i2, op2) in enumerate(self.cell(which)):
                name = "{}_n{}".format(prefix, node)
                body.append(dot_node(name, "node {}\\n+".format(node),
                                     shape="circle"))
                for slot, (index, op) in enumerate(((i1, op1), (i2, op2)),
                                                   1):
                    op_name = "{}_op{}".format(name, slot)
                    body.append(dot_node(op_name, MICRO_OPS[op],
                                         style="rounded"))
                    body.append(dot_edge(_dot_input(prefix, index), op_name))
                    body.append(dot_edge(op_name, name))
            out_name = "{}_out".format(prefix)
            body.append(dot_node(out_name, "c_{k}\\nconcat",
                                 shape="ellipse"))
            for index in self.outputs(which):
                body.append(dot_edge(_dot_input(prefix, index), out_name))
            out.extend("  " + line for line in body)
            out.append("  }")
        out.append("}")
        return out


ARC_CLASS = MicroArc
