"""The macro search space's child network (the reference's `GeneralChild`).

Fixed-architecture mode (`--child_fixed_arc`): a stem convolution, then
`num_layers` layers, each one op of the macro op table whose output is
concatenated with the skip inputs the arc names and mixed by a 1x1
convolution; after the two pool layers every layer so far is reduced by a
factorized reduction and the filters double. Global average pool, dropout,
a 10-way linear classifier.

Variable paths mirror the reference's scopes: `child/stem_conv/w`,
`child/layer_3/conv_1x1/bn/moving_mean`, `child/layer_1/pool_at_1/from_0/
path1_conv/w`, `child/fc/w`, ...
"""

import dataclasses

import keras
import tensorflow as tf

from src.cifar10 import arcs
from src.cifar10.image_ops import (Classifier, ConvBN,
                                   FactorizedReduction, Pool3x3, channel_axis)
from src.errors import UserError


@dataclasses.dataclass
class MacroConfig:
    """Sizes and options of a macro child (the reference's constructor
    arguments that shape the network)."""
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
        if op in (0, 1, 2, 3):
            k = 3 if op in (0, 1) else 5
            self.conv_1x1 = ConvBN(filters, 1, pre_relu=True, data_format=df,
                                   name="conv_1x1")
            self.conv_kxk = ConvBN(filters, k, pre_relu=True,
                                   separable=separable and op in (1, 3),
                                   data_format=df,
                                   name="conv_{0}x{0}".format(k))
            self.op_layers = [self.conv_1x1, self.conv_kxk]
        else:
            self.conv_1 = ConvBN(filters, 1, post_relu=True, data_format=df,
                                 name="conv_1")
            self.pool = Pool3x3("avg" if op == 4 else "max", data_format=df)
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


class MacroChild(keras.layers.Layer):
    """The macro child network: images [N, 32, 32, 3] (NHWC, normalised) ->
    logits [N, 10]. With `data_format="NCHW"` it transposes its input and
    computes in NCHW."""

    def __init__(self, cfg, name="child", **kwargs):
        super().__init__(name=name, **kwargs)
        cfg.validate()
        if cfg.fixed_arc is None:
            raise NotImplementedError(
                "the macro search child is not part of this build yet")
        if not cfg.whole_channels:
            raise UserError(
                "a fixed macro arc without whole channels is not supported "
                "yet: pass --controller_search_whole_channels")
        self.cfg = cfg
        df = cfg.data_format
        self.pool_layers = arcs.pool_layers(cfg.num_layers)
        self.stem_conv = ConvBN(cfg.out_filters, 3, data_format=df,
                                name="stem_conv")
        filters = cfg.out_filters
        self.macro_layers = []
        self.pools = {}
        arc = cfg.fixed_arc
        for layer_id in range(cfg.num_layers):
            pool_filters = None
            if layer_id in self.pool_layers:
                pool_filters = 2 * filters
            self.macro_layers.append(FixedMacroLayer(
                layer_id, arc.ops[layer_id], arc.skips[layer_id], filters,
                separable=cfg.fixed_separable, pool_filters=pool_filters,
                data_format=df))
            filters = pool_filters or filters
        self.fc = Classifier(10, keep_prob=cfg.keep_prob, data_format=df,
                             seed=cfg.seed)

    def call(self, images, training=False):
        x = images
        if self.cfg.data_format == "NCHW":
            x = tf.transpose(x, [0, 3, 1, 2])
        x = self.stem_conv(x, training=training)
        layers = [x]
        for layer in self.macro_layers:
            layers = layer(layers, training=training)
        return self.fc(layers[-1], training=training)


def count_params(model):
    """Number of trainable parameters (the reference's `count_model_params`)."""
    return int(sum(int(tf.size(v)) for v in model.trainable_weights))
