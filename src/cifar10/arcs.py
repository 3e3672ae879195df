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
