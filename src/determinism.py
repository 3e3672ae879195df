"""`--deterministic`: the same --seed gives the same numbers run after run."""

import tensorflow as tf


def enable_determinism():
    """Deterministic TensorFlow ops, and no Grappler arithmetic
    optimisation: that pass regroups sums of many terms (the gradient of a
    weight used at many decisions, as the micro controller's attention
    weights are) in an order that changes from process to process, so the
    same run's gradients differed in their last bits
    (`enable_op_determinism` does not cover graph rewrites). Call before any
    function is traced."""
    tf.config.experimental.enable_op_determinism()
    tf.config.optimizer.set_experimental_options(
        {"arithmetic_optimization": False})


def loop_parallel_iterations():
    """`parallel_iterations` for a recurrent tf.while_loop: TensorFlow's
    default 10, or 1 under op determinism (`--deterministic`). With
    iterations overlapping, the enas_lm fixed child's loop gave its outputs
    in two or three variants a few ulps apart over 40-120 calls on the same
    inputs, so its --deterministic runs parted; one iteration at a time
    they repeat to the bit, but the enas_lm search step is 10% slower and
    the fixed one 1-5% (BUILD.md, Reliability).

    TensorFlow has no public getter for op determinism (only the setter,
    tf.config.experimental.enable_op_determinism), so this asks its
    internal config module."""
    from tensorflow.python.framework import config as tf_config
    return 1 if tf_config.is_op_determinism_enabled() else 10
