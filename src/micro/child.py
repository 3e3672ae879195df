"""The micro search space's child network (the reference's `MicroChild`).

A stem convolution (3 x out_filters channels), then `num_layers + 2`
layers, each one cell: normal cells, and reduction cells at the layers of
`reduction_layers(num_layers)`, where the filters double and the resolution
halves. Every layer reads the outputs of the two layers before it (the stem
twice at first), first made the same size and width (`calibrate`). A cell
has `num_cells` nodes; node k adds two ops, each applied to one of the
cell's two inputs or an earlier node's output; the cell's output
concatenates the nodes (inputs included) that no node reads. After the
last layer: ReLU, global average pool, dropout, a 10-way linear layer
(`fc`). With `use_aux_heads` an auxiliary classifier (`aux_head`) reads the
layer after the second reduction, in training. Two classes share the stem,
the classifier and the aux head, and return `ChildOutput(logits,
aux_logits)`; the space's `build_child` picks one.

`FixedMicroChild` (`cfg.fixed_arc`, the reference's `_fixed_layer`):
the layer's second input goes through a 1x1 conv (`layer_base`); in a
reduction cell the ops that read inputs 0 and 1 have stride 2 (separable
convs and pools strided, identity a factorized reduction), and unread
inputs are reduced before the concatenation (`final_combine`); the ops'
outputs (except identity) go through scheduled drop-path in training.
The cell's output has (number of unread nodes) x filters channels.

`SearchMicroChild` (no fixed arc, the reference's `_enas_layer`): every
node input holds the weights of the two separable convs for every input it
may read (rows of stacked matrices, chosen by the input index); the arc is
an int32 tensor given at call time, so one traced function serves every
arc. Each
node input is picked with `tf.switch_case` and only the chosen op runs
(another `tf.switch_case`); the unread nodes are concatenated and mixed back
to `filters` channels by a 1x1 conv whose weight rows belong to the nodes
(`final_conv`). At a reduction layer the previous output is first reduced
by a factorized reduction (stored at `layer_{i}/path1_conv`, ...) and the
cell itself runs at stride 1.

Variable paths mirror the reference's scopes: `child/stem_conv/w`,
`child/layer_0/calibrate/pool_x/path1_conv/w`, `child/layer_1/cell_3/y_conv/
sep_conv_0/w_depth`, `child/layer_3/cell_2/x/conv_5x5/stack_1/w_depth`,
`child/layer_2/final_conv/w`, `child/aux_head/proj/w`, `child/fc/w`, ...
"""

import dataclasses
import functools

import keras
import tensorflow as tf

from src.baked_arc import BakedArc
from src.child_base import CifarChild
from src.child_output import ChildOutput
from src.micro import arcs
from src.cifar10.image_ops import (AuxHead, BatchNorm, Classifier, ConvBN,
                                   FactorizedReduction, RowSepConvBN,
                                   SepConvBN, channel_axis, drop_path,
                                   pool3x3)
from src.common_ops import TF1HeNormal
from src.errors import UserError

__all__ = ["MicroConfig", "MicroChild", "FixedMicroChild",
           "SearchMicroChild", "BakedArc", "ChildOutput",
           "reduction_layers",
           "aux_head_layer", "drop_path_keep_prob"]


@dataclasses.dataclass
class MicroConfig:
    """Sizes and options of a micro child (the reference's constructor
    arguments that shape the network). `fixed_arc=None` builds the search
    child (shared weights of every op; the arc is given at call time).

    num_train_steps: num_epochs x batches per epoch, the length of
    drop-path's schedule (needed with drop_path_keep_prob).
    """
    num_layers: int = 2
    num_cells: int = 5
    out_filters: int = 24
    keep_prob: float = 1.0
    drop_path_keep_prob: float = None
    use_aux_heads: bool = False
    fixed_arc: arcs.MicroArc = None
    num_train_steps: int = None
    data_format: str = "NHWC"
    seed: int = None

    def validate(self):
        if self.num_layers < 0:
            raise UserError("--child_num_layers must be at least 0, got {}"
                            .format(self.num_layers))
        if self.use_aux_heads and self.num_layers < 1:
            raise UserError(
                "--child_use_aux_heads needs --child_num_layers of at least "
                "1 (the aux head reads the layer after the second reduction "
                "cell), got {}".format(self.num_layers))
        if self.num_cells < 1:
            raise UserError("--child_num_cells must be at least 1, got {}"
                            .format(self.num_cells))
        if self.out_filters < 1:
            raise UserError("--child_out_filters must be at least 1, got {}"
                            .format(self.out_filters))
        # An odd out_filters is fine here (unlike the macro child): every
        # factorized reduction of the micro child runs at or after a
        # reduction cell, where the filters have doubled.
        if not 0.0 < self.keep_prob <= 1.0:
            raise UserError("--child_keep_prob={} is not in (0, 1]".format(
                self.keep_prob))
        if self.drop_path_keep_prob is not None:
            if not 0.0 < self.drop_path_keep_prob <= 1.0:
                raise UserError(
                    "--child_drop_path_keep_prob={} is not in (0, 1]".format(
                        self.drop_path_keep_prob))
            if self.fixed_arc is not None and not self.num_train_steps:
                raise UserError(
                    "drop-path (--child_drop_path_keep_prob) needs the number "
                    "of training steps: set --num_epochs")
        if self.data_format not in ("NHWC", "NCHW"):
            raise UserError("--data_format={!r} is unknown: use NHWC or NCHW"
                            .format(self.data_format))
        if (self.fixed_arc is not None
                and self.fixed_arc.num_cells != self.num_cells):
            raise UserError(
                "the fixed arc has {} nodes per cell but --child_num_cells="
                "{}".format(self.fixed_arc.num_cells, self.num_cells))

    @property
    def arc_length(self):
        """Number of integers in an arc of this search space."""
        return arcs.micro_arc_length(self.num_cells)


def reduction_layers(num_layers):
    """Ids of the reduction layers among the num_layers + 2 layers (the
    reference's micro `pool_layers`; the macro network's pool layers are
    `arcs.pool_layers`, another rule)."""
    distance = num_layers // 3
    return [distance, 2 * distance + 1]


def aux_head_layer(num_layers):
    """Id of the layer whose output the aux head reads: the one after the
    second reduction layer (the reference's `aux_head_indices`)."""
    return reduction_layers(num_layers)[-1] + 1


def drop_path_keep_prob(keep_prob, layer_id, num_layers, step,
                        num_train_steps):
    """The keep probability of drop-path at a layer and global step (the
    reference's `_apply_drop_path`): 1 - (layer_id + 1) / (num_layers + 2)
    x (1 - keep_prob), then scaled towards 1 by the training progress
    min(1, (step + 1) / num_train_steps). Returns a float32 scalar tensor;
    `step` is the number of updates so far (an int or int tensor)."""
    layer_ratio = float(layer_id + 1) / (num_layers + 2)
    layer_keep = 1.0 - layer_ratio * (1.0 - keep_prob)
    step_ratio = (tf.cast(step + 1, tf.float32)
                  / tf.cast(num_train_steps, tf.float32))
    step_ratio = tf.minimum(1.0, step_ratio)
    return 1.0 - step_ratio * (1.0 - layer_keep)


def _with_channels(shape, channels, data_format):
    shape = list(shape)
    shape[channel_axis(data_format)] = channels
    return tuple(shape)


class Calibrate(keras.layers.Layer):
    """Brings a layer's two inputs to the same size and `filters` channels
    (`calibrate`, the reference's `_maybe_calibrate_size`).

    Input 0 at twice the resolution of input 1: ReLU then a factorized
    reduction (`pool_x/path1_conv`, ...); else, if its channels differ:
    ReLU, 1x1 conv, BN (`pool_x/w`, `pool_x/bn`). Input 1, if its channels
    differ: the same 1x1 conv (`pool_y`).
    """

    def __init__(self, in_channels, reduce_x, filters, data_format="NHWC",
                 name="calibrate", **kwargs):
        super().__init__(name=name, **kwargs)
        df = data_format
        c0, c1 = in_channels
        self.reduce_x = reduce_x
        self.pool_x = None
        if reduce_x:
            self.pool_x = FactorizedReduction(filters, data_format=df,
                                              name="pool_x")
        elif c0 != filters:
            self.pool_x = ConvBN(filters, 1, pre_relu=True, data_format=df,
                                 name="pool_x")
        self.pool_y = None
        if c1 != filters:
            self.pool_y = ConvBN(filters, 1, pre_relu=True, data_format=df,
                                 name="pool_y")

    def call(self, layers, training=False):
        x, y = layers
        if self.reduce_x:
            x = self.pool_x(tf.nn.relu(x), training=training)
        elif self.pool_x is not None:
            x = self.pool_x(x, training=training)
        if self.pool_y is not None:
            y = self.pool_y(y, training=training)
        return [x, y]


# ------------------------------------------------------------ fixed mode

class StackedSepConv(keras.layers.Layer):
    """A separable-conv op of a fixed cell (`_fixed_conv`): two SepConvBN
    (`sep_conv_0` with the stride, `sep_conv_1` with stride 1), each ReLU,
    separable k x k conv, BN."""

    def __init__(self, filters, kernel_size, stride=1, data_format="NHWC",
                 name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.sep_conv_0 = SepConvBN(filters, kernel_size, stride,
                                    data_format=data_format, name="sep_conv_0")
        self.sep_conv_1 = SepConvBN(filters, kernel_size, 1,
                                    data_format=data_format, name="sep_conv_1")

    def call(self, x, training=False):
        x = self.sep_conv_0(x, training=training)
        return self.sep_conv_1(x, training=training)


class StridedPool(keras.layers.Layer):
    """A pool op of a fixed cell: 3x3 average or max pooling with the
    cell's stride, SAME (no weights)."""

    def __init__(self, kind, stride=1, data_format="NHWC", name=None,
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.kind = kind
        self.stride = stride
        self.data_format = data_format

    def call(self, x, training=False):
        return pool3x3(x, self.kind, self.stride, self.data_format)


class Identity(keras.layers.Layer):
    """The identity op at stride 1 (no weights)."""

    def call(self, x, training=False):
        return x


@dataclasses.dataclass(frozen=True)
class MicroOp:
    """One op of the micro search space: a stacked separable conv
    (`kernel`), a 3x3 pool (`pooling`: "avg" or "max"), or the identity
    (neither)."""
    name: str
    kernel: int = None
    pooling: str = None


# The micro op table (the reference's `_enas_cell` order): an op's index
# here is the integer the controller samples, the branch of a search node's
# tf.switch_case and the index of `arcs.MICRO_OPS` (its name, printed for a
# user); `fixed_op` and `SearchNodeInput` build each op from its entry.
MICRO_OP_TABLE = (
    MicroOp("sep_conv_3x3", kernel=3),
    MicroOp("sep_conv_5x5", kernel=5),
    MicroOp("avg_pool_3x3", pooling="avg"),
    MicroOp("max_pool_3x3", pooling="max"),
    MicroOp("identity"),
)
assert tuple(op.name for op in MICRO_OP_TABLE) == arcs.MICRO_OPS


def fixed_op(op, stride, filters, data_format="NHWC", name=None):
    """The layer computing op `op` (an index of MICRO_OP_TABLE) of a fixed
    cell at `stride`, named as the reference's `x_conv` / `y_conv` scope.

    The reference also puts a 1x1 conv after pools and identity when the
    input's channels differ from `filters`; that never happens (every node
    input has been calibrated to `filters`), so it is not built.
    """
    df = data_format
    spec = MICRO_OP_TABLE[op]
    if spec.kernel is not None:
        return StackedSepConv(filters, spec.kernel, stride, data_format=df,
                              name=name)
    if spec.pooling is not None:
        return StridedPool(spec.pooling, stride, data_format=df, name=name)
    if stride > 1:
        return FactorizedReduction(filters, data_format=df, name=name)
    return Identity(name=name)


class FixedCell(keras.layers.Layer):
    """One node of a fixed cell (`cell_{id}`): op_1(input_1) + op_2(input_2),
    the ops in `x_conv` and `y_conv`. Inputs 0 and 1 are read at the cell's
    stride, earlier nodes at stride 1. In training with drop-path, every op
    but identity goes through drop-path."""

    def __init__(self, cell_id, node, stride, filters, data_format="NHWC",
                 **kwargs):
        super().__init__(name="cell_{}".format(cell_id), **kwargs)
        self.node = tuple(node)
        x_id, x_op, y_id, y_op = self.node
        self.x_conv = fixed_op(x_op, stride if x_id in (0, 1) else 1, filters,
                               data_format, name="x_conv")
        self.y_conv = fixed_op(y_op, stride if y_id in (0, 1) else 1, filters,
                               data_format, name="y_conv")

    def call(self, layers, training=False, drop=None):
        """layers: the cell's inputs and earlier nodes; drop: None or a
        function applying drop-path."""
        x_id, x_op, y_id, y_op = self.node
        x = self.x_conv(layers[x_id], training=training)
        if drop is not None and x_op != 4:
            x = drop(x)
        y = self.y_conv(layers[y_id], training=training)
        if drop is not None and y_op != 4:
            y = drop(y)
        return x + y


class FinalCombine(keras.layers.Layer):
    """Concatenates a fixed cell's unread nodes (`final_combine`); in a
    reduction cell an unread input 0 or 1 is first reduced
    (`calibrate_{i}`, a factorized reduction)."""

    def __init__(self, outputs, reduction, filters, data_format="NHWC",
                 name="final_combine", **kwargs):
        super().__init__(name=name, **kwargs)
        self.node_ids = list(outputs)
        self.data_format = data_format
        self.reduce = {}
        self.reductions = []
        for i in self.node_ids:
            if reduction and i in (0, 1):
                fr = FactorizedReduction(filters, data_format=data_format,
                                         name="calibrate_{}".format(i))
                self.reduce[i] = len(self.reductions)
                self.reductions.append(fr)

    def call(self, layers, training=False):
        out = []
        for i in self.node_ids:
            x = layers[i]
            if i in self.reduce:
                x = self.reductions[self.reduce[i]](x, training=training)
            out.append(x)
        return tf.concat(out, axis=channel_axis(self.data_format))


class FixedMicroLayer(keras.layers.Layer):
    """One layer of a fixed micro network (the reference's `_fixed_layer`):
    calibrate, `layer_base` (ReLU, 1x1 conv, BN on input 1), the cell's
    nodes, final_combine.

    in_channels: the channels of the two inputs; reduce_x: input 0 has twice
    input 1's resolution. Output: [N, H', W', len(outputs) x filters], H' =
    H / 2 in a reduction cell (H: input 1's size).
    """

    def __init__(self, layer_id, nodes, outputs, in_channels, reduce_x,
                 filters, reduction, data_format="NHWC", **kwargs):
        super().__init__(name="layer_{}".format(layer_id), **kwargs)
        df = data_format
        self.layer_id = layer_id
        self.calibrate = Calibrate(in_channels, reduce_x, filters,
                                   data_format=df)
        self.layer_base = ConvBN(filters, 1, pre_relu=True, data_format=df,
                                 name="layer_base")
        stride = 2 if reduction else 1
        self.cells = [FixedCell(i, node, stride, filters, data_format=df)
                      for i, node in enumerate(nodes)]
        self.final_combine = FinalCombine(outputs, reduction, filters,
                                          data_format=df)

    def call(self, layers, training=False, drop=None):
        layers = self.calibrate(layers, training=training)
        layers = [layers[0], self.layer_base(layers[1], training=training)]
        for cell in self.cells:
            layers.append(cell(layers, training=training, drop=drop))
        return self.final_combine(layers, training=training)


# ----------------------------------------------------------- search mode

class SharedSepConv(keras.layers.Layer):
    """A separable-conv op of a search node (`conv_{k}x{k}`, the reference's
    `_enas_conv`): two RowSepConvBN (`stack_0`, `stack_1`), each ReLU,
    separable k x k conv, batch-statistics BN, all with the weights of the
    row given by the node's input index."""

    def __init__(self, num_rows, filters, kernel_size, data_format="NHWC",
                 **kwargs):
        super().__init__(name="conv_{0}x{0}".format(kernel_size), **kwargs)
        self.filters = filters
        self.data_format = data_format
        self.stacks = [RowSepConvBN(num_rows, filters, kernel_size,
                                    data_format=data_format,
                                    name="stack_{}".format(i))
                       for i in range(2)]

    def build(self, input_shape=None):
        shape = _with_channels((None, None, None, None), self.filters,
                               self.data_format)
        for stack in self.stacks:
            stack.build(shape)

    def row_weights(self, row):
        """Both stacks' weights of row `row` (RowSepConvBN.row_weights)."""
        return [stack.row_weights(row) for stack in self.stacks]

    def apply_row(self, x, weights):
        """x through both stacks, with `weights` from row_weights."""
        for stack, w in zip(self.stacks, weights):
            x = stack.apply_row(x, w)
        return x

    def call(self, x, row):
        return self.apply_row(x, self.row_weights(row))


class SearchNodeInput(keras.layers.Layer):
    """One of a search node's two inputs (`x` or `y`): picks the input by
    index among the cell's inputs and earlier nodes and applies the op, in
    the order of MICRO_OP_TABLE: sep conv 3x3 and 5x5 (`conv_3x3`,
    `conv_5x5`, with that input's weight row), 3x3 average and max pooling
    (stride 1), identity. Every input has `filters` channels, so the
    reference's 1x1 convs after pools and identity are never built.

    With int32 tensors for the index and op, only the chosen input and op
    run (`tf.switch_case`; an id out of range runs the last branch); with
    Python ints (a baked arc) they are called directly.
    """

    def __init__(self, cell_id, filters, data_format="NHWC", name=None,
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_inputs = cell_id + 2
        self.data_format = data_format
        # The separable-conv ops' shared weights, by op index.
        self.conv_ops = [op for op, spec in enumerate(MICRO_OP_TABLE)
                         if spec.kernel is not None]
        self.convs = [SharedSepConv(self.num_inputs, filters,
                                    MICRO_OP_TABLE[op].kernel,
                                    data_format=data_format)
                      for op in self.conv_ops]

    def build(self, input_shape=None):
        # Built here: the convs run inside tf.switch_case, where no weight
        # may be created.
        for conv in self.convs:
            conv.build()

    def run_op(self, op, x, row, conv_weights=None):
        """Op `op` (a Python int) on x, with weight row `row`, or with
        `conv_weights`, the convs' weights of that row when given."""
        spec = MICRO_OP_TABLE[op]
        if spec.kernel is not None:
            conv = self.conv_ops.index(op)
            if conv_weights is None:
                return self.convs[conv](x, row=row)
            return self.convs[conv].apply_row(x, conv_weights[conv])
        if spec.pooling is not None:
            return pool3x3(x, spec.pooling, 1, self.data_format)
        return x

    def call(self, layers, index, op):
        if isinstance(index, int):
            return self.run_op(op, layers[index], index)
        x = tf.switch_case(index, [(lambda t=t: t)
                                   for t in layers[:self.num_inputs]])
        x.set_shape(layers[0].shape)
        # The row's weights are sliced before the op's switch_case: its
        # branches then capture a few small tensors instead of slicing
        # variables, and the executor walks fewer nodes in the branches
        # not taken.
        conv_weights = [conv.row_weights(index) for conv in self.convs]
        out = tf.switch_case(
            op, [functools.partial(self.run_op, i, x, index, conv_weights)
                 for i in range(len(MICRO_OP_TABLE))])
        out.set_shape(layers[0].shape)
        return out


class SearchCell(keras.layers.Layer):
    """One node of a search cell (`cell_{id}`): x + y, two SearchNodeInputs."""

    def __init__(self, cell_id, filters, data_format="NHWC", **kwargs):
        super().__init__(name="cell_{}".format(cell_id), **kwargs)
        self.x = SearchNodeInput(cell_id, filters, data_format, name="x")
        self.y = SearchNodeInput(cell_id, filters, data_format, name="y")

    def build(self, input_shape=None):
        self.x.build()
        self.y.build()

    def call(self, layers, node):
        """node: (index_1, op_1, index_2, op_2), ints or int32 scalars."""
        return (self.x(layers, index=node[0], op=node[1])
                + self.y(layers, index=node[2], op=node[3]))


class SearchFinalConv(keras.layers.Layer):
    """Mixes a search cell's unread nodes back to `filters` channels
    (`final_conv`): their concatenation, ReLU, a 1x1 conv whose
    [filters, filters] blocks are the rows of `w` [num_nodes, filters x
    filters] of those nodes, BN.

    Output [N, H, W, filters]."""

    def __init__(self, num_nodes, filters, data_format="NHWC",
                 name="final_conv", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_nodes = num_nodes
        self.filters = filters
        self.data_format = data_format
        self.bn = BatchNorm(data_format=data_format)

    def build(self, input_shape=None):
        c = self.filters
        self.w = self.add_weight(name="w", shape=(self.num_nodes, c * c),
                                 initializer=TF1HeNormal())
        self.bn.build(_with_channels((None, None, None, None), c,
                                     self.data_format))

    def call(self, nodes, indices, training=False):
        """nodes: every node's output [N, H, W, filters] (inputs first);
        indices: the unread ones, an int32 vector or a list of ints."""
        df, c = self.data_format, self.filters
        axis = channel_axis(df)
        if isinstance(indices, (list, tuple)):
            x = tf.concat([nodes[i] for i in indices], axis=axis)
            indices = tf.constant(indices, tf.int32)
        else:
            # [k, N, H, W, C] -> channels node after node, as a concat.
            picked = tf.gather(tf.stack(nodes, axis=0), indices, axis=0)
            shape = tf.shape(nodes[0])
            k = tf.size(indices)
            if df == "NHWC":
                x = tf.reshape(tf.transpose(picked, [1, 2, 3, 0, 4]),
                               [shape[0], shape[1], shape[2], k * c])
            else:
                x = tf.reshape(tf.transpose(picked, [1, 0, 2, 3, 4]),
                               [shape[0], k * c, shape[2], shape[3]])
        w = tf.reshape(tf.gather(self.w, indices, axis=0), [1, 1, -1, c])
        out = tf.nn.conv2d(tf.nn.relu(x), w, 1, "SAME", data_format=df)
        out.set_shape(nodes[0].shape)
        return self.bn(out, training=training)


class SearchMicroLayer(keras.layers.Layer):
    """One layer of the micro search child (the reference's `_enas_layer`):
    calibrate, the cell's nodes as the arc says, final_conv.

    in_channels, reduce_x: as FixedMicroLayer. A reduction layer receives
    inputs already reduced (the child reduces the previous output first);
    the cell itself always runs at stride 1. Output [N, H, W, filters].
    """

    def __init__(self, layer_id, num_cells, in_channels, reduce_x, filters,
                 data_format="NHWC", **kwargs):
        super().__init__(name="layer_{}".format(layer_id), **kwargs)
        df = data_format
        self.num_cells = num_cells
        self.calibrate = Calibrate(in_channels, reduce_x, filters,
                                   data_format=df)
        self.cells = [SearchCell(i, filters, data_format=df)
                      for i in range(num_cells)]
        self.final_conv = SearchFinalConv(num_cells + 2, filters,
                                          data_format=df)

    def build(self, input_shape=None):
        for cell in self.cells:
            cell.build()
        self.final_conv.build()

    def call(self, layers, arc, training=False):
        """arc: this cell's 4 x num_cells values, an int32 tensor or a tuple
        of Python ints (baked)."""
        layers = self.calibrate(layers, training=training)
        baked = isinstance(arc, tuple)
        for cell_id, cell in enumerate(self.cells):
            node = arc[4 * cell_id:4 * cell_id + 4]
            if not baked:
                node = [node[j] for j in range(4)]
            layers.append(cell(layers, node=node))
        n = self.num_cells + 2
        if baked:
            read = {arc[4 * i + j] for i in range(self.num_cells)
                    for j in (0, 2)}
            unread = [i for i in range(n) if i not in read]
        else:
            reads = tf.concat([arc[0::4], arc[2::4]], axis=0)
            used = tf.reduce_sum(tf.one_hot(reads, n, dtype=tf.int32), axis=0)
            unread = tf.reshape(tf.cast(tf.where(tf.equal(used, 0)),
                                        tf.int32), [-1])
        return self.final_conv(layers, indices=unread, training=training)


# ------------------------------------------------------------- the child

class MicroChild(CifarChild):
    """What the two micro children share: images [N, H, W, 3] (NHWC,
    normalised; 32x32 for CIFAR-10) -> the stem (`stem_conv`), the
    subclass's `num_layers + 2` cell layers (`cell_layers`), the classifier
    (`fc`) and the aux head (`aux_head`, with `use_aux_heads`), returned as
    `ChildOutput(logits [N, 10], aux_logits)`: aux_logits [N, 10] in
    training with an aux head, else None. With `data_format="NCHW"` it
    transposes its input and computes in NCHW.

    `FixedMicroChild` (a fixed arc) and `SearchMicroChild` (the arc given at
    call time) build the layers; the space's `build_child` picks the one a
    config asks for.

    Batch norm: `training` selects batch or moving statistics everywhere,
    except that the search convs' batch norms (which keep no moving
    statistics) and the aux head's always use batch statistics, as the
    reference. The reference runs its search child in training mode in
    every pass; passing that is the caller's choice.

    What a trainer asks of every CIFAR child (`ChildTrainer`): `call`
    returning a `ChildOutput`, `takes_step` (whether `call` takes the global
    step, drop-path's progress) and `optimizer_variables(train_aux_head)`;
    `searching` says whether `call` takes an arc.
    """

    def __init__(self, cfg, name="child", **kwargs):
        super().__init__(cfg, name=name, **kwargs)
        df = cfg.data_format
        self.reduction_layers = reduction_layers(cfg.num_layers)
        self.aux_head_layer = (aux_head_layer(cfg.num_layers)
                               if cfg.use_aux_heads else None)
        f = cfg.out_filters
        self.stem_conv = ConvBN(3 * f, 3, data_format=df, name="stem_conv")
        self.cell_layers = []
        # Per layer: (output channels, reductions so far).
        self.levels = []
        self.build_layers()
        self.aux_head = AuxHead(10, data_format=df) if cfg.use_aux_heads \
            else None
        self.fc = Classifier(10, keep_prob=cfg.keep_prob, data_format=df,
                             seed=cfg.seed)

    def build_layers(self):
        """Appends each layer to `self.cell_layers` and its (output
        channels, reductions so far) to `self.levels`."""
        raise NotImplementedError

    def layer_specs(self):
        """(layer_id, reduction, filters) of every layer, in order: the
        filters double at each reduction layer."""
        filters = self.cfg.out_filters
        for layer_id in range(self.cfg.num_layers + 2):
            reduction = layer_id in self.reduction_layers
            if reduction:
                filters *= 2
            yield layer_id, reduction, filters

    def build(self, input_shape):
        # The aux head runs only in training, but its weights exist from
        # the start (an evaluation call builds every weight).
        if self.aux_head is not None:
            channels, level = self.levels[self.aux_head_layer]
            size = int(input_shape[1])
            for _ in range(level):
                size = (size + 1) // 2
            df = self.cfg.data_format
            shape = [None, size, size, channels] if df == "NHWC" else \
                [None, channels, size, size]
            self.aux_head.build(tuple(shape))

    def head(self, outputs, training):
        """The ChildOutput of the layers' `outputs` (`layer_outputs`)."""
        logits = self.fc(tf.nn.relu(outputs[-1]), training=training)
        aux_logits = None
        if bool(training) and self.aux_head is not None:
            # The aux head always normalises with batch statistics.
            aux_logits = self.aux_head(outputs[self.aux_head_layer])
        return ChildOutput(logits, aux_logits)

    def optimizer_variables(self, train_aux_head=False):
        """The trainable variables the reference's optimiser updates (and its
        L2 term covers): every trainable weight but the aux head's, whose
        weights the reference never trains (its aux loss still trains the
        body). train_aux_head=True includes them."""
        if self.aux_head is None or train_aux_head:
            return list(self.trainable_weights)
        aux = {id(v) for v in self.aux_head.trainable_weights}
        return [v for v in self.trainable_weights if id(v) not in aux]


class FixedMicroChild(MicroChild):
    """The micro network of one architecture (`cfg.fixed_arc`):
    `child(images, training, step=step)` -> ChildOutput, step the global
    step (drop-path's progress; needed in training when
    `drop_path_keep_prob` is set). Its layers are `FixedMicroLayer`s."""

    searching = False
    # `call` takes `step` (drop-path's progress).
    takes_step = True

    def __init__(self, cfg, name="child", **kwargs):
        super().__init__(cfg, name=name, **kwargs)
        self.drop_path_seed = None
        if cfg.drop_path_keep_prob is not None:
            self.drop_path_seed = keras.random.SeedGenerator(
                cfg.seed, name="drop_path_seed")

    def build_layers(self):
        cfg = self.cfg
        # The two inputs of the next layer: (channels, reductions so far).
        shapes = [(3 * cfg.out_filters, 0)] * 2
        for layer_id, reduction, filters in self.layer_specs():
            which = "reduction" if reduction else "normal"
            outputs = cfg.fixed_arc.outputs(which)
            self.cell_layers.append(FixedMicroLayer(
                layer_id, cfg.fixed_arc.cell(which), outputs,
                (shapes[0][0], shapes[1][0]), shapes[0][1] != shapes[1][1],
                filters, reduction, data_format=cfg.data_format))
            out = (len(outputs) * filters,
                   shapes[1][1] + (1 if reduction else 0))
            self.levels.append(out)
            shapes = [shapes[1], out]

    def _drop_fn(self, layer_id, training, step):
        cfg = self.cfg
        if not training or cfg.drop_path_keep_prob is None:
            return None
        if step is None:
            raise ValueError("drop-path needs the global step: call "
                             "child(images, training=True, step=step)")
        keep = drop_path_keep_prob(cfg.drop_path_keep_prob, layer_id,
                                   cfg.num_layers, step, cfg.num_train_steps)
        return lambda x: drop_path(x, keep, self.drop_path_seed)

    def layer_outputs(self, images, training=False, step=None):
        """The output of every layer (stem excluded), in order; `call`'s
        body up to the classifier. The child must be built (called once)."""
        x = self.stem(images, training)
        layers = [x, x]
        outputs = []
        for layer_id, layer in enumerate(self.cell_layers):
            x = layer(layers, training=training,
                      drop=self._drop_fn(layer_id, training, step))
            layers = [layers[-1], x]
            outputs.append(x)
        return outputs

    def call(self, images, training=False, step=None):
        """step: drop-path's progress (the global step)."""
        return self.head(self.layer_outputs(images, training=training,
                                            step=step), training)


class SearchMicroChild(MicroChild):
    """The micro search network (shared weights of every op):
    `child(images, training, arc=arc)` -> ChildOutput, `arc` an int32
    tensor of `cfg.arc_length` values (normal cell, then reduction cell, as
    arcs.MicroArc), or a BakedArc (Python values fixed at trace time: the
    benchmark's floor). Its layers are `SearchMicroLayer`s; at a reduction
    layer the previous output is first reduced (`reductions`)."""

    searching = True

    def build_layers(self):
        cfg, df = self.cfg, self.cfg.data_format
        # The factorized reduction of the previous output at each reduction
        # layer (None elsewhere), in that layer's scope (`layer_{i}/...`).
        self.reductions = []
        # The two inputs of the next layer: (channels, reductions so far).
        shapes = [(3 * cfg.out_filters, 0)] * 2
        for layer_id, reduction, filters in self.layer_specs():
            if reduction:
                self.reductions.append(FactorizedReduction(
                    filters, data_format=df, name="layer_{}".format(layer_id)))
                shapes = [shapes[1], (filters, shapes[1][1] + 1)]
            else:
                self.reductions.append(None)
            self.cell_layers.append(SearchMicroLayer(
                layer_id, cfg.num_cells, (shapes[0][0], shapes[1][0]),
                shapes[0][1] != shapes[1][1], filters, data_format=df))
            out = (filters, shapes[1][1])
            self.levels.append(out)
            shapes = [shapes[1], out]

    def _checked_arc(self, arc):
        """(normal cell, reduction cell) of the arc."""
        n = self.cfg.arc_length
        if arc is None:
            raise ValueError("the micro search child needs an arc: call "
                             "child(images, training, arc=arc_tensor)")
        if isinstance(arc, BakedArc):
            if len(arc.values) != n:
                raise ValueError("the arc has {} values, this search space "
                                 "needs {}".format(len(arc.values), n))
            return arc.values[:n // 2], arc.values[n // 2:]
        arc = tf.convert_to_tensor(arc)
        if arc.dtype != tf.int32:
            arc = tf.cast(arc, tf.int32)
        arc = tf.reshape(arc, [-1])
        if arc.shape[0] is not None and arc.shape[0] != n:
            raise ValueError("the arc has {} values, this search space needs "
                             "{}".format(arc.shape[0], n))
        return arc[:n // 2], arc[n // 2:]

    def layer_outputs(self, images, training=False, arc=None):
        """The output of every layer (stem excluded), in order; `call`'s
        body up to the classifier. The child must be built (called once)."""
        x = self.stem(images, training)
        normal, reduce = self._checked_arc(arc)
        layers = [x, x]
        outputs = []
        for layer_id, layer in enumerate(self.cell_layers):
            reduction = layer_id in self.reduction_layers
            if reduction:
                reduced = self.reductions[layer_id](x, training=training)
                layers = [layers[-1], reduced]
            x = layer(layers, arc=reduce if reduction else normal,
                      training=training)
            layers = [layers[-1], x]
            outputs.append(x)
        return outputs

    def call(self, images, training=False, arc=None):
        """arc: an int32 tensor [cfg.arc_length] (or a BakedArc)."""
        return self.head(self.layer_outputs(images, training=training,
                                            arc=arc), training)
