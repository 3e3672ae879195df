"""The fixed-architecture macro child: shapes, weights, batch norm, training."""

import numpy as np
import pytest
import tensorflow as tf

from src.macro import arcs
from src.cifar10.child_trainer import ChildTrainer
from src.cifar10.image_ops import BatchNorm
from src.macro.child import FixedMacroChild, MacroConfig, count_params
from src.child_output import ChildOutput
from src.errors import UserError
from src import schedules
from src.train_ops import TrainConfig

FINAL_6 = "0 3 0 0 1 0 2 0 0 1 2 0 0 0 0 3 1 1 0 1 0"


def child(text=FINAL_6, num_layers=6, out_filters=16, **kw):
    arc = arcs.MacroArc.parse(text, num_layers, 4, True)
    return FixedMacroChild(MacroConfig(num_layers=num_layers,
                                       out_filters=out_filters,
                                       num_branches=4, fixed_arc=arc, **kw))


def test_output_is_ten_logits_per_image():
    m = child()
    assert m(tf.zeros([3, 32, 32, 3]), training=False).logits.shape == (3, 10)


def test_the_trainer_interface_outputs_step_and_variables():
    m = child("0", num_layers=1, out_filters=4)
    x = tf.random.stateless_normal([2, 32, 32, 3], seed=[1, 2])
    for training in (False, True):
        out = m(x, training=training)
        assert isinstance(out, ChildOutput) and out.aux_logits is None
        assert out.logits.shape == (2, 10)
    assert m.takes_step is False and m.searching is False
    with pytest.raises(TypeError):
        m(x, training=False, arc=tf.constant([0]))
    assert m.optimizer_variables(True) == m.optimizer_variables() == list(
        m.trainable_variables)


def test_parameter_count_matches_the_reference_for_the_final_arc_prefix():
    # The reference reports 298928 for this arc, 6 layers, 16 filters
    # (../shared/reference/goldens/macro_fixed/config.json, num_vars).
    m = child()
    m(tf.zeros([1, 32, 32, 3]))
    assert count_params(m) == 298928


def test_variable_paths_mirror_the_reference_scopes():
    m = child()
    m(tf.zeros([1, 32, 32, 3]))
    paths = {v.path for v in m.weights}
    for expected in ["child/stem_conv/w", "child/stem_conv/bn/offset",
                     "child/layer_0/conv_1x1/w", "child/layer_1/conv_5x5/w",
                     "child/layer_3/skip/bn/moving_mean",
                     "child/layer_1/pool_at_1/from_0/path1_conv/w",
                     "child/layer_3/pool_at_3/from_4/path2_conv/w",
                     "child/layer_5/skip/w", "child/fc/w"]:
        assert expected in paths
    shapes = {v.path: tuple(v.shape) for v in m.weights}
    assert shapes["child/layer_5/skip/w"] == (1, 1, 256, 64)
    assert shapes["child/fc/w"] == (64, 10)


@pytest.mark.parametrize("op", [4, 5])
def test_pool_ops_build_a_1x1_conv_then_a_pool(op):
    m = child(str(op), num_layers=1)
    m(tf.zeros([2, 32, 32, 3]))
    paths = {v.path for v in m.trainable_weights}
    assert "child/layer_0/conv_1/w" in paths
    assert not any("conv_3x3" in p for p in paths)


def test_separable_flag_builds_ops_1_and_3_as_separable_convs():
    plain, sep = child("1 3 0", 2), child("1 3 0", 2, fixed_separable=True)
    for m in (plain, sep):
        m(tf.zeros([1, 32, 32, 3]))
    sep_paths = {v.path for v in sep.weights}
    assert "child/layer_0/conv_3x3/w_depth" in sep_paths
    assert "child/layer_1/conv_5x5/w_point" in sep_paths
    assert count_params(sep) < count_params(plain)


def test_odd_filters_are_rejected_before_building():
    with pytest.raises(UserError, match="odd"):
        child(out_filters=15)


def test_batch_norm_moving_stats_are_zero_debiased_and_bessel_corrected():
    bn = BatchNorm(decay=0.9, epsilon=1e-5)
    x = tf.random.stateless_normal([4, 3, 3, 2], seed=[1, 2]) * 3.0 + 1.0
    y = bn(x, training=True)
    mean = np.mean(x.numpy(), axis=(0, 1, 2))
    var = np.var(x.numpy(), axis=(0, 1, 2))
    n = 4 * 3 * 3
    # After one step the debiased moving mean is the batch mean, and the
    # variance fed to it is the Bessel-corrected one.
    np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), var * n / (n - 1),
                               rtol=1e-5)
    # The forward pass normalises with the biased variance.
    np.testing.assert_allclose(
        y.numpy(), (x.numpy() - mean) / np.sqrt(var + 1e-5), atol=1e-4)
    # Second step: biased = 0.9 b + 0.1 v; moving = biased / (1 - 0.81).
    bn(x * 0.0 + 5.0, training=True)
    biased = 0.1 * 0.9 * mean + 0.1 * 5.0
    np.testing.assert_allclose(bn.moving_mean.numpy(), biased / (1 - 0.81),
                               rtol=1e-5)


def test_batch_norm_inference_uses_the_moving_stats():
    bn = BatchNorm()
    x = tf.ones([2, 2, 2, 3]) * 4.0
    bn(x)  # build
    bn.moving_mean.assign([1.0, 2.0, 3.0])
    bn.moving_variance.assign([4.0, 4.0, 4.0])
    y = bn(x, training=False).numpy()
    np.testing.assert_allclose(y[0, 0, 0], (4.0 - np.array([1, 2, 3]))
                               / np.sqrt(4.0 + 1e-5), rtol=1e-5)


def test_nchw_gives_the_same_logits_as_nhwc_where_a_gpu_is_present():
    if not tf.config.list_physical_devices("GPU"):
        pytest.skip("NCHW convolutions need a GPU; none is visible")
    a, b = child(), child(data_format="NCHW")
    x = tf.random.stateless_normal([2, 32, 32, 3], seed=[3, 4])
    a(x), b(x)
    for va, vb in zip(a.weights, b.weights):
        vb.assign(va)
    np.testing.assert_allclose(a(x).logits.numpy(), b(x).logits.numpy(),
                               atol=1e-4)


def test_training_steps_lower_the_loss_on_a_fixed_batch():
    tf.keras.utils.set_random_seed(0)
    m = child("0 1 1", num_layers=2, out_filters=8)
    trainer = ChildTrainer(m, TrainConfig(
        l2_reg=1e-4, clip_mode="norm", grad_bound=5.0,
        lr=schedules.LrConfig(lr_init=0.05, lr_dec_every=1000)))
    images = tf.random.stateless_normal([16, 32, 32, 3], seed=[5, 6])
    labels = tf.constant(np.arange(16) % 10, tf.int32)
    losses = [float(trainer.train_step(images, labels)["loss"])
              for _ in range(8)]
    assert losses[-1] < losses[0]
    assert int(trainer.global_step) == 8


def test_train_step_is_traced_once_for_full_and_smaller_batches():
    m = child("0", num_layers=1, out_filters=4)
    trainer = ChildTrainer(m, TrainConfig(lr=schedules.LrConfig()))
    for n in (8, 8, 3):
        trainer.train_step(tf.zeros([n, 32, 32, 3]), tf.zeros([n], tf.int32))
    assert trainer.train_step.experimental_get_tracing_count() == 1
