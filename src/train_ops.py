"""The reference's `get_train_ops`: L2, gradient norm, clipping, optimisers.

`apply_train_step` is what every child and controller step calls after its
forward pass; the pieces are separate functions so they test on their own.
"""

import dataclasses

import keras
import tensorflow as tf

from src import schedules
from src.errors import UserError

CLIP_MODES = (None, "global", "norm")
OPTIM_ALGOS = ("momentum", "sgd", "adam")


class TF1Momentum(keras.optimizers.Optimizer):
    """Momentum SGD in TF1's `MomentumOptimizer` form, Nesterov optional.

    accum <- momentum * accum + g
    w     <- w - lr * g - lr * momentum * accum      (Nesterov)
    w     <- w - lr * accum                          (plain)

    Keras' SGD keeps the velocity already multiplied by the learning rate,
    which differs from TF1 as soon as the learning rate changes (every epoch
    under the cosine schedule); the reference's numbers need this form.
    """

    def __init__(self, learning_rate, momentum=0.9, nesterov=True,
                 name="Momentum", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.momentum = momentum
        self.nesterov = nesterov

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self.accumulators = self.add_optimizer_variables(var_list, "momentum")

    def update_step(self, gradient, variable, learning_rate):
        lr = tf.cast(learning_rate, variable.dtype)
        gradient = tf.cast(gradient, variable.dtype)
        accum = self.accumulators[self._get_variable_index(variable)]
        new_accum = self.momentum * accum + gradient
        self.assign(accum, new_accum)
        if self.nesterov:
            self.assign_sub(variable, lr * gradient + lr * self.momentum
                            * new_accum)
        else:
            self.assign_sub(variable, lr * new_accum)

    def get_config(self):
        config = super().get_config()
        config.update(momentum=self.momentum, nesterov=self.nesterov)
        return config


def make_optimizer(optim_algo, learning_rate, name=None):
    """The reference's optimisers: Nesterov momentum 0.9, SGD, or Adam with
    beta1 = 0 and epsilon = 1e-3 (Keras' Adam is TF1's update rule)."""
    if optim_algo == "momentum":
        return TF1Momentum(learning_rate, 0.9, nesterov=True,
                           name=name or "Momentum")
    if optim_algo == "sgd":
        return keras.optimizers.SGD(learning_rate, name=name or "SGD")
    if optim_algo == "adam":
        return keras.optimizers.Adam(learning_rate, beta_1=0.0,
                                     beta_2=0.999, epsilon=1e-3,
                                     name=name or "Adam")
    raise UserError("unknown optimiser {!r}: use one of {}".format(
        optim_algo, ", ".join(OPTIM_ALGOS)))


def l2_loss(variables):
    """Sum of squares of every variable (the reference's L2 term before
    multiplying by l2_reg)."""
    return tf.add_n([tf.reduce_sum(tf.square(v)) for v in variables])


def clip_gradients(grads, clip_mode, grad_bound):
    """Clip as the reference's `clip_mode`: "global" by the global norm,
    "norm" each tensor by its own norm, None not at all.

    The reference's "norm" mode computes the clipped tensors and then applies
    the unclipped ones; here the clipped ones are returned (BUILD.md,
    Deviations).
    """
    if clip_mode is None:
        return list(grads)
    if grad_bound is None:
        raise UserError("clipping gradients needs a bound: set --child_grad_bound")
    if clip_mode == "global":
        clipped, _ = tf.clip_by_global_norm(grads, grad_bound)
        return clipped
    if clip_mode == "norm":
        return [None if g is None else tf.clip_by_norm(g, grad_bound)
                for g in grads]
    raise UserError("unknown clip mode {!r}: use global or norm".format(
        clip_mode))


@dataclasses.dataclass
class TrainConfig:
    """What `get_train_ops` receives besides the loss and the variables."""
    l2_reg: float = 1e-4
    clip_mode: str = None
    grad_bound: float = None
    optim_algo: str = "momentum"
    lr: schedules.LrConfig = dataclasses.field(
        default_factory=schedules.LrConfig)


def apply_train_step(tape, loss, variables, optimizer, cfg):
    """Adds L2, differentiates, clips and applies one update.

    Call with the tape still recording (the L2 term is added under it).
    Returns (learning rate used, global gradient norm before clipping), as the
    reference reports them.
    """
    with tape:
        total = loss
        if cfg.l2_reg > 0:
            total = loss + cfg.l2_reg * l2_loss(variables)
    return apply_gradients(tape.gradient(total, variables), variables,
                           optimizer, cfg, loss)


def apply_gradients(grads, variables, optimizer, cfg, loss):
    """The update from the full objective's gradients: global norm,
    clipping, the learning rate of this step, and the update unless the
    loss or the norm is not finite. Returns (learning rate, global gradient
    norm before clipping)."""
    grad_norm = tf.linalg.global_norm(grads)
    grads = clip_gradients(grads, cfg.clip_mode, cfg.grad_bound)
    lr = schedules.learning_rate(optimizer.iterations, cfg.lr)
    apply_if_finite(optimizer, grads, variables, loss, grad_norm)
    return lr, grad_norm


def apply_if_finite(optimizer, grads, variables, *values):
    """Applies the update only when every value in `values` (loss, gradient
    norm, reward, ...) is finite; otherwise only the step counter moves, so
    a NaN never reaches the weights and the data order stays aligned with
    the step (the entry points then stop or, with --nan_policy=skip_arc, go
    on). Returns whether the update was applied."""
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(
        tf.cast(v, tf.float32))) for v in values])

    def apply():
        optimizer.apply_gradients(zip(grads, variables))
        return tf.constant(True)

    def skip():
        optimizer.iterations.assign_add(1)
        return tf.constant(False)

    return tf.cond(finite, apply, skip)
