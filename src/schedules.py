"""Learning-rate schedules of the reference, as pure functions of the step.

Every function takes the global step (a Python int or an int tensor, the
number of updates applied so far) and returns a float32 scalar tensor, so the
same code serves eager tests, `tf.function` training steps and Keras
optimizers (through `StepSchedule`).
"""

import keras
import tensorflow as tf

from src.errors import UserError

# The reference multiplies by this literal, not by math.pi.
_REFERENCE_PI = 3.1415926


def exponential_decay(step, lr_init, lr_dec_start=0, lr_dec_every=10000,
                      lr_dec_rate=0.1, lr_dec_min=None):
    """Staircase exponential decay, as TF1's `exponential_decay(staircase=True)`.

    lr = lr_init * lr_dec_rate ** floor(max(step - lr_dec_start, 0) / lr_dec_every),
    floored at `lr_dec_min` when given. `lr_dec_every` is in steps.
    """
    step = tf.cast(step, tf.int64)
    decays = tf.maximum(step - lr_dec_start, 0) // int(lr_dec_every)
    lr = tf.constant(lr_init, tf.float32) * tf.pow(
        tf.constant(lr_dec_rate, tf.float32), tf.cast(decays, tf.float32))
    if lr_dec_min is not None:
        lr = tf.maximum(lr, tf.constant(lr_dec_min, tf.float32))
    return lr


def cosine_restart_state(epoch, lr_T_0, lr_T_mul):
    """The reference's `last_reset` and `T_i` once `epoch` has been reached.

    The reference keeps them in variables and restarts when
    epoch - last_reset >= T_i (last_reset <- epoch, T_i <- T_i * T_mul); since
    it checks at every step, restarts land exactly at epochs T_0,
    T_0 + T_0 T_mul, ... Returns int64 scalars (last_reset, T_i).
    """
    epoch = tf.cast(epoch, tf.int64)
    last_reset = tf.constant(0, tf.int64)
    t_i = tf.constant(int(lr_T_0), tf.int64)
    t_mul = tf.constant(int(lr_T_mul), tf.int64)

    def cond(last_reset, t_i):
        return epoch - last_reset >= t_i

    def body(last_reset, t_i):
        return last_reset + t_i, t_i * t_mul

    return tf.while_loop(cond, body, (last_reset, t_i))


def cosine_with_restarts(step, num_train_batches, lr_max, lr_min, lr_T_0,
                         lr_T_mul):
    """Cosine annealing with warm restarts measured in epochs (SGDR).

    lr = lr_min + (lr_max - lr_min) / 2 * (1 + cos(pi * T_cur / T_i)), with
    T_cur = epoch - last_reset and epoch = step // num_train_batches.

    Kept from the reference: on the first step of a restart epoch it divides
    the old T_cur (= old T_i) by the already multiplied T_i, so that one step
    runs at the rate cos(pi / T_mul) (the midpoint for T_mul = 2) before the
    next step starts at lr_max. Running the reference's own graph in TF1 mode
    shows this (see tests/test_schedules.py).
    """
    step = tf.cast(step, tf.int64)
    epoch = step // int(num_train_batches)
    last_reset, t_i = cosine_restart_state(epoch, lr_T_0, lr_T_mul)
    restart_step = tf.logical_and(
        tf.logical_and(last_reset > 0, tf.equal(epoch, last_reset)),
        tf.equal(step % int(num_train_batches), 0))
    t_cur = tf.where(restart_step, t_i // int(lr_T_mul), epoch - last_reset)
    rate = (tf.cast(t_cur, tf.float32) / tf.cast(t_i, tf.float32)
            * _REFERENCE_PI)
    half_range = tf.constant(0.5 * (lr_max - lr_min), tf.float32)
    return tf.constant(lr_min, tf.float32) + half_range * (1.0 + tf.cos(rate))


def with_warmup(lr, step, lr_warmup_val=None, lr_warmup_steps=100):
    """`lr_warmup_val` for the first `lr_warmup_steps` steps, then `lr`."""
    if lr_warmup_val is None:
        return lr
    step = tf.cast(step, tf.int64)
    return tf.where(step < lr_warmup_steps,
                    tf.constant(lr_warmup_val, tf.float32), lr)


class LrConfig:
    """The learning-rate settings of one model, as the reference's
    `get_train_ops` receives them (`lr_dec_every` already in steps)."""

    def __init__(self, lr_init=0.1, lr_dec_start=0, lr_dec_every=10000,
                 lr_dec_rate=0.1, lr_dec_min=None, lr_cosine=False,
                 lr_max=None, lr_min=None, lr_T_0=None, lr_T_mul=None,
                 num_train_batches=None, lr_warmup_val=None,
                 lr_warmup_steps=100):
        if lr_cosine:
            missing = [n for n, v in (("lr_max", lr_max), ("lr_min", lr_min),
                                      ("lr_T_0", lr_T_0),
                                      ("lr_T_mul", lr_T_mul)) if v is None]
            if missing:
                raise UserError(
                    "the cosine learning rate (--child_lr_cosine) needs "
                    + ", ".join("--child_" + m for m in missing)
                    + ": set them or drop --child_lr_cosine")
        self.lr_init = lr_init
        self.lr_dec_start = lr_dec_start
        self.lr_dec_every = lr_dec_every
        self.lr_dec_rate = lr_dec_rate
        self.lr_dec_min = lr_dec_min
        self.lr_cosine = lr_cosine
        self.lr_max = lr_max
        self.lr_min = lr_min
        self.lr_T_0 = lr_T_0
        self.lr_T_mul = lr_T_mul
        self.num_train_batches = num_train_batches
        self.lr_warmup_val = lr_warmup_val
        self.lr_warmup_steps = lr_warmup_steps


def learning_rate(step, cfg):
    """The reference's learning rate at `step` for the settings `cfg`."""
    if cfg.lr_cosine:
        lr = cosine_with_restarts(step, cfg.num_train_batches, cfg.lr_max,
                                  cfg.lr_min, cfg.lr_T_0, cfg.lr_T_mul)
    else:
        lr = exponential_decay(step, cfg.lr_init, cfg.lr_dec_start,
                               cfg.lr_dec_every, cfg.lr_dec_rate,
                               cfg.lr_dec_min)
    return with_warmup(lr, step, cfg.lr_warmup_val, cfg.lr_warmup_steps)


class StepSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Adapts `learning_rate(step, cfg)` to a Keras optimizer.

    Keras calls it with the optimizer's `iterations`, i.e. the number of
    updates applied before this one: the step the reference reads.
    """

    def __init__(self, cfg):
        self.cfg = cfg

    def __call__(self, step):
        return learning_rate(step, self.cfg)

    def get_config(self):
        return dict(vars(self.cfg))

