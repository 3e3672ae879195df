"""The reference's `get_train_ops`: L2, gradient norm, clipping, optimisers.

`apply_update` is the one update every child trainer and REINFORCE apply
(norm, clipping, learning rate, the update unless a value is not finite,
loss scaling); `apply_train_step` adds L2 and differentiates first. The
pieces are separate functions so they test on their own.
"""

import dataclasses
import typing

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

    The update runs TF1's own kernels, as the reference's optimiser does:
    `ResourceApplyMomentum` for a dense gradient, one op per variable where
    the same rule written in tensor ops takes about eight (measured on an
    update of 672 variables: half the graph, a fifth of its first call's
    time; BUILD.md). A gradient
    of gathered rows (`tf.IndexedSlices`) goes, with duplicate rows summed,
    to `ResourceSparseApplyMomentum`: as in TF1, only those rows of the
    weight and its accumulator move.
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
        dtype = variable.dtype
        accum = self.accumulators[self._get_variable_index(variable)]
        if isinstance(variable, keras.Variable):
            variable = variable.value
        args = dict(var=variable.handle, accum=accum.value.handle,
                    lr=tf.cast(learning_rate, dtype),
                    momentum=tf.constant(self.momentum, dtype),
                    use_nesterov=self.nesterov)
        if isinstance(gradient, tf.IndexedSlices):
            rows, where = tf.unique(gradient.indices)
            values = tf.math.unsorted_segment_sum(
                tf.cast(gradient.values, dtype), where, tf.size(rows))
            tf.raw_ops.ResourceSparseApplyMomentum(grad=values, indices=rows,
                                                   **args)
        else:
            tf.raw_ops.ResourceApplyMomentum(grad=tf.cast(gradient, dtype),
                                             **args)

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
    multiplying by l2_reg).

    Twice the sum of `L2Loss` ops (half a sum of squares each): one op per
    variable and one in its gradient, where a square and a sum take about
    six; the same value and gradient bitwise (halving is exact)."""
    return 2.0 * tf.add_n([tf.nn.l2_loss(v) for v in variables])


def gradient_values(grad):
    """A gradient's values (an IndexedSlices' rows as they are)."""
    return grad.values if isinstance(grad, tf.IndexedSlices) else grad


def map_gradient_values(grad, fn):
    """fn applied to a gradient's values, an IndexedSlices kept one."""
    if isinstance(grad, tf.IndexedSlices):
        return tf.IndexedSlices(fn(grad.values), grad.indices,
                                grad.dense_shape)
    return fn(grad)


def half_squared_norms(grads):
    """[number of gradients that are not None]: half the sum of squares of
    each (`L2Loss`, the terms `tf.linalg.global_norm` sums)."""
    return tf.stack([tf.nn.l2_loss(gradient_values(g)) for g in grads
                     if g is not None])


def global_norm(halves):
    """The global norm from `half_squared_norms`, as
    `tf.linalg.global_norm` computes it."""
    return tf.sqrt(tf.reduce_sum(halves) * 2.0)


def clip_gradients(grads, clip_mode, grad_bound, halves=None):
    """Clip as the reference's `clip_mode`: "global" by the global norm,
    "norm" each tensor by its own norm, None not at all. `halves`: their
    `half_squared_norms`, if already taken.

    Both give `tf.clip_by_global_norm`'s and `tf.clip_by_norm`'s values
    bitwise, from one vector of squared norms: "norm" mode clips each
    gradient with a multiply and a divide (t bound / max(|t|, bound), as
    `tf.clip_by_norm`) where `tf.clip_by_norm` takes about ten ops a
    tensor, a third of a micro search step's graph for its 672 variables
    (BUILD.md, Benchmarks).

    The reference's "norm" mode computes the clipped tensors and then applies
    the unclipped ones; here the clipped ones are returned (BUILD.md,
    Deviations).
    """
    grads = list(grads)
    if clip_mode is None:
        return grads
    if grad_bound is None:
        raise UserError("clipping gradients needs a bound: set --child_grad_bound")
    if clip_mode not in ("global", "norm"):
        raise UserError("unknown clip mode {!r}: use global or norm".format(
            clip_mode))
    if halves is None:
        halves = half_squared_norms(grads)
    if clip_mode == "global":
        clipped, _ = tf.clip_by_global_norm(grads, grad_bound,
                                            use_norm=global_norm(halves))
        return clipped
    squares = halves * 2.0
    positive = squares > 0
    # tf.clip_by_norm's norm: the square root only of a positive sum.
    norms = tf.where(positive, tf.sqrt(tf.where(positive, squares, 1.0)),
                     squares)
    # One dtype throughout: tf.stack took every gradient's.
    bound = tf.constant(grad_bound, squares.dtype)
    divisors = iter(tf.unstack(tf.maximum(norms, bound)))
    clipped = []
    for g in grads:
        if g is None:
            clipped.append(None)
            continue
        divisor = next(divisors)
        clipped.append(map_gradient_values(
            g, lambda t: t * bound / divisor))
    return clipped


@dataclasses.dataclass
class TrainConfig:
    """What `get_train_ops` receives besides the loss and the variables."""
    l2_reg: float = 1e-4
    clip_mode: str = None
    grad_bound: float = None
    optim_algo: str = "momentum"
    lr: schedules.LrConfig = dataclasses.field(
        default_factory=schedules.LrConfig)


class Update(typing.NamedTuple):
    """What one update reports: this step's learning rate, the global norm
    of the (unscaled) gradients before clipping, whether the update was
    skipped (bool tensor: no weight changed, only the step counter moved),
    and under loss scaling the scale this step used (else None)."""
    lr: tf.Tensor
    grad_norm: tf.Tensor
    skipped: tf.Tensor
    loss_scale: tf.Tensor = None


def all_finite(values):
    """Whether every element of every value is finite (a bool tensor)."""
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(
        tf.cast(v, tf.float32))) for v in values])


def norm_clip_lr(grads, optimizer, lr_cfg, clip_mode=None, grad_bound=None):
    """The pieces of an update before it is applied: (the gradients clipped
    as `clip_mode` says, their global norm before clipping, the learning
    rate of this step, `schedules.learning_rate(optimizer.iterations,
    lr_cfg)`)."""
    halves = half_squared_norms(grads)
    grad_norm = global_norm(halves)
    grads = clip_gradients(grads, clip_mode, grad_bound, halves)
    lr = schedules.learning_rate(optimizer.iterations, lr_cfg)
    return grads, grad_norm, lr


def apply_update(grads, variables, optimizer, lr_cfg, clip_mode=None,
                 grad_bound=None, check=(), loss_scale=None,
                 after_apply=None):
    """The one update every trainer and REINFORCE apply: global norm,
    clipping, this step's learning rate, then the optimiser's update, or
    only the step counter's move when a value is not finite.

    grads: the gradients of the whole objective (L2 included) for
      `variables`; under loss scaling (`loss_scale`, a
      `precision.DynamicLossScale`) of the scaled objective: they are
      unscaled here, before their norm is taken.
    check: values that must be finite for the update to apply (the loss,
      the reward, ...); the gradient norm is always checked. Without loss
      scaling a non-finite one skips the update (the step counter still
      moves, so the data order stays aligned with the step; the entry
      points then stop or, with --nan_policy=skip_arc, go on). Under loss
      scaling the update is gated by the scaled gradients being finite
      (`DynamicLossScale.apply_if_finite`: a skip also halves the scale).
    after_apply: called right after the optimiser's update, inside the
      applied branch (the PTB trainer's moving average of the weights).
    Returns an `Update`.
    """
    if loss_scale is not None:
        scale = tf.identity(loss_scale.scale)
        grads, finite = loss_scale.unscale(grads)
    grads, grad_norm, lr = norm_clip_lr(grads, optimizer, lr_cfg, clip_mode,
                                        grad_bound)

    def update():
        optimizer.apply_gradients(zip(grads, variables))
        if after_apply is not None:
            after_apply()

    if loss_scale is not None:
        skipped = loss_scale.apply_if_finite(finite, update, optimizer)
        return Update(lr, grad_norm, skipped, scale)

    def apply():
        update()
        return tf.constant(False)

    def skip():
        optimizer.iterations.assign_add(1)
        return tf.constant(True)

    skipped = tf.cond(all_finite(list(check) + [grad_norm]), apply, skip)
    return Update(lr, grad_norm, skipped)


def apply_train_step(tape, loss, variables, optimizer, cfg, loss_scale=None):
    """Adds L2 (`cfg.l2_reg`), differentiates (the scaled objective under
    loss scaling), and applies one update (`apply_update`, with `cfg`'s
    clipping and learning rate, `loss` checked). Call with the tape still
    recording (the L2 term and the scaling are added under it). Returns an
    `Update`."""
    with tape:
        total = tf.cast(loss, tf.float32)  # no-op on a float32 loss
        if cfg.l2_reg > 0:
            total = total + cfg.l2_reg * l2_loss(variables)
        if loss_scale is not None:
            total = loss_scale.scale_loss(total)
    return apply_update(tape.gradient(total, variables), variables,
                        optimizer, cfg.lr, cfg.clip_mode, cfg.grad_bound,
                        check=[loss], loss_scale=loss_scale)
