"""The macro search space's child network (the reference's `GeneralChild`).

Two classes share the stem (`stem_conv`) and the classifier (`fc`), and
return `ChildOutput(logits, None)`; the space's `build_child` picks one.

`FixedMacroChild` (`--child_fixed_arc`): a stem convolution, then
`num_layers` layers, each one op of the macro op table whose output is
concatenated with the skip inputs the arc names and mixed by a 1x1
convolution; after the two pool layers every layer so far is reduced by a
factorized reduction and the filters double. Global average pool, dropout,
a 10-way linear classifier.

`SearchMacroChild` (no fixed arc, the reference's `_enas_layer`): every
layer holds the weights of every op (`branch_0` ..
`branch_{num_branches-1}`) and the architecture is an int32 tensor given at
call time (`child(images, training, arc=arc)`), in the flat encoding of
`arcs.MacroArc`, so one traced function serves every arc. Whole channels:
the layer runs only the op the arc names (`tf.switch_case`). Per channel:
every branch computes the output channels [start, start + count) the arc
gives it, and `final_conv` mixes them. Skip inputs are summed with the layer's output and batch-normalised;
the filters never double.

Variable paths mirror the reference's scopes: `child/stem_conv/w`,
`child/layer_3/conv_1x1/bn/moving_mean`, `child/layer_1/pool_at_1/from_0/
path1_conv/w`, `child/layer_2/branch_3/out_conv_5/w_depth`, `child/fc/w`, ...
"""

import dataclasses
import functools

import keras
import tensorflow as tf

from src.baked_arc import BakedArc  # also imported from here (src.bench)
from src.child_base import CifarChild
from src.child_output import ChildOutput
from src.macro import arcs
from src.cifar10.image_ops import (BatchNorm, Classifier, ConvBN,
                                   FactorizedReduction, Pool3x3, SlicedConvBN,
                                   channel_axis)
from src.common_ops import TF1HeNormal
from src.errors import UserError


@dataclasses.dataclass
class MacroConfig:
    """Sizes and options of a macro child (the reference's constructor
    arguments that shape the network). `fixed_arc=None` builds the search
    child (shared weights of every op; the arc is given at call time)."""
    num_layers: int = 2
    out_filters: int = 24
    num_branches: int = 6
    whole_channels: bool = True
    fixed_arc: arcs.MacroArc = None
    keep_prob: float = 1.0
    data_format: str = "NHWC"
    # Beyond the reference: build ops 1 and 3 of a fixed arc as separable
    # convolutions (the reference builds them as ordinary ones).
    fixed_separable: bool = False
    seed: int = None

    def validate(self):
        if self.num_layers < 1:
            raise UserError("--child_num_layers must be at least 1, got {}"
                            .format(self.num_layers))
        if self.out_filters % 2:
            raise UserError(
                "--child_out_filters={} is odd, but the factorized reduction "
                "at the pool layers needs an even number: use {}".format(
                    self.out_filters, self.out_filters + 1))
        if self.data_format not in ("NHWC", "NCHW"):
            raise UserError("--data_format={!r} is unknown: use NHWC or NCHW"
                            .format(self.data_format))
        if self.fixed_arc is None and not 4 <= self.num_branches <= 6:
            raise UserError(
                "--child_num_branches={} is not supported by the macro "
                "search child: use 4, 5 or 6 (ops: {})".format(
                    self.num_branches, ", ".join(arcs.MACRO_OPS)))

    @property
    def arc_length(self):
        """Number of integers in an arc of this search space."""
        return arcs.macro_arc_length(self.num_layers, self.num_branches,
                                     self.whole_channels)


@dataclasses.dataclass(frozen=True)
class MacroOp:
    """One op of the macro search space: a conv (`kernel`, `separable`) or a
    3x3 pool (`pooling`: "avg" or "max")."""
    name: str
    kernel: int = None
    separable: bool = False
    pooling: str = None


# The macro op table: an op's index here is the integer the controller
# samples, the branch of the search layer's tf.switch_case and the index of
# `arcs.MACRO_OPS` (its name, printed for a user); `search_branch` and
# `FixedMacroLayer` build each op from its entry.
MACRO_OP_TABLE = (
    MacroOp("conv_3x3", kernel=3),
    MacroOp("sep_conv_3x3", kernel=3, separable=True),
    MacroOp("conv_5x5", kernel=5),
    MacroOp("sep_conv_5x5", kernel=5, separable=True),
    MacroOp("avg_pool_3x3", pooling="avg"),
    MacroOp("max_pool_3x3", pooling="max"),
)
assert tuple(op.name for op in MACRO_OP_TABLE) == arcs.MACRO_OPS


class FixedMacroLayer(keras.layers.Layer):
    """One layer of a fixed macro network (the reference's `_fixed_layer`,
    whole channels).

    Conv ops (0-3): ReLU, 1x1 conv, BN (`conv_1x1`), then ReLU, kxk conv, BN
    (`conv_{k}x{k}`). Pool ops (4, 5; the reference leaves them
    unimplemented): 1x1 conv, BN, ReLU (`conv_1`), then a 3x3 pool, stride 1,
    as the search-mode pool branch. For layer_id > 0 the outputs of the
    skipped-to layers and this op's output are concatenated, then ReLU, 1x1
    conv to `filters`, BN (`skip`).
    Inputs: the list of previous layer outputs [N, H, W, filters]; output
    [N, H, W, filters].
    """

    def __init__(self, layer_id, op, skips, filters, separable=False,
                 pool_filters=None, data_format="NHWC", name=None, **kwargs):
        super().__init__(name=name or "layer_{}".format(layer_id), **kwargs)
        self.layer_id = layer_id
        self.op = op
        self.skips = tuple(skips)
        self.filters = filters
        self.data_format = data_format
        df = data_format
        spec = MACRO_OP_TABLE[op]
        if spec.pooling is None:
            k = spec.kernel
            self.conv_1x1 = ConvBN(filters, 1, pre_relu=True, data_format=df,
                                   name="conv_1x1")
            self.conv_kxk = ConvBN(filters, k, pre_relu=True,
                                   separable=separable and spec.separable,
                                   data_format=df,
                                   name="conv_{0}x{0}".format(k))
            self.op_layers = [self.conv_1x1, self.conv_kxk]
        else:
            self.conv_1 = ConvBN(filters, 1, post_relu=True, data_format=df,
                                 name="conv_1")
            self.pool = Pool3x3(spec.pooling, data_format=df)
            self.op_layers = [self.conv_1, self.pool]
        self.skip = None
        if layer_id > 0:
            self.skip = ConvBN(filters, 1, pre_relu=True, data_format=df,
                               name="skip")
        # At a pool layer the reductions live in the layer's own scope, as
        # the reference's `layer_{i}/pool_at_{i}/from_{j}`.
        self.pool_at = None
        if pool_filters is not None:
            self.pool_at = PoolAt(layer_id, layer_id + 2, pool_filters,
                                  data_format=df)

    def call(self, prev_layers, training=False):
        """prev_layers: outputs so far (stem first). Returns the new list:
        prev_layers + [this layer's output], all reduced at a pool layer."""
        out = prev_layers[-1]
        for layer in self.op_layers:
            if isinstance(layer, Pool3x3):
                out = layer(out)
            else:
                out = layer(out, training=training)
        if self.skip is not None:
            chosen = [prev_layers[j] for j, bit in enumerate(self.skips) if bit]
            out = tf.concat(chosen + [out], axis=channel_axis(self.data_format))
            out = self.skip(out, training=training)
        layers = list(prev_layers) + [out]
        if self.pool_at is not None:
            layers = self.pool_at(layers, training=training)
        return layers


class PoolAt(keras.layers.Layer):
    """Factorized reduction of every layer so far (`pool_at_{layer_id}`,
    one `from_{i}` per layer): a list of [N, H, W, C] -> [N, H/2, W/2, filters]."""

    def __init__(self, layer_id, num_inputs, filters, data_format="NHWC",
                 **kwargs):
        super().__init__(name="pool_at_{}".format(layer_id), **kwargs)
        self.reductions = [
            FactorizedReduction(filters, data_format=data_format,
                                name="from_{}".format(i))
            for i in range(num_inputs)]

    def call(self, layers, training=False):
        return [r(x, training=training) for r, x in zip(self.reductions, layers)]


def _with_channels(shape, channels, data_format):
    shape = list(shape)
    shape[channel_axis(data_format)] = channels
    return tuple(shape)


def _channel_slice(x, start, count, data_format):
    if data_format == "NHWC":
        return x[:, :, :, start:start + count]
    return x[:, start:start + count, :, :]


class SearchConvBranch(keras.layers.Layer):
    """A conv op of the search child (the reference's `_conv_branch` with a
    start index): 1x1 conv to `filters`, BN, ReLU (`inp_conv_1`), then k x k
    (or separable) conv to the output channels [start, start + count), masked
    BN, ReLU (`out_conv_{k}`).

    Input [N, H, W, C_in] -> output [N, H, W, count]; with start None (whole
    channels) all `filters` channels. A count of 0 gives an empty output (the
    reference's convolution would fail on an empty filter).
    """

    def __init__(self, filters, kernel_size, separable=False,
                 data_format="NHWC", name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.filters = filters
        self.data_format = data_format
        self.inp_conv = ConvBN(filters, 1, post_relu=True,
                               data_format=data_format, name="inp_conv_1")
        self.out_conv = SlicedConvBN(filters, kernel_size, separable=separable,
                                     data_format=data_format,
                                     name="out_conv_{}".format(kernel_size))

    def build(self, input_shape):
        self.inp_conv.build(input_shape)
        self.out_conv.build(_with_channels(input_shape, self.filters,
                                           self.data_format))

    def call(self, x, start=None, count=None, training=False):
        x = self.inp_conv(x, training=training)
        if start is None:
            return tf.nn.relu(self.out_conv(x, training=training))

        def selected():
            return tf.nn.relu(self.out_conv(x, start=start, count=count,
                                            training=training))

        def empty():
            return _channel_slice(x, 0, 0, self.data_format)

        return tf.cond(count > 0, selected, empty)


class SearchPoolBranch(keras.layers.Layer):
    """A pool op of the search child (the reference's `_pool_branch`): 1x1
    conv to `filters`, BN, ReLU (`conv_1`), a 3x3 average or max pool with
    stride 1 (`pool`, no weights), then the channels [start, start + count)
    (all when start is None)."""

    def __init__(self, filters, kind, data_format="NHWC", name=None,
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.data_format = data_format
        self.conv_1 = ConvBN(filters, 1, post_relu=True,
                             data_format=data_format, name="conv_1")
        self.pool = Pool3x3(kind, data_format=data_format)

    def build(self, input_shape):
        self.conv_1.build(input_shape)

    def call(self, x, start=None, count=None, training=False):
        x = self.pool(self.conv_1(x, training=training))
        if start is None:
            return x
        return _channel_slice(x, start, count, self.data_format)


def search_branch(op, filters, data_format="NHWC"):
    """The search layer's op `op` (an index of MACRO_OP_TABLE), named
    `branch_<op>` as the reference's scope."""
    spec = MACRO_OP_TABLE[op]
    name = "branch_{}".format(op)
    if spec.pooling is not None:
        return SearchPoolBranch(filters, spec.pooling,
                                data_format=data_format, name=name)
    return SearchConvBranch(filters, spec.kernel, separable=spec.separable,
                            data_format=data_format, name=name)


def search_branches(num_branches, filters, data_format="NHWC"):
    """The ops of one search layer, `branch_0` .. `branch_{n-1}`: the first
    `num_branches` of MACRO_OP_TABLE."""
    return [search_branch(op, filters, data_format)
            for op in range(num_branches)]


class FinalConv(keras.layers.Layer):
    """Per-channel mixing of a search layer's branches (`final_conv`): the
    rows of `w` [num_branches * filters, filters] that belong to the selected
    channels (row `i * filters + c` for channel c of branch i) form a 1x1
    convolution of the concatenated branch outputs, then BN and ReLU.
    Output [N, H, W, filters]."""

    def __init__(self, num_branches, filters, data_format="NHWC",
                 name="final_conv", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_branches = num_branches
        self.filters = filters
        self.data_format = data_format
        self.bn = BatchNorm(data_format=data_format)

    def build(self, input_shape):
        n, c = self.num_branches, self.filters
        self.w = self.add_weight(name="w", shape=(n * c, c),
                                 initializer=TF1HeNormal())
        self.bn.build(_with_channels(input_shape, c, self.data_format))

    def call(self, branch_outputs, starts, counts, like, training=False):
        """branch_outputs: per branch [N, H, W, counts[i]]; starts, counts:
        int32 scalars per branch; like: a [N, H, W, filters] tensor giving
        the output's shape when no channel at all is selected."""
        n, c = self.num_branches, self.filters
        rows = tf.range(n * c, dtype=tf.int32)
        mask = tf.zeros([n * c], tf.bool)
        for i in range(n):
            lo = c * i + starts[i]
            mask = tf.logical_or(mask, tf.logical_and(
                lo <= rows, rows < lo + counts[i]))
        w = tf.reshape(tf.boolean_mask(self.w, mask), [1, 1, -1, c])
        x = tf.concat(branch_outputs, axis=channel_axis(self.data_format))

        def mix():
            return tf.nn.conv2d(x, w, 1, "SAME", data_format=self.data_format)

        def nothing():
            return tf.zeros_like(like)

        out = tf.cond(tf.reduce_any(mask), mix, nothing)
        out.set_shape(like.shape)
        return tf.nn.relu(self.bn(out, training=training))


class SkipSum(keras.layers.Layer):
    """Search-mode skip connections (`skip`): the layer's output plus every
    earlier output whose skip value is 1, then BN (`bn`)."""

    def __init__(self, data_format="NHWC", name="skip", **kwargs):
        super().__init__(name=name, **kwargs)
        self.bn = BatchNorm(data_format=data_format)

    def build(self, input_shape):
        self.bn.build(input_shape)

    def call(self, out, prev_layers, skips, training=False):
        baked = isinstance(skips, (list, tuple))  # Python ints
        total = out
        for j, prev in enumerate(prev_layers):
            if baked:
                total = total + prev if skips[j] == 1 else total
            else:
                # tf.cond, not a masked sum: an unchosen skip costs no
                # memory traffic, forward or backward (it matters at full
                # size).
                total = tf.cond(tf.equal(skips[j], 1),
                                lambda t=total, p=prev: t + p,
                                lambda t=total: t)
        return self.bn(total, training=training)


class SearchMacroLayer(keras.layers.Layer):
    """One layer of the macro search child (the reference's `_enas_layer`).

    Whole channels: the arc's op id at `start_idx` picks one branch, and only
    that branch runs (`tf.switch_case`; an id out of range runs the last
    branch). The reference builds every branch and, through a late-binding
    closure, always returns the last one (max pool with 6 branches); here the
    chosen op is the one computed. Per channel: branch i computes the
    channels [start_i, start_i + count_i) given by the arc's 2 *
    num_branches values at `start_idx`, and `final_conv` mixes them. For
    layer_id > 0 the next `layer_id` arc values are skip bits (`skip`). At a
    pool layer every output so far is then reduced (`pool_at_{layer_id}`,
    filters unchanged).
    Inputs: the outputs so far [N, H, W, filters] (stem first); output: that
    list plus this layer's output.
    """

    def __init__(self, layer_id, filters, num_branches, whole_channels,
                 pool=False, data_format="NHWC", name=None, **kwargs):
        super().__init__(name=name or "layer_{}".format(layer_id), **kwargs)
        self.layer_id = layer_id
        self.filters = filters
        self.num_branches = num_branches
        self.whole_channels = whole_channels
        self.data_format = data_format
        self.branches = search_branches(num_branches, filters, data_format)
        self.final_conv = None
        if not whole_channels:
            self.final_conv = FinalConv(num_branches, filters,
                                        data_format=data_format)
        self.skip = SkipSum(data_format=data_format) if layer_id > 0 else None
        self.pool_at = None
        if pool:
            self.pool_at = PoolAt(layer_id, layer_id + 2, filters,
                                  data_format=data_format)

    @property
    def arc_span(self):
        """How many arc values this layer reads."""
        per = 1 if self.whole_channels else 2 * self.num_branches
        return per + self.layer_id

    def build(self, input_shape=None):
        # Every branch is built here: in whole-channel mode only the chosen
        # one runs, inside tf.switch_case, where no weight may be created.
        shape = _with_channels((None, None, None, None), self.filters,
                               self.data_format)
        for branch in self.branches:
            branch.build(shape)
        if self.final_conv is not None:
            self.final_conv.build(shape)
        if self.skip is not None:
            self.skip.build(shape)

    def run_branch(self, i, x, training=False):
        """Branch i alone on x with all its channels (whole channels)."""
        return self.branches[i](x, training=training)

    def call(self, prev_layers, arc, start_idx, training=False):
        x = prev_layers[-1]
        out_shape = _with_channels(x.shape, self.filters, self.data_format)
        baked = isinstance(arc, BakedArc)
        if baked:
            # The benchmark's floor: choices fixed at trace time.
            skips = list(arc.values[start_idx + (
                1 if self.whole_channels else 2 * self.num_branches):]
                [:self.layer_id])
            arc = (arc.values if self.whole_channels
                   else tf.constant(arc.values, tf.int32))
        if self.whole_channels:
            if baked:
                out = self.run_branch(arc[start_idx], x, training)
            else:
                fns = [functools.partial(self.run_branch, i, x, training)
                       for i in range(self.num_branches)]
                out = tf.switch_case(arc[start_idx], fns)
            out.set_shape(out_shape)
            skip_start = start_idx + 1
        else:
            values = arc[start_idx:start_idx + 2 * self.num_branches]
            starts = [values[2 * i] for i in range(self.num_branches)]
            counts = [values[2 * i + 1] for i in range(self.num_branches)]
            outs = [b(x, start=s, count=c, training=training)
                    for b, s, c in zip(self.branches, starts, counts)]
            # x has `filters` channels: the stem and every layer keep them.
            out = self.final_conv(outs, starts, counts, x, training=training)
            out.set_shape(out_shape)
            skip_start = start_idx + 2 * self.num_branches
        if self.skip is not None:
            if not baked:
                skips = arc[skip_start:skip_start + self.layer_id]
            out = self.skip(out, prev_layers[:self.layer_id], skips=skips,
                            training=training)
        layers = list(prev_layers) + [out]
        if self.pool_at is not None:
            layers = self.pool_at(layers, training=training)
        return layers


class MacroChild(CifarChild):
    """What the two macro children share: images [N, H, W, 3] (NHWC,
    normalised; H and W divisible by 4, 32 for CIFAR-10) -> the stem
    convolution (`stem_conv`), the subclass's `num_layers` layers
    (`macro_layers`), the classifier (`fc`), returned as `ChildOutput(logits
    [N, 10], None)`. With `data_format="NCHW"` it transposes its input and
    computes in NCHW.

    `FixedMacroChild` (a fixed arc) and `SearchMacroChild` (the arc given at
    call time) build the layers; the space's `build_child` picks the one a
    config asks for. What a trainer asks of every CIFAR child (`ChildTrainer`):
    `call` returning a `ChildOutput`, `takes_step` (whether `call` takes the
    global step: False here) and `optimizer_variables(train_aux_head)`;
    `searching` says whether `call` takes an arc.
    """

    # `call` takes no `step` (nothing here depends on training progress):
    # `takes_step` stays False.

    def __init__(self, cfg, name="child", **kwargs):
        super().__init__(cfg, name=name, **kwargs)
        self.pool_layers = arcs.pool_layers(cfg.num_layers)
        self.stem_conv = ConvBN(cfg.out_filters, 3,
                                data_format=cfg.data_format, name="stem_conv")
        self.macro_layers = []
        self.build_layers()
        self.fc = Classifier(10, keep_prob=cfg.keep_prob,
                             data_format=cfg.data_format, seed=cfg.seed)

    def build_layers(self):
        """Appends the `num_layers` layers to `self.macro_layers`."""
        raise NotImplementedError

    def head(self, outputs, training):
        """The ChildOutput of the layers' `outputs` (the stem's first, then
        every layer's, in order): the classifier on the last."""
        return ChildOutput(self.fc(outputs[-1], training=training), None)

    def optimizer_variables(self, train_aux_head=False):
        """The variables the optimiser updates (and the L2 term covers):
        every trainable weight (there is no aux head; `train_aux_head` is
        accepted for the common interface and changes nothing)."""
        return list(self.trainable_variables)


class FixedMacroChild(MacroChild):
    """The macro network of one architecture (`cfg.fixed_arc`, whole
    channels): `child(images, training)` -> ChildOutput. Its layers are
    `FixedMacroLayer`s; after each pool layer the filters double."""

    searching = False

    def check_config(self, cfg):
        super().check_config(cfg)
        if not cfg.whole_channels:
            raise UserError(
                "a fixed macro arc without whole channels is not supported "
                "yet: pass --controller_search_whole_channels")

    def build_layers(self):
        cfg, arc = self.cfg, self.cfg.fixed_arc
        filters = cfg.out_filters
        for layer_id in range(cfg.num_layers):
            pool_filters = None
            if layer_id in self.pool_layers:
                pool_filters = 2 * filters
            self.macro_layers.append(FixedMacroLayer(
                layer_id, arc.ops[layer_id], arc.skips[layer_id], filters,
                separable=cfg.fixed_separable, pool_filters=pool_filters,
                data_format=cfg.data_format))
            filters = pool_filters or filters

    def call(self, images, training=False):
        layers = [self.stem(images, training)]
        for layer in self.macro_layers:
            layers = layer(layers, training=training)
        return self.head(layers, training)


class SearchMacroChild(MacroChild):
    """The macro search network (shared weights of every op):
    `child(images, training, arc=arc)` -> ChildOutput, `arc` an int32
    tensor of `cfg.arc_length` values in the flat encoding of
    `arcs.MacroArc` (one traced function serves every arc), or a BakedArc
    (Python values fixed at trace time: the benchmark's floor). Its layers
    are `SearchMacroLayer`s, all with `out_filters` filters."""

    searching = True

    def build_layers(self):
        cfg = self.cfg
        for layer_id in range(cfg.num_layers):
            self.macro_layers.append(SearchMacroLayer(
                layer_id, cfg.out_filters, cfg.num_branches,
                cfg.whole_channels, pool=layer_id in self.pool_layers,
                data_format=cfg.data_format))

    def _checked_arc(self, arc):
        if arc is None:
            raise ValueError("the macro search child needs an arc: call "
                             "child(images, training, arc=arc_tensor)")
        if isinstance(arc, BakedArc):
            if len(arc.values) != self.cfg.arc_length:
                raise ValueError(
                    "the arc has {} values, this search space needs {}".format(
                        len(arc.values), self.cfg.arc_length))
            return arc
        arc = tf.convert_to_tensor(arc)
        if arc.dtype != tf.int32:
            arc = tf.cast(arc, tf.int32)
        arc = tf.reshape(arc, [-1])
        n = arc.shape[0]
        if n is not None and n != self.cfg.arc_length:
            raise ValueError(
                "the arc has {} values, this search space needs {}".format(
                    n, self.cfg.arc_length))
        return arc

    def call(self, images, training=False, arc=None):
        """arc: an int32 tensor [cfg.arc_length] (or a BakedArc)."""
        arc = self._checked_arc(arc)
        layers = [self.stem(images, training)]
        start_idx = 0
        for layer in self.macro_layers:
            layers = layer(layers, arc=arc, start_idx=start_idx,
                           training=training)
            start_idx += layer.arc_span
        return self.head(layers, training)


def count_params(model):
    """Number of trainable parameters (the reference's `count_model_params`)."""
    return int(sum(int(tf.size(v)) for v in model.trainable_weights))
