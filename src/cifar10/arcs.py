"""Macro architectures as values: parse, validate, print back, decode.

The encoding is the reference's `--child_fixed_arc` string: for each layer
`l` (0-based), whole channels: one op id then `l` skip bits; per channel:
`2 * num_branches` integers (start, count of each branch) then `l` skip bits.
Pure Python, no TensorFlow, so it tests without a model.
"""

import dataclasses

from src.errors import UserError

# The op table of the macro search space: the integer the controller samples,
# the branch index of the child and the name printed for a user.
MACRO_OPS = (
    "conv_3x3",
    "sep_conv_3x3",
    "conv_5x5",
    "sep_conv_5x5",
    "avg_pool_3x3",
    "max_pool_3x3",
)


def macro_arc_length(num_layers, num_branches, whole_channels):
    """Number of integers in a macro arc."""
    per_layer = 1 if whole_channels else 2 * num_branches
    return num_layers * per_layer + num_layers * (num_layers - 1) // 2


def _parse_ints(text, flag):
    if isinstance(text, str):
        tokens = text.replace(",", " ").split()
    else:
        tokens = list(text)
    values = []
    for pos, tok in enumerate(tokens):
        try:
            if isinstance(tok, str):
                values.append(int(tok))
            elif float(tok) != int(tok):
                raise ValueError(tok)
            else:
                values.append(int(tok))
        except (TypeError, ValueError):
            raise UserError(
                "{}: position {} is {!r}, not an integer: give integers "
                "separated by spaces".format(flag, pos, tok)) from None
    return values


@dataclasses.dataclass(frozen=True)
class MacroArc:
    """A macro architecture.

    ops: per layer, the op id (whole channels) or None.
    branches: per layer, ((start, count) per branch) for per-channel arcs,
      else None.
    skips: per layer, a tuple of `layer_id` 0/1 values; bit j adds the j-th
      output so far (j = 0 the stem, j > 0 layer j - 1).
    """
    num_layers: int
    num_branches: int
    whole_channels: bool
    ops: tuple
    branches: tuple
    skips: tuple

    @classmethod
    def parse(cls, text, num_layers, num_branches, whole_channels,
              num_ops=None, out_filters=None, flag="--child_fixed_arc"):
        """Parses and validates an arc string (or a sequence of ints).

        num_ops: how many op ids are valid (default: the whole op table for
          whole channels). out_filters: bounds start + count per branch.
        Raises UserError naming the layer and position of the first problem.
        """
        values = _parse_ints(text, flag)
        expected = macro_arc_length(num_layers, num_branches, whole_channels)
        if len(values) != expected:
            per_layer = ("1 op id" if whole_channels
                         else "{} start/count values".format(2 * num_branches))
            raise UserError(
                "{} has {} integers but --child_num_layers={} needs {} "
                "({} + layer_id skip bits per layer): check the arc or "
                "--child_num_layers{}".format(
                    flag, len(values), num_layers, expected, per_layer,
                    "" if whole_channels else "/--child_num_branches"))
        if num_ops is None:
            num_ops = len(MACRO_OPS)
        ops, branches, skips = [], [], []
        pos = 0
        for layer in range(num_layers):
            if whole_channels:
                op = values[pos]
                if not 0 <= op < num_ops:
                    raise UserError(
                        "{}: layer {}, position {}: op {} is out of range "
                        "0..{} ({})".format(flag, layer, pos, op, num_ops - 1,
                                            ", ".join(MACRO_OPS[:num_ops])))
                ops.append(op)
                branches.append(None)
                pos += 1
            else:
                pairs = []
                for b in range(num_branches):
                    start, count = values[pos], values[pos + 1]
                    if start < 0 or count < 0 or (
                            out_filters is not None
                            and start + count > out_filters):
                        raise UserError(
                            "{}: layer {}, position {}: branch {} takes "
                            "channels start={} count={}, outside 0..{}".format(
                                flag, layer, pos, b, start, count,
                                out_filters if out_filters is not None
                                else "inf"))
                    pairs.append((start, count))
                    pos += 2
                ops.append(None)
                branches.append(tuple(pairs))
            layer_skips = []
            for j in range(layer):
                bit = values[pos]
                if bit not in (0, 1):
                    raise UserError(
                        "{}: layer {}, position {}: skip value {} (from layer "
                        "{}) is not 0 or 1".format(flag, layer, pos, bit, j))
                layer_skips.append(bit)
                pos += 1
            skips.append(tuple(layer_skips))
        return cls(num_layers, num_branches, whole_channels, tuple(ops),
                   tuple(branches), tuple(skips))

    def to_list(self):
        """The flat integer encoding."""
        out = []
        for layer in range(self.num_layers):
            if self.whole_channels:
                out.append(self.ops[layer])
            else:
                for start, count in self.branches[layer]:
                    out.extend([start, count])
            out.extend(self.skips[layer])
        return out

    def __str__(self):
        return " ".join(str(v) for v in self.to_list())

    def layer_lines(self):
        """One list of ints per layer, as the reference prints sampled arcs."""
        flat = self.to_list()
        lines, start = [], 0
        for layer in range(self.num_layers):
            per = 1 if self.whole_channels else 2 * self.num_branches
            end = start + per + layer
            lines.append(flat[start:end])
            start = end
        return lines

    def describe(self):
        """Readable lines: layer, op name (or channel slices), skip sources
        (the stem or an earlier layer)."""
        lines = []
        for layer in range(self.num_layers):
            if self.whole_channels:
                what = MACRO_OPS[self.ops[layer]]
            else:
                what = ", ".join(
                    "{}[{}:{}]".format(MACRO_OPS[b], s, s + c)
                    for b, (s, c) in enumerate(self.branches[layer]) if c)
            # Skip bit j connects the j-th output so far: the stem for j = 0,
            # else layer j - 1 (the reference's prev_layers[j]).
            srcs = ["stem" if j == 0 else "layer {}".format(j - 1)
                    for j, bit in enumerate(self.skips[layer]) if bit]
            lines.append("layer {}: {}{}".format(
                layer, what, "  skip from " + ", ".join(srcs) if srcs else ""))
        return lines


def pool_layers(num_layers):
    """Layers after which the macro network halves its resolution."""
    distance = num_layers // 3
    return [distance - 1, 2 * distance - 1]


# ---------------------------------------------------------------- micro

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

    @classmethod
    def parse(cls, text, num_cells, flag="--child_fixed_arc"):
        """Parses and validates an arc string (or a sequence of ints) in the
        reference's `--child_fixed_arc` encoding: the normal cell's
        4 * num_cells integers, then the reduction cell's.

        Raises UserError naming the cell, node and position of the first
        problem.
        """
        values = _parse_ints(text, flag)
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
