"""L2, clipping and the optimisers of the reference's get_train_ops."""

import numpy as np
import pytest
import tensorflow as tf

from src import schedules, train_ops
from src.errors import UserError


def test_l2_loss_is_the_sum_of_squares():
    vs = [tf.Variable([1.0, 2.0]), tf.Variable([[3.0]])]
    assert float(train_ops.l2_loss(vs)) == pytest.approx(14.0)


def test_global_clipping_scales_all_gradients_by_the_global_norm():
    grads = [tf.constant([3.0, 0.0]), tf.constant([0.0, 4.0])]
    out = train_ops.clip_gradients(grads, "global", 1.0)
    np.testing.assert_allclose(out[0], [0.6, 0.0], rtol=1e-6)
    np.testing.assert_allclose(out[1], [0.0, 0.8], rtol=1e-6)


def test_norm_clipping_clips_each_tensor_and_is_applied():
    grads = [tf.constant([3.0, 4.0]), tf.constant([0.3, 0.4])]
    out = train_ops.clip_gradients(grads, "norm", 1.0)
    np.testing.assert_allclose(out[0], [0.6, 0.8], rtol=1e-6)
    np.testing.assert_allclose(out[1], [0.3, 0.4], rtol=1e-6)
    # The reference computes these and applies the unclipped ones; we apply
    # the clipped ones: one SGD step moves the weight by exactly lr * clipped.
    var = tf.Variable([0.0, 0.0])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(var * tf.constant([3.0, 4.0]))
    cfg = train_ops.TrainConfig(l2_reg=0.0, clip_mode="norm", grad_bound=1.0,
                                optim_algo="sgd",
                                lr=schedules.LrConfig(lr_init=1.0))
    opt = train_ops.make_optimizer("sgd", 1.0)
    update = train_ops.apply_train_step(tape, loss, [var], opt, cfg)
    lr, gn = update.lr, update.grad_norm
    assert float(gn) == pytest.approx(5.0)  # reported before clipping
    np.testing.assert_allclose(var.numpy(), [-0.6, -0.8], rtol=1e-6)


def _gradients(seed=0):
    """Gradients of a micro child's shapes and scales, one all zeros, one
    a None (a variable the loss does not read), one gathered rows."""
    rng = np.random.default_rng(seed)
    dense = [tf.constant(rng.normal(size=shape) * scale, tf.float32)
             for shape, scale in (((3, 3, 16, 16), 0.5), ((16,), 1e-3),
                                  ((1, 1, 64, 64), 3.0), ((640, 10), 0.1))]
    rows = tf.IndexedSlices(tf.constant(rng.normal(size=(4, 8)) * 2.0,
                                        tf.float32),
                            tf.constant([3, 0, 3, 9]), tf.constant([10, 8]))
    return dense + [tf.zeros([5, 5]), None, rows]


@pytest.mark.parametrize("bound", [0.5, 5.0, 100.0])
def test_clipping_equals_tensorflow_s_clip_functions_bitwise(bound):
    grads = _gradients()

    @tf.function
    def clip(mode):
        return train_ops.clip_gradients(grads, mode, bound)

    def dense(g):
        return tf.convert_to_tensor(g.values if isinstance(
            g, tf.IndexedSlices) else g)

    want = [None if g is None else tf.clip_by_norm(g, bound) for g in grads]
    for ours, theirs in zip(clip("norm"), want):
        if theirs is None:
            assert ours is None
            continue
        assert isinstance(ours, tf.IndexedSlices) == isinstance(
            theirs, tf.IndexedSlices)
        np.testing.assert_array_equal(dense(ours), dense(theirs))
    want, _ = tf.clip_by_global_norm(grads, bound)
    for ours, theirs in zip(clip("global"), want):
        if theirs is None:
            assert ours is None
            continue
        np.testing.assert_array_equal(dense(ours), dense(theirs))
    halves = train_ops.half_squared_norms(grads)
    assert (train_ops.global_norm(halves).numpy()
            == tf.linalg.global_norm(grads).numpy())


def test_l2_term_has_the_square_sum_s_value_and_gradients_bitwise():
    variables = [tf.Variable(g) for g in _gradients(1)[:5]]

    def value_and_grads(term):
        with tf.GradientTape() as tape:
            total = 1e-4 * term(variables)
        return total, tape.gradient(total, variables)

    ours, ours_g = value_and_grads(train_ops.l2_loss)
    theirs, theirs_g = value_and_grads(lambda vs: tf.add_n(
        [tf.reduce_sum(tf.square(v)) for v in vs]))
    assert ours.numpy() == theirs.numpy()
    for a, b in zip(ours_g, theirs_g):
        np.testing.assert_array_equal(a, b)


def test_unknown_clip_mode_is_a_user_error():
    with pytest.raises(UserError):
        train_ops.clip_gradients([tf.constant(1.0)], "bogus", 1.0)


def test_tf1_nesterov_momentum_matches_the_tf1_update_rule_across_lr_changes():
    lrs = [0.1, 0.05, 0.2]
    grads = [np.array([1.0, -2.0]), np.array([0.5, 0.5]), np.array([-1.0, 3.0])]
    lr_var = tf.Variable(lrs[0])
    opt = train_ops.TF1Momentum(lambda: lr_var, momentum=0.9, nesterov=True)
    var = tf.Variable([1.0, 1.0])
    w, accum = np.array([1.0, 1.0]), np.zeros(2)
    for lr, g in zip(lrs, grads):
        lr_var.assign(lr)
        opt.apply_gradients([(tf.constant(g, tf.float32), var)])
        accum = 0.9 * accum + g
        w = w - lr * g - lr * 0.9 * accum
    np.testing.assert_allclose(var.numpy(), w, rtol=1e-6)


def test_tf1_momentum_steps_as_tf1s_momentum_optimizer_dense_and_gathered():
    # The reference's own optimiser, over learning-rate changes, with dense
    # gradients and gradients of gathered rows (a row read twice, two rows
    # never read: TF1 moves neither them nor their accumulators).
    rng = np.random.default_rng(0)
    start = rng.normal(size=(4, 3)).astype(np.float32)
    ours, theirs = tf.Variable(start), tf.Variable(start)
    lr_var = tf.Variable(0.1)
    opt = train_ops.TF1Momentum(lambda: lr_var, momentum=0.9, nesterov=True)
    reference = tf.compat.v1.train.MomentumOptimizer(
        lambda: lr_var, 0.9, use_nesterov=True)
    for lr in (0.1, 0.05, 0.2):
        lr_var.assign(lr)
        for g in (tf.constant(rng.normal(size=(4, 3)), tf.float32),
                  tf.IndexedSlices(tf.constant(rng.normal(size=(3, 3)),
                                               tf.float32),
                                   tf.constant([2, 0, 2]), [4, 3])):
            before = ours.numpy()
            opt.apply_gradients([(g, ours)])
            reference.apply_gradients([(g, theirs)])
            np.testing.assert_allclose(ours.numpy(), theirs.numpy(),
                                       rtol=1e-6)
    np.testing.assert_array_equal(ours.numpy()[[1, 3]], before[[1, 3]])


def test_adam_is_configured_as_the_reference():
    opt = train_ops.make_optimizer("adam", 1e-3)
    assert opt.beta_1 == 0.0 and opt.epsilon == 1e-3 and opt.beta_2 == 0.999


def test_unknown_optimizer_is_a_user_error():
    with pytest.raises(UserError):
        train_ops.make_optimizer("rmsprop", 0.1)


def test_apply_train_step_adds_l2_to_the_gradient_and_reports_the_lr():
    var = tf.Variable([2.0])
    cfg = train_ops.TrainConfig(l2_reg=0.5, optim_algo="sgd",
                                lr=schedules.LrConfig(lr_init=0.1))
    opt = train_ops.make_optimizer("sgd", schedules.StepSchedule(cfg.lr))
    with tf.GradientTape() as tape:
        loss = 3.0 * var[0]
    update = train_ops.apply_train_step(tape, loss, [var], opt, cfg)
    lr, gn = update.lr, update.grad_norm
    # d/dw (3w + 0.5 w^2) = 3 + w = 5
    assert float(gn) == pytest.approx(5.0)
    assert float(lr) == pytest.approx(0.1)
    assert var.numpy()[0] == pytest.approx(2.0 - 0.1 * 5.0)
    assert int(opt.iterations) == 1
