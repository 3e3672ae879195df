"""TF1's zero-debiased `assign_moving_average` (`zero_debias=True`), as the
reference's batch norms (CIFAR's `batch_norm`, PTB's `batch_norm`) update
their moving statistics:

    biased     <- biased - (biased - value) (1 - decay)
    local_step <- local_step + 1
    moving     <- biased / (1 - decay ** local_step)

`1 - decay` is converted to float32 first and `decay` is then `1 - that`,
as TF1 computes it. After one update the moving value is the value itself.
"""

import keras
import tensorflow as tf

from src import distribute


class ZeroDebiased:
    """The debiasing state of one moving statistic `moving` of `layer`:
    `<name>_biased` (shaped as the statistic) and `<name>_local_step` ([]),
    zeros, non-trainable (`distribute.moving_weight`: sync-on-read under a
    strategy with several replicas). TF1 names them `<moving>/biased` and
    `<moving>/local_step`."""

    def __init__(self, layer, moving, name, shape):
        zeros = keras.initializers.Zeros()
        self.moving = moving
        self.biased = distribute.moving_weight(layer, name + "_biased", shape,
                                               zeros)
        self.local_step = distribute.moving_weight(
            layer, name + "_local_step", (), zeros)

    def update(self, value, one_minus_decay):
        """One `assign_moving_average` of `value` (one_minus_decay: a
        float32 scalar, `one_minus(decay)`)."""
        new_biased = self.biased - (self.biased - value) * one_minus_decay
        self.biased.assign(new_biased)
        new_step = self.local_step + 1.0
        self.local_step.assign(new_step)
        self.moving.assign(
            new_biased / (1.0 - tf.pow(1.0 - one_minus_decay, new_step)))

    def update_many(self, values, one_minus_decay):
        """The T sequential `update`s of values [T, ...] (in order) in
        closed form: biased_T = d^T biased_0 + (1 - d) sum_t d^(T - 1 - t)
        values_t (t = 0..T-1), local_step += T."""
        c = one_minus_decay
        d = 1.0 - c
        steps = tf.shape(values)[0]
        t_float = tf.cast(steps, tf.float32)
        # Weight of step t (0-based): (1 - d) d^(T - 1 - t).
        ages = tf.cast(tf.range(steps - 1, -1, -1), tf.float32)
        weights = (c * tf.pow(d, ages))[:, None]
        new_biased = (tf.pow(d, t_float) * self.biased
                      + tf.reduce_sum(weights * values, axis=0))
        self.biased.assign(new_biased)
        new_step = self.local_step + t_float
        self.local_step.assign(new_step)
        self.moving.assign(new_biased / (1.0 - tf.pow(d, new_step)))


def one_minus(decay):
    """`1 - decay` as TF1 converts it: a float32 constant."""
    return tf.constant(1.0 - decay, tf.float32)
