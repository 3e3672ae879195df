"""What every child class shares, fixed or search, in every space.

A space's child is two classes over one base (BUILD.md, Architecture): the
fixed child, one architecture built from `cfg.fixed_arc`, and the search
child, the shared weights of every architecture with the arc given at call
time. `Child` holds what all of them have: the config (checked and kept as
`cfg`) and the class attribute `searching` the trainers read. `CifarChild`
adds what the CIFAR-10 children share: the stem's NCHW transpose and
`takes_step`.
"""

import keras
import tensorflow as tf


class Child(keras.layers.Layer):
    """A child network built from a child config `cfg` (validated, then
    kept as `self.cfg`). Subclasses set `searching`: False for the network
    of `cfg.fixed_arc`, True for the search network (no fixed arc; `call`
    takes the arc)."""

    searching = None

    def __init__(self, cfg, name, **kwargs):
        super().__init__(name=name, **kwargs)
        self.check_config(cfg)
        self.cfg = cfg

    def check_config(self, cfg):
        """UserError unless this child can be built from `cfg` (its own
        `validate()`); ValueError for a config of the other class."""
        cfg.validate()
        if self.searching and cfg.fixed_arc is not None:
            raise ValueError("{} takes no cfg.fixed_arc: build the space's "
                             "fixed child".format(type(self).__name__))
        if not self.searching and cfg.fixed_arc is None:
            raise ValueError("{} needs cfg.fixed_arc: build the space's "
                             "search child".format(type(self).__name__))


class CifarChild(Child):
    """A CIFAR-10 child: images [N, H, W, 3] (NHWC, normalised) -> a
    `ChildOutput`. `stem_conv` (set by the subclass) is its first layer;
    `takes_step`: whether `call` takes the global step (drop-path's
    progress)."""

    takes_step = False
    # What the export's signatures feed it (src.export).
    serving_inputs = "images"

    def stem(self, images, training):
        """The stem's output; with `cfg.data_format="NCHW"` the images are
        transposed first and the network computes in NCHW."""
        x = images
        if self.cfg.data_format == "NCHW":
            x = tf.transpose(x, [0, 3, 1, 2])
        return self.stem_conv(x, training=training)
