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
