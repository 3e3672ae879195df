"""Mixed precision (`--mixed_precision`) and the choice of XLA
(`--jit_compile`).

Mixed precision is Keras' `mixed_float16` policy: set it with
`set_mixed_precision(True)` before any model is built. The children's
layers then keep float32 variables and compute in float16 (inside a layer's
call Keras casts float inputs and reads float variables as float16, raw
`tf.*` ops included). What stays float32: every batch norm (its input is
cast to float32, its variables are read as float32, its output is cast back
to the layer's dtype), the classifiers' pooling and logits, the PTB child's
tied-embedding logits and carried state, the losses and the L2 and
activation regularisers. The controllers are float32: build them inside
`float32_policy()`.

The trainers scale the loss (`DynamicLossScale`, the rule of Keras'
`LossScaleOptimizer`, kept outside the optimiser so that the gradients are
unscaled before their norm is reported and before clipping;
`train_ops.apply_update` applies it): a step whose
scaled gradients are not finite changes no weight and halves the scale; the
scale doubles after every `growth_steps` finite steps in a row.

XLA: `resolve_jit_compile` turns the flag's value (auto, true, false) into a
bool; auto is what measured faster on CPU for each (search space, mode)
(BUILD.md, Benchmarks).
"""

import contextlib

import keras
import tensorflow as tf

from src import train_ops
from src.errors import UserError

MIXED_POLICY = "mixed_float16"

# What `--jit_compile=auto` chooses, per (space, searching): the faster
# one measured on the 2-core CPU machine (src.bench configurations, both
# variants built in one process and their steps interleaved, median of 20
# after 5 warm-up steps; BUILD.md). XLA / plain seconds per step:
# ptb_fixed_cpu 0.54 (0.034 / 0.062), macro_fixed_cpu 1.2-1.26 (0.093 /
# 0.074), micro_fixed_cpu 7.2-7.3 (1.23 / 0.17), macro_search_cpu 8.9
# (0.56 / 0.063), ptb_search_cpu 93 (18 / 0.19). The micro search step
# (and the per-channel macro one) cannot be compiled at all
# (`xla_unsupported`).
AUTO_JIT_COMPILE = {
    ("macro", False): False,
    ("macro", True): False,
    ("micro", False): False,
    ("micro", True): False,
    ("ptb", False): True,
    ("ptb", True): False,
}

SPACES = ("macro", "micro", "ptb")


def set_mixed_precision(enabled):
    """Sets Keras' global dtype policy: `mixed_float16` when enabled, else
    `float32`. Call it before building any model (a layer takes the policy
    in force when it is constructed). Returns the previous policy's name."""
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(
        MIXED_POLICY if enabled else "float32")
    return previous


def mixed_precision_enabled():
    """Whether the global policy computes in float16."""
    return keras.mixed_precision.global_policy().compute_dtype == "float16"


@contextlib.contextmanager
def policy_scope(name):
    """Within the block Keras' global policy is `name`; afterwards the one
    before, whatever happens."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def mixed_precision_scope(enabled):
    """`set_mixed_precision(enabled)` for the duration of a block (a run's
    `train()`), the previous policy restored afterwards."""
    return policy_scope(MIXED_POLICY if enabled else "float32")


def float32_policy():
    """`policy_scope("float32")`: build the controllers (and their
    REINFORCE trainers) inside it so that they compute in float32 under a
    mixed run."""
    return policy_scope("float32")


def float32(x):
    """x as a float32 tensor (no-op when it already is one)."""
    return tf.cast(x, tf.float32)


def xla_unsupported(searching, space, whole_channels=True):
    """Why XLA cannot compile this training step, or None. The micro search
    child's final_conv and the per-channel macro search child's branches
    have a data-dependent number of channels (dynamic convolution kernels,
    which XLA rejects)."""
    if searching and space == "micro":
        return ("the micro search step cannot be compiled with XLA (its "
                "final_conv mixes an arc-dependent number of nodes)")
    if searching and space == "macro" and not whole_channels:
        return ("the per-channel macro search step cannot be compiled with "
                "XLA (its branches have arc-dependent channel counts)")
    return None


def resolve_jit_compile(flag_value, searching, space, whole_channels=True):
    """The `--jit_compile` flag's value -> whether to compile the training
    step with XLA (a bool).

    flag_value: "auto", "true", "false" (or a bool; None means auto);
    searching: whether the child's arc is sampled (search mode);
    space: "macro", "micro" or "ptb"; whole_channels: the macro search
    child's mode.
    auto: the faster choice measured for that space and mode
    (AUTO_JIT_COMPILE). "true" where XLA cannot compile the step
    (`xla_unsupported`) is a UserError.
    """
    if space not in SPACES:
        raise ValueError("unknown search space {!r}: use one of {}".format(
            space, ", ".join(SPACES)))
    if flag_value is None:
        flag_value = "auto"
    if isinstance(flag_value, bool):
        value = "true" if flag_value else "false"
    else:
        value = str(flag_value).strip().lower()
    if value == "auto":
        return AUTO_JIT_COMPILE[(space, bool(searching))]
    if value == "false":
        return False
    if value != "true":
        raise UserError("--jit_compile={!r} is unknown: use auto, true or "
                        "false".format(flag_value))
    problem = xla_unsupported(searching, space, whole_channels)
    if problem:
        raise UserError("--jit_compile=true: {}; use --jit_compile=auto or "
                        "false".format(problem))
    return True


# ------------------------------------------------------------ loss scaling

def check_loss_scaling(model, mixed_precision):
    """A trainer's guard: a model computing in float16 must be trained
    with loss scaling (small gradients would underflow to zero)."""
    if getattr(model, "compute_dtype", "float32") == "float16" and \
            not mixed_precision:
        raise ValueError(
            "the model was built under the mixed_float16 policy: pass "
            "mixed_precision=True to its trainer (loss scaling)")

def _is_finite(grads):
    checks = []
    for g in grads:
        if g is None:
            continue
        checks.append(tf.reduce_all(tf.math.is_finite(
            train_ops.gradient_values(g))))
    if not checks:
        return tf.constant(True)
    return tf.reduce_all(tf.stack(checks))


def _divide(g, scale):
    if g is None:
        return None
    return train_ops.map_gradient_values(
        g, lambda t: t / tf.cast(scale, t.dtype))


class DynamicLossScale(tf.Module):
    """Dynamic loss scaling with the rule of Keras' `LossScaleOptimizer`
    (same defaults): the loss is multiplied by `scale` before
    differentiating and the gradients divided by it; a step whose gradients
    are not finite is skipped and halves the scale; after `growth_steps`
    finite steps in a row the scale doubles.

    Unlike wrapping the optimiser, the trainer sees the unscaled gradients
    (for the reported norm and for clipping), and a skipped step still
    counts in the optimiser's `iterations` (the run's global step stays the
    number of batches seen; only the update is dropped).

    Variables (checkpoint them for an exact resume): `scale` (float32) and
    `good_steps` (int64, finite steps since the last change).
    """

    def __init__(self, initial_scale=2.0 ** 15, growth_steps=2000,
                 name="loss_scale"):
        super().__init__(name=name)
        self.growth_steps = int(growth_steps)
        self.scale = tf.Variable(float(initial_scale), dtype=tf.float32,
                                 trainable=False, name="scale")
        self.good_steps = tf.Variable(0, dtype=tf.int64, trainable=False,
                                      name="good_steps")

    def scale_loss(self, loss):
        return loss * tf.cast(self.scale, loss.dtype)

    def unscale(self, grads):
        """(gradients divided by the scale, whether all are finite)."""
        finite = _is_finite(grads)
        return [_divide(g, self.scale) for g in grads], finite

    def apply_if_finite(self, finite, apply_fn, optimizer):
        """Runs `apply_fn()` (the optimiser's update and whatever goes with
        it) when `finite`, then updates the scale; otherwise only counts
        the step in `optimizer.iterations` and halves the scale. Returns
        the boolean `skipped`."""

        def apply():
            apply_fn()
            grow = self.good_steps + 1 >= self.growth_steps
            self.scale.assign(tf.where(grow, self.scale * 2.0, self.scale))
            self.good_steps.assign(tf.where(
                grow, tf.constant(0, tf.int64), self.good_steps + 1))
            return tf.constant(False)

        def skip():
            optimizer.iterations.assign_add(1)
            self.scale.assign(self.scale * 0.5)
            self.good_steps.assign(0)
            return tf.constant(True)

        return tf.cond(finite, apply, skip)


# A skipped step whose scale was already at most this is not an overflow:
# its gradients are not finite at any scale.
MIN_LOSS_SCALE = 1.0


def values_to_check(out):
    """What of a training step's output (numpy values) must be finite for
    the run to go on: the loss, and the gradient norm unless the step was a
    loss-scaling skip (mixed precision: the update was dropped and the
    scale halved, as it should be) at a scale above MIN_LOSS_SCALE."""
    values = {"loss": out["loss"]}
    if not (bool(out.get("skipped", False))
            and float(out["loss_scale"]) > MIN_LOSS_SCALE):
        values["gradient norm"] = out["grad_norm"]
    return values


def apply_scaled_train_step(tape, loss, variables, optimizer, cfg,
                            loss_scale):
    """`train_ops.apply_train_step` under loss scaling (kept for its
    callers; the update is `train_ops.apply_update`). Returns (learning
    rate, gradient norm before clipping, skipped)."""
    return train_ops.apply_train_step(tape, loss, variables, optimizer, cfg,
                                      loss_scale)[:3]
