"""Macro architectures as values: parse, validate, print back, decode.

The encoding is the reference's `--child_fixed_arc` string: for each layer
`l` (0-based), whole channels: one op id then `l` skip bits; per channel:
`2 * num_branches` integers (start, count of each branch) then `l` skip bits.
Pure Python, no TensorFlow, so it tests without a model.
"""

import dataclasses

from src.arc_values import (SizeFlag, arc_ints, dot_edge, dot_node,
                             ints_text, parse_ints, size_arg)
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


def infer_num_layers(count, num_branches, whole_channels, flag):
    """The number of layers of a macro arc of `count` integers; UserError
    naming the flags to give when no number fits."""
    n = 1
    while macro_arc_length(n, num_branches, whole_channels) < count:
        n += 1
    if macro_arc_length(n, num_branches, whole_channels) == count:
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
                macro_arc_length(n - 1, num_branches, whole_channels), n - 1,
                macro_arc_length(n, num_branches, whole_channels), n,
                "" if whole_channels
                else ", --child_num_branches or --controller_search_whole_"
                "channels"))


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

    # For `python -m src.arc` (see `from_text`): the keys of this space's
    # arcs.jsonl records, other `--search_for` values naming it, size flags
    # whose presence names it, and the size flags it reads.
    RECORD_KEYS = ("layers", "ops")
    SEARCH_FOR_ALIASES = ()
    SPACE_FLAGS = ()
    SIZE_FLAGS = (
        SizeFlag("child_num_layers", "integer", None,
                 "Macro layers (default: from the arc's length)."),
        SizeFlag("child_num_branches", "integer", 6,
                 "Macro branches (per-channel arcs)."),
        SizeFlag("controller_search_whole_channels", "boolean", True,
                 "Macro arcs with one op id per layer (else start/count "
                 "pairs)."),
    )

    @classmethod
    def parse(cls, text, num_layers, num_branches, whole_channels,
              num_ops=None, out_filters=None, flag="--child_fixed_arc"):
        """Parses and validates an arc string (or a sequence of ints).

        num_ops: how many op ids are valid (default: the whole op table for
          whole channels). out_filters: bounds start + count per branch.
        Raises UserError naming the layer and position of the first problem.
        """
        values = parse_ints(text, flag)
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

    @classmethod
    def from_text(cls, text, sizes=None, record=None,
                  flag="--child_fixed_arc"):
        """Parses an arc whose sizes may be unknown. sizes: {size flag name:
        value}, a missing or None value inferred: whole channels unless
        `record` (the arcs.jsonl record the arc was read from) is a
        per-channel search's (no "ops"); 6 branches; the number of layers
        from the arc's length. UserError naming the flags to give."""
        count = len(arc_ints(text, flag))
        whole = size_arg(sizes, "controller_search_whole_channels")
        if whole is None:
            record = record or {}
            whole = not ("layers" in record and "ops" not in record)
        branches = size_arg(sizes, "child_num_branches", 6)
        if not whole and not 1 <= branches <= len(MACRO_OPS):
            raise UserError("--child_num_branches={} cannot be decoded: the "
                            "macro search space has at most {} branches"
                            .format(branches, len(MACRO_OPS)))
        layers = size_arg(sizes, "child_num_layers")
        if layers is None:
            layers = infer_num_layers(count, branches, whole, flag)
        return cls.parse(text, layers, branches, whole, flag=flag)

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

    def listing(self):
        """The lines `python -m src.arc` prints: the arc, its layers as the
        search prints them, what each does, where the resolution halves."""
        per_layer = ("one op id" if self.whole_channels
                     else "{} start/count values".format(
                         2 * self.num_branches))
        lines = ["macro arc: {} layers, {} ({} integers)".format(
            self.num_layers, "whole channels" if self.whole_channels
            else "per channel, {} branches".format(self.num_branches),
            len(self.to_list())),
            "  {}".format(self),
            "",
            "As the search prints it, one line per layer ({}, then one skip "
            "bit per earlier output: the stem, layer 0, ...):".format(
                per_layer)]
        width = len(str(self.num_layers - 1))
        for layer, values in enumerate(self.layer_lines()):
            lines.append("  layer {:>{}}: {}".format(layer, width,
                                                     ints_text(values)))
        lines.append("")
        lines.append("Layers (layer l is part l + 1 of the reference README; "
                     "each reads the previous layer, or the stem):")
        lines.extend("  " + line for line in self.describe())
        pools = [p for p in pool_layers(self.num_layers) if p >= 0]
        lines.append("")
        if pools:
            lines.append("Resolution halves (and a fixed network's channels "
                         "double) after layers {}; then global average "
                         "pooling and the classifier.".format(
                             " and ".join(str(p) for p in pools)))
        else:
            lines.append("No pooling layers (fewer than 3 layers); then "
                         "global average pooling and the classifier.")
        return lines

    def dot_lines(self):
        """Graphviz DOT of the network: the stem, one node per layer (op,
        or channel slices) and the classifier; each layer's input edge and
        dashed skip edges."""
        pools = set(pool_layers(self.num_layers))
        out = ["digraph macro {", "  rankdir=TB;",
               '  node [shape=box, style="rounded"];',
               dot_node("stem", "stem\\nconv_3x3")]
        for layer in range(self.num_layers):
            if self.whole_channels:
                what = MACRO_OPS[self.ops[layer]]
            else:
                what = "\\n".join(
                    "{}[{}:{}]".format(MACRO_OPS[b], s, s + c)
                    for b, (s, c) in enumerate(self.branches[layer]) if c)
            label = "layer {}\\n{}".format(layer, what)
            if layer in pools:
                label += "\\n(then halve resolution)"
            out.append(dot_node("layer_{}".format(layer), label))
        out.append(dot_node("output", "global avg pool\\nfc",
                            shape="ellipse"))
        for layer in range(self.num_layers):
            dst = "layer_{}".format(layer)
            out.append(dot_edge("stem" if layer == 0
                                else "layer_{}".format(layer - 1), dst))
            for j, bit in enumerate(self.skips[layer]):
                if bit:
                    src = "stem" if j == 0 else "layer_{}".format(j - 1)
                    out.append(dot_edge(src, dst, style="dashed",
                                        label="skip"))
        out.append(dot_edge("layer_{}".format(self.num_layers - 1), "output"))
        out.append("}")
        return out


def pool_layers(num_layers):
    """Layers after which the macro network halves its resolution."""
    distance = num_layers // 3
    return [distance - 1, 2 * distance - 1]


ARC_CLASS = MacroArc
