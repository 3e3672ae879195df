"""Keras layers for the reference's image building blocks.

Each layer owns its weights under the reference's variable-scope names
(`w`, `bn/offset`, `path1_conv/w`, ...), so a model's variable paths read
like the reference's checkpoint names. Tensors are NHWC or NCHW as the
layer's `data_format` says; shapes in docstrings are written NHWC.

Mixed precision (`src.precision`): under the mixed_float16 policy the
convolutions compute in float16 (Keras reads the float32 variables as
float16 inside a layer's call, raw `tf.*` ops included); every batch norm
computes in float32 (input cast up, its variables created with
autocast=False, output cast back to the input's dtype), and the
classifiers' pooling and logits are float32.
"""

import keras
import tensorflow as tf

from src import distribute
from src.common_ops import TF1HeNormal
from src.moving_average import ZeroDebiased, one_minus


def channel_axis(data_format):
    return 3 if data_format == "NHWC" else 1


def spatial_axes(data_format):
    return [1, 2] if data_format == "NHWC" else [2, 3]


def num_channels(x, data_format):
    return int(x.shape[channel_axis(data_format)])


def _add_batch_norm_weights(layer, c):
    """offset, scale (trainable) and moving_mean, moving_variance of [c];
    never autocast (batch norm computes in float32)."""
    zeros, ones = keras.initializers.Zeros(), keras.initializers.Ones()
    layer.offset = layer.add_weight(name="offset", shape=(c,),
                                    initializer=zeros, autocast=False)
    layer.scale = layer.add_weight(name="scale", shape=(c,), initializer=ones,
                                   autocast=False)
    layer.moving_mean = distribute.moving_weight(layer, "moving_mean", (c,),
                                                 zeros)
    layer.moving_variance = distribute.moving_weight(
        layer, "moving_variance", (c,), ones)


def _to_float32(x):
    """(x as float32, x's dtype): batch norms compute in float32 and hand
    back their input's dtype (float16 under mixed precision)."""
    return tf.cast(x, tf.float32), x.dtype


class BatchNorm(keras.layers.Layer):
    """Batch norm exactly as the reference's `batch_norm` computes it.

    Training: normalise with the batch mean and the biased batch variance
    (TF's fused kernel), and update the moving statistics with TF1's
    zero-debiased `assign_moving_average` (`src.moving_average`): `biased
    <- biased - (biased - value) (1 - decay)`, `local_step += 1`, `moving =
    biased / (1 - decay ** local_step)`, fed the batch mean and the Bessel-corrected batch variance
    (what the fused kernel returns). After one step the moving mean is the
    batch mean. Inference: normalise with the moving statistics.

    Weights: offset, scale (trainable, [C]); moving_mean, moving_variance and
    their debiasing state `*_biased` [C], `*_local_step` [] (not trainable;
    the reference names the latter `<moving>/biased` and `<moving>/local_step`).
    Input and output: [N, H, W, C].
    """

    def __init__(self, decay=0.9, epsilon=1e-5, data_format="NHWC",
                 name="bn", **kwargs):
        super().__init__(name=name, **kwargs)
        self.decay = decay
        self.epsilon = epsilon
        self.data_format = data_format

    def build(self, input_shape):
        c = int(input_shape[channel_axis(self.data_format)])
        _add_batch_norm_weights(self, c)
        self._debias = {
            stat: ZeroDebiased(self, getattr(self, stat), stat, (c,))
            for stat in ("moving_mean", "moving_variance")}

    def call(self, x, training=False):
        x, dtype = _to_float32(x)
        if training:
            y, mean, variance = distribute.fused_batch_norm(
                x, self.scale, self.offset, self.epsilon, self.data_format)
            one_minus_decay = one_minus(self.decay)
            self._debias["moving_mean"].update(mean, one_minus_decay)
            self._debias["moving_variance"].update(variance, one_minus_decay)
            return tf.cast(y, dtype)
        y, _, _ = tf.compat.v1.nn.fused_batch_norm(
            x, self.scale, self.offset, mean=self.moving_mean,
            variance=self.moving_variance, epsilon=self.epsilon,
            data_format=self.data_format, is_training=False)
        return tf.cast(y, dtype)


class MaskedBatchNorm(keras.layers.Layer):
    """The reference's `batch_norm_with_mask`: batch norm of the channels
    [start, start + count) of a `num_channels`-wide set of statistics.

    The input holds only the selected channels ([N, H, W, count]). Training:
    normalise with the batch mean and biased batch variance (TF's fused
    kernel) and update the selected channels' moving statistics by the plain
    rule `moving -= (1 - decay) (moving - batch_stat)` (no zero-debiasing;
    the variance fed is the fused kernel's Bessel-corrected one); the other
    channels' statistics are untouched. Inference: normalise with the
    selected channels' moving statistics. Epsilon 1e-3 by default.

    Weights: offset, scale (trainable), moving_mean, moving_variance (not
    trainable), all [num_channels].
    """

    def __init__(self, num_channels, decay=0.9, epsilon=1e-3,
                 data_format="NHWC", name="bn", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_channels = num_channels
        self.decay = decay
        self.epsilon = epsilon
        self.data_format = data_format

    def build(self, input_shape=None):
        c = self.num_channels
        _add_batch_norm_weights(self, c)

    def _select(self, v, start, count):
        if start is None:
            return tf.convert_to_tensor(v)
        return tf.slice(v, tf.reshape(start, [1]), tf.reshape(count, [1]))

    def _update(self, moving, start, count, value):
        one_minus_decay = tf.constant(1.0 - self.decay, tf.float32)
        delta = (self._select(moving, start, count) - value) * one_minus_decay
        if start is None:
            moving.assign(moving - delta)
        else:
            indices = tf.range(start, start + count)[:, None]
            moving.assign(tf.tensor_scatter_nd_sub(
                tf.convert_to_tensor(moving), indices, delta))

    def call(self, x, start=None, count=None, training=False):
        """x: [N, H, W, count]. start, count: int scalars (Python or int32
        tensors); None for all channels."""
        x, dtype = _to_float32(x)
        scale = self._select(self.scale, start, count)
        offset = self._select(self.offset, start, count)
        if training:
            y, mean, variance = distribute.fused_batch_norm(
                x, scale, offset, self.epsilon, self.data_format)
            self._update(self.moving_mean, start, count, mean)
            self._update(self.moving_variance, start, count, variance)
            return tf.cast(y, dtype)
        y, _, _ = tf.compat.v1.nn.fused_batch_norm(
            x, scale, offset,
            mean=self._select(self.moving_mean, start, count),
            variance=self._select(self.moving_variance, start, count),
            epsilon=self.epsilon, data_format=self.data_format,
            is_training=False)
        return tf.cast(y, dtype)


class SlicedConvBN(keras.layers.Layer):
    """k x k convolution to the output channels [start, start + count) of a
    `filters`-wide weight, then masked batch norm (the second half of the
    reference's search-mode `_conv_branch`, without its ReLU).

    Weights: `w` [k, k, C_in, filters], or for a separable convolution
    `w_depth` [k, k, C_in, 1] and `w_point` [filters, C_in] (2-D, rows are
    output channels, as the reference stores it; He-normal fan-in is
    therefore `filters`); `bn/...` a MaskedBatchNorm of `filters` channels.
    Input [N, H, W, C_in] -> output [N, H, W, count] (`filters` when start
    is None).
    """

    def __init__(self, filters, kernel_size, separable=False,
                 data_format="NHWC", name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.separable = separable
        self.data_format = data_format
        self.bn = MaskedBatchNorm(filters, data_format=data_format)

    def build(self, input_shape):
        c_in = int(input_shape[channel_axis(self.data_format)])
        self.c_in = c_in
        k = self.kernel_size
        if self.separable:
            self.w_depth = self.add_weight(name="w_depth", shape=(k, k, c_in, 1),
                                           initializer=TF1HeNormal())
            self.w_point = self.add_weight(
                name="w_point", shape=(self.filters, c_in),
                initializer=TF1HeNormal())
        else:
            self.w = self.add_weight(
                name="w", shape=(k, k, c_in, self.filters),
                initializer=TF1HeNormal())
        self.bn.build()

    def call(self, x, start=None, count=None, training=False):
        df = self.data_format
        if self.separable:
            w_point = tf.convert_to_tensor(self.w_point)
            if start is not None:
                w_point = tf.slice(w_point, tf.stack([start, 0]),
                                   tf.stack([count, self.c_in]))
            w_point = tf.reshape(
                tf.transpose(w_point),
                [1, 1, self.c_in, self.filters if start is None else count])
            x = tf.nn.separable_conv2d(x, self.w_depth, w_point,
                                       strides=[1, 1, 1, 1], padding="SAME",
                                       data_format=df)
        else:
            w = tf.convert_to_tensor(self.w)
            if start is not None:
                w = w[:, :, :, start:start + count]
            x = tf.nn.conv2d(x, w, 1, "SAME", data_format=df)
        return self.bn(x, start=start, count=count, training=training)


class ConvBN(keras.layers.Layer):
    """[ReLU ->] k x k convolution, stride 1, SAME [-> batch norm] [-> ReLU].

    Weights: `w` [k, k, C_in, filters] (He-normal as TF1), or for a
    separable convolution `w_depth` [k, k, C_in, 1] and `w_point`
    [1, 1, C_in, filters]; `bn/...` when `use_bn`. No bias, as the reference.
    Input [N, H, W, C_in] -> output [N, H, W, filters].
    """

    def __init__(self, filters, kernel_size, pre_relu=False, post_relu=False,
                 separable=False, use_bn=True, data_format="NHWC", name=None,
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.pre_relu = pre_relu
        self.post_relu = post_relu
        self.separable = separable
        self.use_bn = use_bn
        self.data_format = data_format
        self.bn = BatchNorm(data_format=data_format) if use_bn else None

    def build(self, input_shape):
        c_in = int(input_shape[channel_axis(self.data_format)])
        k = self.kernel_size
        if self.separable:
            self.w_depth = self.add_weight(name="w_depth", shape=(k, k, c_in, 1),
                                           initializer=TF1HeNormal())
            self.w_point = self.add_weight(
                name="w_point", shape=(1, 1, c_in, self.filters),
                initializer=TF1HeNormal())
        else:
            self.w = self.add_weight(name="w", shape=(k, k, c_in, self.filters),
                                     initializer=TF1HeNormal())
        if self.use_bn:
            # Built here rather than on first call, so that a parent can
            # create every weight up front (the macro search child's
            # branches run inside tf.switch_case, where none may be created).
            out_shape = list(input_shape)
            out_shape[channel_axis(self.data_format)] = self.filters
            self.bn.build(tuple(out_shape))

    def call(self, x, training=False):
        if self.pre_relu:
            x = tf.nn.relu(x)
        if self.separable:
            x = tf.nn.separable_conv2d(x, self.w_depth, self.w_point,
                                       strides=[1, 1, 1, 1], padding="SAME",
                                       data_format=self.data_format)
        else:
            x = tf.nn.conv2d(x, self.w, 1, "SAME", data_format=self.data_format)
        if self.use_bn:
            x = self.bn(x, training=training)
        if self.post_relu:
            x = tf.nn.relu(x)
        return x


class FactorizedReduction(keras.layers.Layer):
    """Halves H and W without losing pixels to the stride (reference's
    `_factorized_reduction`, stride 2).

    Path 1: 1x1 average pool with stride 2, 1x1 conv to filters / 2
    (`path1_conv/w`). Path 2: the input shifted by one pixel (pad bottom and
    right, drop the first row and column), the same pool and conv
    (`path2_conv/w`). Concatenated on channels and batch-normalised (`bn`).
    Input [N, H, W, C] -> output [N, H/2, W/2, filters].
    """

    def __init__(self, filters, data_format="NHWC", name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        if filters % 2:
            raise ValueError("factorized reduction needs an even number of "
                             "filters, got {}".format(filters))
        self.filters = filters
        self.data_format = data_format
        half = filters // 2
        self.path1_conv = ConvBN(half, 1, use_bn=False, data_format=data_format,
                                 name="path1_conv")
        self.path2_conv = ConvBN(half, 1, use_bn=False, data_format=data_format,
                                 name="path2_conv")
        self.bn = BatchNorm(data_format=data_format)

    def call(self, x, training=False):
        df = self.data_format
        strides = [1, 2, 2, 1] if df == "NHWC" else [1, 1, 2, 2]
        path1 = tf.nn.avg_pool2d(x, 1, strides, "VALID", data_format=df)
        path1 = self.path1_conv(path1)
        # tf.slice, not x[...]: its gradient is a pad, where StridedSlice's
        # took 14% of the macro fixed step's kernel time (src.bench_profile).
        if df == "NHWC":
            shifted = tf.slice(tf.pad(x, [[0, 0], [0, 1], [0, 1], [0, 0]]),
                               [0, 1, 1, 0], [-1, -1, -1, -1])
        else:
            shifted = tf.slice(tf.pad(x, [[0, 0], [0, 0], [0, 1], [0, 1]]),
                               [0, 0, 1, 1], [-1, -1, -1, -1])
        path2 = tf.nn.avg_pool2d(shifted, 1, strides, "VALID", data_format=df)
        path2 = self.path2_conv(path2)
        out = tf.concat([path1, path2], axis=channel_axis(df))
        return self.bn(out, training=training)


class Pool3x3(keras.layers.Layer):
    """3x3 average or max pooling, stride 1, SAME (no weights)."""

    def __init__(self, kind, data_format="NHWC", name="pool", **kwargs):
        super().__init__(name=name, **kwargs)
        if kind not in ("avg", "max"):
            raise ValueError("unknown pool {!r}".format(kind))
        self.kind = kind
        self.data_format = data_format

    def call(self, x):
        return pool3x3(x, self.kind, 1, self.data_format)


class Classifier(keras.layers.Layer):
    """Global average pool, dropout (training only), and a bias-free linear
    layer `w` [C, num_classes]: [N, H, W, C] -> logits [N, num_classes].
    Computes in float32 whatever the policy (float32 logits under mixed
    precision)."""

    def __init__(self, num_classes=10, keep_prob=1.0, data_format="NHWC",
                 name="fc", seed=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.keep_prob = keep_prob
        self.data_format = data_format
        self.dropout = keras.layers.Dropout(1.0 - keep_prob, seed=seed,
                                            name="dropout", dtype="float32")

    def build(self, input_shape):
        c = int(input_shape[channel_axis(self.data_format)])
        self.w = self.add_weight(name="w", shape=(c, self.num_classes),
                                 initializer=TF1HeNormal(), autocast=False)

    def call(self, x, training=False):
        x = tf.cast(x, tf.float32)
        x = tf.reduce_mean(x, axis=spatial_axes(self.data_format))
        if training and self.keep_prob < 1.0:
            # As self.dropout(x, training=True); rows of the global
            # batch's mask under tf.distribute.
            x = distribute.dropout(x, self.dropout.rate,
                                   self.dropout.seed_generator)
        return tf.matmul(x, self.w)


class SepConvBN(keras.layers.Layer):
    """ReLU -> depthwise-separable k x k convolution (stride on both spatial
    axes, SAME) -> batch norm: one `sep_conv_{i}` of the reference's fixed
    micro cells (`_fixed_conv`).

    Weights: `w_depth` [k, k, C_in, 1], `w_point` [1, 1, C_in, filters]
    (He-normal as TF1), `bn/...` (BatchNorm).
    Input [N, H, W, C_in] -> output [N, H / stride, W / stride, filters].
    """

    def __init__(self, filters, kernel_size, stride=1, data_format="NHWC",
                 name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.stride = stride
        self.data_format = data_format
        self.bn = BatchNorm(data_format=data_format)

    def build(self, input_shape):
        c_in = int(input_shape[channel_axis(self.data_format)])
        k = self.kernel_size
        self.w_depth = self.add_weight(name="w_depth", shape=(k, k, c_in, 1),
                                       initializer=TF1HeNormal())
        self.w_point = self.add_weight(name="w_point",
                                       shape=(1, 1, c_in, self.filters),
                                       initializer=TF1HeNormal())
        out_shape = list(input_shape)
        out_shape[channel_axis(self.data_format)] = self.filters
        self.bn.build(tuple(out_shape))

    def call(self, x, training=False):
        s = self.stride
        strides = [1, s, s, 1] if self.data_format == "NHWC" else [1, 1, s, s]
        x = tf.nn.separable_conv2d(tf.nn.relu(x), self.w_depth, self.w_point,
                                   strides=strides, padding="SAME",
                                   data_format=self.data_format)
        return self.bn(x, training=training)


class RowBatchNorm(keras.layers.Layer):
    """Batch norm whose offset and scale are one row, chosen at call time,
    of [num_rows, C] matrices (the `bn` of the reference's micro search
    `_enas_conv`). Always normalises with the batch statistics (TF's fused
    kernel, epsilon 1e-5), in training and in inference alike: it keeps no
    moving statistics, as the reference.

    Weights: `offset` [num_rows, C] (zeros), `scale` [num_rows, C] (ones).
    """

    def __init__(self, num_rows, epsilon=1e-5, data_format="NHWC", name="bn",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_rows = num_rows
        self.epsilon = epsilon
        self.data_format = data_format

    def build(self, input_shape):
        c = int(input_shape[channel_axis(self.data_format)])
        self.offset = self.add_weight(name="offset", shape=(self.num_rows, c),
                                      initializer=keras.initializers.Zeros(),
                                      autocast=False)
        self.scale = self.add_weight(name="scale", shape=(self.num_rows, c),
                                     initializer=keras.initializers.Ones(),
                                     autocast=False)

    def row_weights(self, row):
        """(scale, offset) of row `row` (Python int or int32 scalar), [C]
        each."""
        return (tf.convert_to_tensor(self.scale)[row],
                tf.convert_to_tensor(self.offset)[row])

    def apply_row(self, x, weights):
        """x [N, H, W, C] normalised, with `weights` from row_weights."""
        x, dtype = _to_float32(x)
        scale, offset = weights
        y, _, _ = distribute.fused_batch_norm(x, scale, offset, self.epsilon,
                                              self.data_format)
        return tf.cast(y, dtype)

    def call(self, x, row):
        """x: [N, H, W, C]; row: int scalar (Python or int32 tensor)."""
        return self.apply_row(x, self.row_weights(row))


class RowSepConvBN(keras.layers.Layer):
    """ReLU -> depthwise-separable k x k convolution (stride 1, SAME) ->
    RowBatchNorm, with the weights of one input among `num_rows`: the row
    given at call time of stacked, flattened matrices (a `stack_{i}` of the
    reference's micro search `_enas_conv`; the row is the index of the
    node's input, so each possible input has its own weights).

    Weights: `w_depth` [num_rows, k * k * C_in] (row r reshaped to
    [k, k, C_in, 1]), `w_point` [num_rows, C_in * filters] (row r reshaped
    to [1, 1, C_in, filters]), `bn/offset`, `bn/scale` [num_rows, filters].
    He-normal fan-in comes from the stored 2-D shape, i.e. num_rows, as in
    the reference (sigma = sqrt(2 / num_rows)).
    Input [N, H, W, C_in] -> output [N, H, W, filters].
    """

    def __init__(self, num_rows, filters, kernel_size, data_format="NHWC",
                 name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_rows = num_rows
        self.filters = filters
        self.kernel_size = kernel_size
        self.data_format = data_format
        self.bn = RowBatchNorm(num_rows, data_format=data_format)

    def build(self, input_shape):
        c_in = int(input_shape[channel_axis(self.data_format)])
        self.c_in = c_in
        k, n = self.kernel_size, self.num_rows
        self.w_depth = self.add_weight(name="w_depth", shape=(n, k * k * c_in),
                                       initializer=TF1HeNormal())
        self.w_point = self.add_weight(name="w_point",
                                       shape=(n, c_in * self.filters),
                                       initializer=TF1HeNormal())
        out_shape = list(input_shape)
        out_shape[channel_axis(self.data_format)] = self.filters
        self.bn.build(tuple(out_shape))

    def row_weights(self, row):
        """The weights of row `row` (Python int or int32 scalar), shaped
        for the convolutions and cast to the compute dtype: (w_depth,
        w_point, (bn scale, bn offset))."""
        k, c = self.kernel_size, self.c_in

        def read(v, shape):
            return tf.cast(tf.reshape(tf.convert_to_tensor(v)[row], shape),
                           self.compute_dtype)
        return (read(self.w_depth, [k, k, c, 1]),
                read(self.w_point, [1, 1, c, self.filters]),
                self.bn.row_weights(row))

    def apply_row(self, x, weights):
        """x [N, H, W, C_in] through the op, with `weights` from
        row_weights."""
        w_depth, w_point, bn = weights
        x = tf.nn.separable_conv2d(tf.nn.relu(x), w_depth, w_point,
                                   strides=[1, 1, 1, 1], padding="SAME",
                                   data_format=self.data_format)
        return self.bn.apply_row(x, bn)

    def call(self, x, row):
        return self.apply_row(x, self.row_weights(row))


def pool3x3(x, kind, stride=1, data_format="NHWC"):
    """3x3 average or max pooling with the given stride, SAME (average
    pooling counts only the pixels inside the image, as TF's). Max pooling
    inside a tf.switch_case branch is `_branch_max_pool`."""
    if kind == "avg":
        return tf.nn.avg_pool2d(x, 3, stride, "SAME", data_format=data_format)
    if distribute.inside_control_flow():
        return _branch_max_pool(x, stride, data_format)
    return tf.nn.max_pool2d(x, 3, stride, "SAME", data_format=data_format)


def _branch_max_pool(x, stride, data_format):
    """3x3 max pooling, SAME, whose gradient recomputes the pooling beside
    it. In a tf.switch_case branch, the gradient's MaxPoolGrad otherwise
    reads the pooled output through the Case op, and oneDNN's graph
    rewrite, which takes a MaxPoolGrad only together with the MaxPool that
    feeds it, leaves it to TensorFlow's generic kernel: 10.6 against 1.8
    ms for the pooling and gradient of [32, 32, 32, 16] here. Recomputed,
    the pair is oneDNN's again, and the gradient is bitwise the one outside
    a branch."""
    window = [1, 3, 3, 1] if data_format == "NHWC" else [1, 1, 3, 3]
    steps = ([1, stride, stride, 1] if data_format == "NHWC"
             else [1, 1, stride, stride])

    def pool(v):
        return tf.nn.max_pool2d(v, 3, stride, "SAME", data_format=data_format)

    @tf.custom_gradient
    def pooled(v):
        def grad(dy):
            return tf.raw_ops.MaxPoolGrad(
                orig_input=v, orig_output=pool(v), grad=dy, ksize=window,
                strides=steps, padding="SAME", data_format=data_format)
        return pool(v), grad

    return pooled(x)


def drop_path(x, keep_prob, seed):
    """Zeroes whole examples with probability 1 - keep_prob and divides the
    rest by keep_prob (the reference's `drop_path`: floor(keep_prob + u),
    u uniform in [0, 1) per example). keep_prob: float or float32 scalar
    tensor; seed: a keras SeedGenerator. The mask is drawn in float32 (the
    same draws under mixed precision) and applied in x's dtype."""
    keep_prob = tf.cast(keep_prob, tf.float32)
    noise_shape = tf.stack([tf.shape(x)[0], 1, 1, 1])
    mask = tf.floor(keep_prob + distribute.uniform_rows(noise_shape, seed))
    return x / tf.cast(keep_prob, x.dtype) * tf.cast(mask, x.dtype)


class AuxHead(keras.layers.Layer):
    """The micro child's auxiliary classifier (`aux_head`): ReLU, 5x5 average
    pool with stride 3 (VALID), 1x1 conv to 128 + BN + ReLU (`proj`), a conv
    to 768 whose kernel covers the pooled map (padding SAME, as the
    reference) + BN + ReLU (`avg_pool`), global average pool and a linear
    layer to `num_classes` (`fc/w`).

    As in the reference, both batch norms always normalise with the batch
    statistics (and update their moving averages), whatever `training` says.
    Input [N, H, W, C] with H, W >= 5 -> logits [N, num_classes].
    """

    def __init__(self, num_classes=10, data_format="NHWC", name="aux_head",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.data_format = data_format
        self.proj = ConvBN(128, 1, post_relu=True, data_format=data_format,
                           name="proj")
        self.fc = Classifier(num_classes, data_format=data_format, name="fc")

    def _pool(self, x):
        return tf.nn.avg_pool2d(tf.nn.relu(x), 5, 3, "VALID",
                                data_format=self.data_format)

    def build(self, input_shape):
        df = self.data_format
        h = int(input_shape[spatial_axes(df)[0]])
        if h < 5:
            raise ValueError("the aux head needs a map of at least 5x5, got "
                             "{}x{}".format(h, h))
        hw = (h - 5) // 3 + 1
        pooled = [input_shape[0], None, None, None]
        pooled[channel_axis(df)] = int(input_shape[channel_axis(df)])
        for a in spatial_axes(df):
            pooled[a] = hw
        self.proj.build(tuple(pooled))
        # The kernel size is the pooled map's size, known only here.
        self.avg_pool = ConvBN(768, hw, post_relu=True, data_format=df,
                               name="avg_pool")
        pooled[channel_axis(df)] = 128
        self.avg_pool.build(tuple(pooled))
        pooled[channel_axis(df)] = 768
        self.fc.build(tuple(pooled))

    def call(self, x):
        x = self.proj(self._pool(x), training=True)
        x = self.avg_pool(x, training=True)
        return self.fc(x)
