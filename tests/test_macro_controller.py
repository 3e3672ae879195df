"""The macro controller: against the reference's recorded samples
(../shared/reference/goldens/macro_controller; skipped when absent), and on
its own: arc validity, forcing = sampling, seeds, tracing, the logit
transforms, gradients."""

import json

import numpy as np
import pytest
import tensorflow as tf

from src.macro import arcs
from src.macro.controller import MacroController, MacroControllerConfig
from src.errors import UserError
from src.reference_checkpoint import load_reference_weights, reference_name
from tests.conftest import golden_case

KEYS = ("log_prob", "entropy", "skip_count", "skip_penalty")


def golden_controller(case):
    cfg = json.loads((case / "config.json").read_text())
    kw = cfg["controller_constructor_kwargs"]
    return MacroController(MacroControllerConfig(
        num_layers=kw["num_layers"], num_branches=kw["num_branches"],
        out_filters=kw["out_filters"], lstm_size=kw["lstm_size"],
        lstm_num_layers=kw["lstm_num_layers"],
        tanh_constant=kw["tanh_constant"],
        op_tanh_reduce=kw["op_tanh_reduce"], temperature=kw["temperature"],
        search_whole_channels=kw["search_whole_channels"],
        skip_target=kw["skip_target"], skip_weight=kw["skip_weight"],
        seed=1)), kw


def as_numpy(result):
    return {k: v.numpy() for k, v in result.items()}


# -- against the reference ---------------------------------------------------

def test_variables_carry_the_reference_names():
    case = golden_case("macro_controller")
    ctrl, _ = golden_controller(case)
    rows = [line.split("\t") for line in
            (case / "vars.txt").read_text().splitlines()[1:]]
    ref = {name: json.loads(shape) for name, shape, *_ in rows
           if name.startswith("controller/")}
    ours = {reference_name(v.path): list(v.shape)
            for v in ctrl.trainable_weights}
    assert ours == ref
    for v in ctrl.trainable_weights:
        assert np.abs(v.numpy()).max() <= 0.1


def test_forced_recorded_samples_score_as_the_reference():
    case = golden_case("macro_controller")
    ctrl, _ = golden_controller(case)
    load_reference_weights(ctrl.trainable_weights,
                           str(case / "ckpt" / "model.ckpt-3"))
    out = np.load(case / "outputs.npz")
    for i, arc in enumerate(out["sample_arc"]):
        got = as_numpy(ctrl.log_prob(arc))
        np.testing.assert_array_equal(got["arc"], arc)
        assert got["log_prob"] < 0
        np.testing.assert_allclose(-got["log_prob"], out["sample_log_prob"][i],
                                   rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(got["entropy"], out["sample_entropy"][i],
                                   rtol=1e-6, atol=1e-5)
        assert got["skip_count"] == out["sample_skip_count"][i]
        np.testing.assert_allclose(got["skip_penalty"],
                                   out["sample_skip_penaltys"][i], atol=1e-5)
        np.testing.assert_allclose(got["skip_rate"],
                                   out["sample_skip_count"][i] / 15.0)


def test_first_update_loss_and_gradient_norm_as_the_reference():
    # The reference's REINFORCE loss of its first update, built on log_prob:
    # checks the gradient paths (entropy stopped, skip penalty live).
    case = golden_case("macro_controller")
    ctrl, kw = golden_controller(case)
    load_reference_weights(ctrl.trainable_weights,
                           str(case / "ckpt_init" / "model.ckpt-0"))
    out = np.load(case / "outputs.npz")
    with tf.GradientTape() as tape:
        res = ctrl.log_prob(out["train_step_arc"][0])
        reward = (out["train_step_valid_acc"][0]
                  + kw["entropy_weight"] * res["entropy"])
        baseline = (1.0 - kw["bl_dec"]) * reward  # from 0
        loss = (-res["log_prob"] * (reward - baseline)
                + kw["skip_weight"] * res["skip_penalty"])
    grads = tape.gradient(loss, ctrl.trainable_weights)
    np.testing.assert_allclose(-res["log_prob"].numpy(),
                               out["train_step_sample_log_prob"][0], rtol=1e-6)
    np.testing.assert_allclose(res["skip_penalty"].numpy(),
                               out["train_step_skip_penaltys"][0], rtol=1e-5)
    np.testing.assert_allclose(loss.numpy(), out["train_step_loss"][0],
                               rtol=1e-5)
    np.testing.assert_allclose(tf.linalg.global_norm(grads).numpy(),
                               out["train_step_grad_norm"][0], rtol=1e-3)


# -- on its own --------------------------------------------------------------

WHOLE = dict(num_layers=5, num_branches=6, out_filters=16, lstm_size=16,
             tanh_constant=1.5, temperature=2.0, skip_target=0.4)
PER_CHANNEL = dict(num_layers=3, num_branches=3, out_filters=5, lstm_size=16,
                   lstm_num_layers=2, tanh_constant=2.5,
                   search_whole_channels=False)


@pytest.fixture(scope="module")
def whole():
    return MacroController(MacroControllerConfig(seed=3, **WHOLE))


@pytest.fixture(scope="module")
def per_channel():
    return MacroController(MacroControllerConfig(seed=4, **PER_CHANNEL))


def test_per_channel_variable_names(per_channel):
    names = {v.path for v in per_channel.trainable_weights}
    assert "controller/lstm/layer_1/w" in names
    assert "controller/emb/branch_2/w_count" in names
    assert "controller/softmax/branch_0/w_start" in names
    shapes = {v.path: tuple(v.shape) for v in per_channel.trainable_weights}
    assert shapes["controller/emb/branch_1/w_start"] == (5, 16)
    assert shapes["controller/softmax/branch_1/w_count"] == (16, 4)


@pytest.mark.parametrize("mode", ["whole", "per_channel"])
def test_sampled_arcs_are_valid_and_forcing_reports_the_same(
        mode, whole, per_channel):
    ctrl = whole if mode == "whole" else per_channel
    cfg = ctrl.config
    seen_counts = set()
    for _ in range(12):
        res = as_numpy(ctrl.sample())
        arc = res["arc"]
        assert arc.dtype == np.int32 and arc.shape == (cfg.arc_length,)
        parsed = arcs.MacroArc.parse(
            arc.tolist(), cfg.num_layers, cfg.num_branches,
            cfg.search_whole_channels, num_ops=cfg.num_branches,
            out_filters=cfg.out_filters)
        if not cfg.search_whole_channels:
            for layer in parsed.branches:
                for start, count in layer:
                    assert count >= 1 and start + count <= cfg.out_filters
                    seen_counts.add(count)
        assert res["skip_count"] == sum(sum(s) for s in parsed.skips)
        assert res["log_prob"] < 0 and res["entropy"] > 0
        assert res["skip_penalty"] > 0
        forced = as_numpy(ctrl.log_prob(arc))
        np.testing.assert_array_equal(forced["arc"], arc)
        for k in KEYS:
            np.testing.assert_allclose(forced[k], res[k], rtol=1e-6, atol=1e-5)
    if not cfg.search_whole_channels:
        assert len(seen_counts) > 1


def test_sampling_and_forcing_trace_once(whole):
    whole.sample()
    whole.log_prob(whole.sample()["arc"])
    n_sample = whole._sample_fn.experimental_get_tracing_count()
    n_force = whole._log_prob_fn.experimental_get_tracing_count()
    for _ in range(4):
        arc = whole.sample()["arc"]
        whole.log_prob(arc)
        whole.log_prob(arc.numpy().astype(np.int64))
        whole.log_prob(arc.numpy().tolist())
    assert whole._sample_fn.experimental_get_tracing_count() == n_sample == 1
    assert whole._log_prob_fn.experimental_get_tracing_count() == n_force == 1


def test_seed_fixes_weights_and_draws_and_draws_resume_from_the_state():
    a = MacroController(MacroControllerConfig(seed=11, **WHOLE))
    b = MacroController(MacroControllerConfig(seed=11, **WHOLE))
    c = MacroController(MacroControllerConfig(seed=12, **WHOLE))
    for va, vb, vc in zip(a.weights, b.weights, c.weights):
        np.testing.assert_array_equal(va.numpy(), vb.numpy())
        if va.trainable:
            assert not np.array_equal(va.numpy(), vc.numpy())
    # Distinct variables of one shape get distinct values.
    assert not np.array_equal(a.attention.w_1.numpy(), a.attention.w_2.numpy())
    arcs_a = [a.sample()["arc"].numpy() for _ in range(6)]
    arcs_b = [b.sample()["arc"].numpy() for _ in range(6)]
    arcs_c = [c.sample()["arc"].numpy() for _ in range(6)]
    np.testing.assert_array_equal(arcs_a, arcs_b)
    assert not np.array_equal(arcs_a, arcs_c)
    # Resuming: the generator's state variable alone determines what follows.
    state = a.seed_generator.state.numpy()
    more = [a.sample()["arc"].numpy() for _ in range(4)]
    a.seed_generator.state.assign(state)
    again = [a.sample()["arc"].numpy() for _ in range(4)]
    np.testing.assert_array_equal(more, again)
    assert any(v.path == "controller/sampler/seed_generator_state"
               for v in a.variables)


def _lstm_np(x, c, h, w):
    z = np.concatenate([x, h], axis=1) @ w
    i, f, o, g = np.split(z, 4, axis=1)
    sig = lambda t: 1.0 / (1.0 + np.exp(-t))  # noqa: E731
    c = sig(i) * np.tanh(g) + sig(f) * c
    return c, sig(o) * np.tanh(c)


def _log_softmax(z):
    z = z - z.max()
    return z - np.log(np.exp(z).sum())


@pytest.mark.parametrize("temperature,tanh_constant",
                         [(None, None), (3.0, None), (None, 1.1), (0.5, 2.5)])
def test_op_logits_use_temperature_then_tanh(temperature, tanh_constant):
    ctrl = MacroController(MacroControllerConfig(
        num_layers=1, num_branches=4, lstm_size=8, seed=5,
        temperature=temperature, tanh_constant=tanh_constant))
    zeros = np.zeros((1, 8), np.float32)
    _, h = _lstm_np(ctrl.g_emb.numpy(), zeros, zeros,
                    ctrl.lstm.children[0].w.numpy())
    logits = h @ ctrl.softmax.w.numpy()
    if temperature is not None:
        logits = logits / temperature
    if tanh_constant is not None:
        logits = tanh_constant * np.tanh(logits)
    for op in range(4):
        res = as_numpy(ctrl.log_prob([op]))
        lp = _log_softmax(logits[0])[op]
        np.testing.assert_allclose(res["log_prob"], lp, rtol=1e-5)
        np.testing.assert_allclose(res["entropy"], -lp * np.exp(lp), rtol=1e-5)
        assert res["skip_count"] == 0 and res["skip_penalty"] == 0


def test_a_large_tanh_constant_changes_the_log_probs():
    arc = None
    results = []
    for tanh_constant in (None, 1e4):
        ctrl = MacroController(MacroControllerConfig(
            seed=7, **dict(WHOLE, tanh_constant=tanh_constant,
                           temperature=None)))
        if arc is None:
            arc = ctrl.sample()["arc"]
        results.append(as_numpy(ctrl.log_prob(arc)))
    assert abs(results[0]["log_prob"] - results[1]["log_prob"]) > 1.0


def test_per_channel_counts_are_masked_by_the_start():
    ctrl = MacroController(MacroControllerConfig(
        num_layers=1, num_branches=1, out_filters=4, lstm_size=8, seed=6,
        search_whole_channels=False))
    zeros = np.zeros((1, 8), np.float32)
    w = ctrl.lstm.children[0].w.numpy()
    emb, soft = ctrl.emb.children[0], ctrl.softmax.children[0]
    c, h = _lstm_np(ctrl.g_emb.numpy(), zeros, zeros, w)
    lp_start = _log_softmax((h @ soft.w_start.numpy())[0])
    start = 2
    _, h = _lstm_np(emb.w_start.numpy()[start:start + 1], c, h, w)
    # Counts 1 and 2 fit after channel 2 of 4: count indices 0 and 1.
    lp_count = _log_softmax((h @ soft.w_count.numpy())[0][:2])
    for count in (1, 2):
        res = as_numpy(ctrl.log_prob([start, count]))
        np.testing.assert_allclose(
            res["log_prob"], lp_start[start] + lp_count[count - 1], rtol=1e-5)
    assert as_numpy(ctrl.log_prob([start, 3]))["log_prob"] == -np.inf


@pytest.mark.parametrize("mode", ["whole", "per_channel"])
def test_log_prob_has_gradients_for_every_weight(mode, whole, per_channel):
    ctrl = whole if mode == "whole" else per_channel
    arc = ctrl.sample()["arc"]
    with tf.GradientTape() as tape:
        res = ctrl.log_prob(arc)
    grads = tape.gradient(res["log_prob"], ctrl.trainable_weights)
    for v, g in zip(ctrl.trainable_weights, grads):
        assert g is not None, v.path
        assert np.abs(tf.convert_to_tensor(g).numpy()).max() > 0, v.path
    if mode == "per_channel":
        return  # the rest is shared code; each backward trace costs seconds
    with tf.GradientTape() as tape:
        res = ctrl.log_prob(arc)
        both = res["skip_penalty"] + res["entropy"]
    grads = tape.gradient(both, ctrl.trainable_weights)
    assert any(g is not None and np.any(tf.convert_to_tensor(g).numpy())
               for g in grads)
    with tf.GradientTape() as tape:
        res = ctrl.log_prob(arc)
    grads = tape.gradient(res["entropy"], ctrl.trainable_weights)
    # Stopped: None, or zeros where the traced function returns them.
    assert all(g is None or not np.any(tf.convert_to_tensor(g).numpy())
               for g in grads)


def test_bad_arcs_and_configs_are_rejected(whole):
    with pytest.raises(ValueError, match="values"):
        whole.log_prob([0, 1, 2])
    with pytest.raises(UserError, match="skip_target"):
        MacroControllerConfig(skip_target=1.0).validate()
    with pytest.raises(UserError, match="temperature"):
        MacroControllerConfig(temperature=0.0).validate()
    with pytest.raises(UserError, match="out_filters"):
        MacroControllerConfig(out_filters=1,
                              search_whole_channels=False).validate()
