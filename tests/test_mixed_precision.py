"""Mixed precision (src/precision.py) and the XLA choice.

For tiny children of every kind, one (traced) training step under
mixed_float16 from the same weights as a float32 step (run eagerly, which
saves a trace): it runs, its loss is finite and close to the float32 loss,
the variables stay float32, batch norms and logits are float32, the loss is
scaled and a non-finite scaled gradient skips the update. Every test that
sets the policy restores it (fixture). Also: `resolve_jit_compile`, and
XLA steps matching non-XLA ones.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from src import precision, schedules
from src.macro import arcs as macro_arcs
from src.micro import arcs as micro_arcs
from src.cifar10.child_trainer import ChildTrainer
from src.cifar10.image_ops import BatchNorm, MaskedBatchNorm, RowBatchNorm
from src.macro.child import FixedMacroChild, MacroConfig, SearchMacroChild
from src.micro.child import FixedMicroChild, MicroConfig, SearchMicroChild
from src.errors import UserError
from src.ptb.arcs import PtbArc
from src.ptb.ptb_child import FixedPtbChild, PtbBatchNorm, PtbChildConfig
from src.ptb.space import SPACE as PTB
from src.ptb.ptb_trainer import PtbTrainConfig, PtbTrainer
from src.train_ops import TrainConfig

MACRO_FIXED_ARC = "0 3 1"                 # 2 layers, 4 branches
MACRO_SEARCH_ARC = [1, 3, 0]              # 2 layers, 4 branches
MICRO_ARC = "0 0 1 1 1 4 0 3"             # 1 node per cell
PTB_ARC = "0 0 1 1 3"                     # depth 3
BN_TYPES = (BatchNorm, MaskedBatchNorm, RowBatchNorm, PtbBatchNorm)
# The tests' loss scale: Keras' default 2^15 overflows float16 in the tiny
# micro aux head's backward pass on the first step (that step is then
# skipped and the scale halved, as it should be), which would leave
# nothing to compare.
LOSS_SCALE = 2.0 ** 10


@pytest.fixture
def restore_policy():
    """Whatever a test does to Keras' global policy is undone."""
    previous = keras.mixed_precision.global_policy()
    yield
    keras.mixed_precision.set_global_policy(previous)


def build_under(mixed, make):
    """make() under the mixed or float32 policy; the policy is float32
    again afterwards."""
    with precision.policy_scope(precision.MIXED_POLICY if mixed
                                else "float32"):
        return make()


def cifar_case(kind, mixed, jit_compile=False):
    cfg = TrainConfig(l2_reg=1e-4, clip_mode="norm", grad_bound=5.0)
    if kind == "macro_fixed":
        child = FixedMacroChild(MacroConfig(
            num_layers=2, out_filters=4, num_branches=4, keep_prob=0.9,
            fixed_arc=macro_arcs.MacroArc.parse(MACRO_FIXED_ARC, 2, 4, True),
            seed=1))
        arc_fn, eval_training = None, False
    elif kind == "macro_search":
        child = SearchMacroChild(MacroConfig(
            num_layers=2, out_filters=4, num_branches=4, keep_prob=0.9,
            seed=1))
        arc = tf.constant(MACRO_SEARCH_ARC, tf.int32)
        arc_fn, eval_training = (lambda: arc), False
    elif kind == "micro_search":
        child = SearchMicroChild(MicroConfig(num_layers=0, num_cells=1,
                                             out_filters=4, seed=1))
        arc = tf.constant(micro_arcs.MicroArc.parse(MICRO_ARC, 1).to_list(),
                          tf.int32)
        arc_fn, eval_training = (lambda: arc), True
    elif kind == "micro_fixed":
        child = FixedMicroChild(MicroConfig(
            num_layers=1, num_cells=1, out_filters=4, keep_prob=0.9,
            drop_path_keep_prob=0.6, use_aux_heads=True, num_train_steps=10,
            fixed_arc=micro_arcs.MicroArc.parse(MICRO_ARC, 1), seed=1))
        arc_fn, eval_training = None, False
    else:
        raise ValueError(kind)
    trainer = ChildTrainer(child, cfg, jit_compile=jit_compile,
                           arc_fn=arc_fn, eval_training_mode=eval_training,
                           mixed_precision=mixed)
    return child, trainer


def ptb_case(kind, mixed, jit_compile=None, keep=0.8):
    fixed = PtbArc.parse(PTB_ARC, 3) if kind == "ptb_fixed" else None
    child = PTB.build_child(PtbChildConfig(
        vocab_size=17, hidden_size=4, rhn_depth=3, batch_size=2,
        bptt_steps=5, fixed_arc=fixed, e_keep=keep, x_keep=keep,
        h_keep=keep, o_keep=keep, seed=1))
    arc = tf.constant(PtbArc.parse(PTB_ARC, 3).to_list(), tf.int32)
    trainer = PtbTrainer(
        child, PtbTrainConfig(lr=schedules.LrConfig(lr_init=0.5),
                              rnn_l2_reg=1e-3, rnn_slowness_reg=1e-3,
                              moving_average=0.99),
        arc_fn=None if fixed else (lambda: arc), jit_compile=jit_compile,
        mixed_precision=mixed)
    return child, trainer


def make_case(kind, mixed, **kw):
    maker = ptb_case if kind.startswith("ptb") else cifar_case
    return build_under(mixed, lambda: maker(kind, mixed, **kw))


def copy_weights(source, target):
    """Every variable (weights, batch-norm statistics, seed states)."""
    assert len(source.weights) == len(target.weights)
    for a, b in zip(source.weights, target.weights):
        assert a.path == b.path
        b.assign(a)


def batch(kind):
    if kind.startswith("ptb"):
        rng = np.random.default_rng(0)
        return (tf.constant(rng.integers(0, 17, (2, 5)), tf.int32),
                tf.constant(rng.integers(0, 17, (2, 5)), tf.int32))
    return (tf.random.stateless_normal([4, 32, 32, 3], seed=[1, 2]),
            tf.constant([1, 2, 3, 4], tf.int32))


def batch_norms(layer):
    return [l for l in layer._flatten_layers() if isinstance(l, BN_TYPES)]


KINDS = ["macro_fixed", "macro_search", "micro_search", "micro_fixed",
         "ptb_fixed", "ptb_search"]


@pytest.mark.parametrize("kind", KINDS)
def test_mixed_step_runs_close_to_float32_with_float32_bn_and_logits(
        kind, restore_policy):
    child32, trainer32 = make_case(kind, mixed=False)
    child16, trainer16 = make_case(kind, mixed=True)
    assert keras.mixed_precision.global_policy().name == "float32"
    assert child16.dtype_policy.name == "mixed_float16"
    assert child16.compute_dtype == "float16"
    copy_weights(child32, child16)

    x, y = batch(kind)
    trainer16.loss_scale.scale.assign(LOSS_SCALE)
    # The float32 step eagerly (the same computation without a trace).
    out32 = {k: v.numpy() for k, v in trainer32._train_step(x, y).items()}
    out16 = {k: v.numpy() for k, v in trainer16.train_step(x, y).items()}
    assert "skipped" not in out32
    assert not out16["skipped"]
    assert out16["loss_scale"] == LOSS_SCALE
    assert float(trainer16.loss_scale.scale) == LOSS_SCALE
    assert int(trainer16.loss_scale.good_steps) == 1
    assert np.isfinite(out16["loss"]) and np.isfinite(out16["grad_norm"])
    # The same weights and draws: the losses agree to float16 accuracy.
    np.testing.assert_allclose(out16["loss"], out32["loss"], rtol=1e-2)
    # The reported norm is the unscaled one.
    np.testing.assert_allclose(out16["grad_norm"], out32["grad_norm"],
                               rtol=0.1)
    assert int(trainer16.global_step) == 1

    # Keras keeps float32 variables.
    for v in child16.weights:
        if v.dtype.startswith("float"):
            assert v.dtype == "float32", v.path
    bns = batch_norms(child16)
    assert bns or kind == "ptb_fixed"   # the fixed PTB cell has none
    for bn in bns:
        for v in bn.weights:
            assert v.dtype == "float32", v.path
    # Moving statistics computed in float32 from float16 activations.
    for bn32, bn16 in zip(batch_norms(child32), batch_norms(child16)):
        if hasattr(bn32, "moving_mean"):
            np.testing.assert_allclose(bn16.moving_mean.numpy(),
                                       bn32.moving_mean.numpy(),
                                       rtol=2e-2, atol=2e-2)

    # Logits and losses are float32.
    if kind.startswith("ptb"):
        arc = (None if kind == "ptb_fixed"
               else tf.constant(PtbArc.parse(PTB_ARC, 3).to_list()))
        nll, outputs, state = child16.token_nll(
            x, y, child16.zero_state(2), arc=arc, training=False)
        assert outputs.dtype == tf.float16
        assert nll.dtype == tf.float32 and state.dtype == tf.float32
        assert child16.logits(outputs).dtype == tf.float32
        result = trainer16.evaluate(np.arange(60) % 17, 2, 5)
        assert np.isfinite(result["ppl"])
        assert trainer16.reward_nll(x, y, arc).dtype == tf.float32
    else:
        assert trainer16.logits(x).dtype == tf.float32
        if kind == "micro_fixed":
            logits, aux = child16(x, training=True, step=tf.constant(0))
            assert logits.dtype == tf.float32 and aux.dtype == tf.float32
        if kind.endswith("fixed"):   # (a search child's trace is slow)
            assert int(trainer16.eval_step(x, y)) >= 0
    assert trainer16.checkpoint_objects()["loss_scale"] is \
        trainer16.loss_scale
    assert "loss_scale" not in trainer32.checkpoint_objects()


def test_a_float16_child_needs_loss_scaling(restore_policy):
    with precision.policy_scope(precision.MIXED_POLICY):
        child = FixedPtbChild(PtbChildConfig(
            vocab_size=17, hidden_size=4, rhn_depth=3, batch_size=2,
            bptt_steps=5, fixed_arc=PtbArc.parse(PTB_ARC, 3)))
    with pytest.raises(ValueError, match="mixed_precision=True"):
        PtbTrainer(child, PtbTrainConfig())


def test_batch_norms_compute_in_float32_and_return_the_input_dtype(
        restore_policy):
    x = tf.random.stateless_normal([4, 3, 3, 2], seed=[3, 4]) * 3 + 1
    with precision.policy_scope(precision.MIXED_POLICY):
        bn16 = BatchNorm()
        masked = MaskedBatchNorm(2)
        row = RowBatchNorm(3)
        ptb_bn = PtbBatchNorm(2)
        ptb_bn.build()
    x16 = tf.cast(x, tf.float16)
    assert bn16(x16, training=True).dtype == tf.float16
    assert bn16.moving_mean.dtype == "float32"
    # The statistics of the float16 input, computed in float32.
    bn_ref = BatchNorm()
    bn_ref(tf.cast(x16, tf.float32), training=True)
    np.testing.assert_allclose(bn16.moving_mean.numpy(),
                               bn_ref.moving_mean.numpy(), rtol=1e-6)
    np.testing.assert_allclose(bn16.moving_variance.numpy(),
                               bn_ref.moving_variance.numpy(), rtol=1e-6)
    assert masked(x16, start=tf.constant(0), count=tf.constant(2),
                  training=True).dtype == tf.float16
    assert row(x16, row=tf.constant(1)).dtype == tf.float16
    y, mean, var = ptb_bn.normalize(tf.cast(x[:, 0, 0, :], tf.float16), True)
    assert y.dtype == tf.float16
    assert mean.dtype == tf.float32 and var.dtype == tf.float32


def test_non_finite_scaled_gradients_skip_the_update(restore_policy):
    child, trainer = make_case("ptb_fixed", mixed=True)
    x, y = batch("ptb_fixed")
    trainer.train_step(x, y)
    before = [v.numpy() for v in trainer.variables]
    shadows = [s.numpy() for s in trainer.shadows]
    # A scale that overflows float16 in the backward pass.
    trainer.loss_scale.scale.assign(2.0 ** 120)
    out = trainer.train_step(x, y)
    assert bool(out["skipped"])
    assert not np.isfinite(out["grad_norm"].numpy())
    assert np.isfinite(out["loss"].numpy())
    for v, old in zip(trainer.variables, before):
        np.testing.assert_array_equal(v.numpy(), old)
    for s, old in zip(trainer.shadows, shadows):
        np.testing.assert_array_equal(s.numpy(), old)
    assert float(trainer.loss_scale.scale) == 2.0 ** 119
    assert int(trainer.loss_scale.good_steps) == 0
    # The batch still counts: the global step is the batches seen.
    assert int(trainer.global_step) == 2
    trainer.loss_scale.scale.assign(2.0 ** 10)
    assert not bool(trainer.train_step(x, y)["skipped"])
    assert int(trainer.global_step) == 3


def test_dynamic_loss_scale_rule():
    scale = precision.DynamicLossScale(initial_scale=8.0, growth_steps=2)
    var = tf.Variable([1.0, 2.0])
    opt = keras.optimizers.SGD(1.0)
    opt.build([var])

    def step(grad):
        grads, finite = scale.unscale([tf.constant(grad) * scale.scale])
        return bool(scale.apply_if_finite(
            finite, lambda: opt.apply_gradients(zip(grads, [var])), opt))

    assert not step([1.0, 1.0])
    np.testing.assert_allclose(var.numpy(), [0.0, 1.0])
    assert float(scale.scale) == 8.0 and int(scale.good_steps) == 1
    assert not step([1.0, 1.0])             # the 2nd finite step: grows
    assert float(scale.scale) == 16.0 and int(scale.good_steps) == 0
    assert step([np.inf, 1.0])              # skipped, halved
    np.testing.assert_allclose(var.numpy(), [-1.0, 0.0])
    assert float(scale.scale) == 8.0 and int(scale.good_steps) == 0
    assert int(opt.iterations) == 3
    # Sparse gradients stay sparse when unscaled.
    sparse = tf.IndexedSlices(tf.constant([[16.0]]), tf.constant([1]),
                              tf.constant([2, 1]))
    (g,), finite = scale.unscale([sparse])
    assert isinstance(g, tf.IndexedSlices) and bool(finite)
    np.testing.assert_allclose(g.values.numpy(), [[2.0]])


def test_values_to_check_leave_out_the_norm_of_a_scaling_skip():
    inf = np.float32(np.inf)
    plain = {"loss": 1.0, "grad_norm": inf}
    assert precision.values_to_check(plain) == {"loss": 1.0,
                                                "gradient norm": inf}
    skip = {"loss": 1.0, "grad_norm": inf, "skipped": np.True_,
            "loss_scale": np.float32(2.0 ** 15)}
    assert precision.values_to_check(skip) == {"loss": 1.0}
    # Non-finite even at scale 1: a real NaN, not an overflow.
    skip["loss_scale"] = np.float32(1.0)
    assert "gradient norm" in precision.values_to_check(skip)
    kept = {"loss": 1.0, "grad_norm": 2.0, "skipped": np.False_,
            "loss_scale": np.float32(4.0)}
    assert precision.values_to_check(kept) == {"loss": 1.0,
                                               "gradient norm": 2.0}


def test_controllers_stay_float32_under_a_mixed_run(restore_policy):
    from src.macro.controller import (MacroController,
                                              MacroControllerConfig)
    precision.set_mixed_precision(True)
    assert precision.mixed_precision_enabled()
    cfg = MacroControllerConfig(num_layers=2, num_branches=4, lstm_size=8,
                                seed=0)
    with precision.float32_policy():
        controller = MacroController(cfg)
    assert precision.mixed_precision_enabled()
    assert controller.dtype_policy.name == "float32"
    sample = controller.sample()
    assert sample["log_prob"].dtype == tf.float32
    assert all(v.dtype == "float32" for v in controller.trainable_weights)
    # Even built under the mixed policy, sampling (outside any layer's
    # call) reads float32 weights and computes in float32.
    unscoped = MacroController(cfg)
    assert unscoped.sample()["log_prob"].dtype == tf.float32
    assert unscoped.log_prob(sample["arc"])["log_prob"].dtype == tf.float32
    precision.set_mixed_precision(False)
    assert keras.mixed_precision.global_policy().name == "float32"
    with precision.mixed_precision_scope(True):
        assert precision.mixed_precision_enabled()
        with precision.float32_policy():
            assert not precision.mixed_precision_enabled()
        assert precision.mixed_precision_enabled()
    assert not precision.mixed_precision_enabled()


# ------------------------------------------------------------------ XLA

def test_resolve_jit_compile():
    for space in precision.SPACES:
        for searching in (False, True):
            for value in ("auto", "AUTO", None):
                got = precision.resolve_jit_compile(value, searching, space)
                assert isinstance(got, bool)
                assert got == precision.AUTO_JIT_COMPILE[(space, searching)]
            for value in ("false", False):
                assert precision.resolve_jit_compile(value, searching,
                                                     space) is False
            if (space, searching) != ("micro", True):
                for value in ("true", True):
                    assert precision.resolve_jit_compile(value, searching,
                                                         space) is True
    # auto: the measured choice (XLA only for the fixed PTB cell).
    assert [key for key, on in precision.AUTO_JIT_COMPILE.items() if on] \
        == [("ptb", False)]
    with pytest.raises(UserError, match="unknown"):
        precision.resolve_jit_compile("maybe", False, "macro")
    with pytest.raises(ValueError):
        precision.resolve_jit_compile("auto", False, "resnet")
    # Steps XLA cannot compile (dynamic convolution kernels).
    with pytest.raises(UserError, match="micro search"):
        precision.resolve_jit_compile("true", True, "micro")
    with pytest.raises(UserError, match="per-channel"):
        precision.resolve_jit_compile("true", True, "macro",
                                      whole_channels=False)
    assert precision.resolve_jit_compile("auto", True, "macro",
                                         whole_channels=False) is False


@pytest.mark.parametrize("kind", ["macro_fixed", "ptb_fixed"])
def test_xla_step_matches_the_plain_step(kind, restore_policy):
    kw = {"keep": 1.0} if kind.startswith("ptb") else {}
    # The plain step runs eagerly (no trace to pay for).
    plain_child, plain = make_case(kind, mixed=False, jit_compile=False,
                                   **kw)
    xla_child, xla = make_case(kind, mixed=False, jit_compile=True, **kw)
    if kind == "macro_fixed":
        # No dropout: XLA need not reproduce the random draws.
        for c in (plain_child, xla_child):
            c.fc.keep_prob = 1.0
    copy_weights(plain_child, xla_child)
    x, y = batch(kind)
    assert xla.jit_compile is True and plain.jit_compile is False
    # XLA's convolutions and sums differ from oneDNN's in float32 order;
    # batch norm over 4 images magnifies that in the gradient: 2e-6 to 9e-6
    # relative in the norm here (AVX-512), 2.2e-4 once on the CI machine.
    # A wrong or missing update moves the weights by 2e-3 to 0.2 (a step
    # moves every variable that much), far above the tolerances.
    for _ in range(2):
        a = plain._train_step(x, y)
        b = xla.train_step(x, y)
        np.testing.assert_allclose(b["loss"].numpy(), a["loss"].numpy(),
                                   rtol=1e-5)
        np.testing.assert_allclose(b["grad_norm"].numpy(),
                                   a["grad_norm"].numpy(), rtol=2e-3)
    for v, w in zip(plain.variables, xla.variables):
        np.testing.assert_allclose(w.numpy(), v.numpy(), rtol=1e-4,
                                   atol=1e-4)
