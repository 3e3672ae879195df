"""The PTB controller: against the reference's recorded samples and updates
(../shared/reference/goldens/ptb_controller; skipped when absent), and on
its own: variable order, arc validity, forcing = sampling, seeds, tracing,
the attention's distance penalty, a numpy statement of the sampler,
gradients, REINFORCE, bad input.
"""

import json

import numpy as np
import pytest
import tensorflow as tf

from src.errors import UserError
from src.ptb.arcs import PtbArc
from src.ptb.ptb_controller import (PtbController, PtbControllerConfig,
                                    distance_penalty)
from src.reference_checkpoint import load_reference_weights, reference_name
from src.reinforce import Reinforce, ReinforceConfig
from tests.conftest import golden_case

# The reference's optimiser order (its config.json lists it too).
VAR_ORDER = ["controller/lstm/layer_0/w", "controller/embedding/g_emb",
             "controller/embedding/w", "controller/softmax/w",
             "controller/attention/w_1", "controller/attention/w_2",
             "controller/attention/v"]


def golden_controller(case):
    cfg = json.loads((case / "config.json").read_text())
    attrs = cfg["controller_attributes"]
    return PtbController(PtbControllerConfig(
        rhn_depth=attrs["rhn_depth"], num_funcs=attrs["num_funcs"],
        lstm_size=attrs["lstm_size"], lstm_num_layers=attrs["lstm_num_layers"],
        tanh_constant=attrs["tanh_constant"],
        temperature=attrs["temperature"], seed=1)), cfg


@pytest.fixture(scope="module")
def golden():
    """(case folder, controller, config.json); one controller for the tests
    that load a checkpoint into it, so its functions trace once."""
    case = golden_case("ptb_controller")
    ctrl, cfg = golden_controller(case)
    return case, ctrl, cfg


def as_numpy(result):
    return {k: v.numpy() for k, v in result.items()}


# -- against the reference ---------------------------------------------------

def test_variables_carry_the_reference_names_shapes_and_order(golden):
    case, ctrl, cfg = golden
    rows = [line.split("\t") for line in
            (case / "vars.txt").read_text().splitlines()[1:]]
    ref = {name: json.loads(shape) for name, shape, *_ in rows
           if name.startswith("controller/")}
    ours = {reference_name(v.path): list(v.shape)
            for v in ctrl.trainable_variables}
    assert ours == ref
    assert [v.path + ":0" for v in ctrl.trainable_variables] == \
        cfg["optimizer_var_list_in_order"]


def test_forced_recorded_samples_score_as_the_reference(golden):
    case, ctrl, _ = golden
    load_reference_weights(ctrl.trainable_variables,
                           str(case / "ckpt" / "model.ckpt-3"))
    out = np.load(case / "outputs.npz")
    assert len(out["sample_arc"]) == 20
    for i, arc in enumerate(out["sample_arc"]):
        got = as_numpy(ctrl.log_prob(arc))
        np.testing.assert_array_equal(got["arc"], arc)
        assert got["log_prob"] < 0
        np.testing.assert_allclose(-got["log_prob"], out["sample_log_prob"][i],
                                   rtol=0, atol=1e-5)
        np.testing.assert_allclose(got["entropy"], out["sample_entropy"][i],
                                   rtol=0, atol=1e-5)
        np.testing.assert_allclose(got["ppl"], out["sample_ppl"][i],
                                   rtol=1e-6)


class _Replay:
    """A controller whose `sample()` scores the recorded arcs in turn."""

    def __init__(self, ctrl, recorded, step):
        self.ctrl, self.recorded, self.step = ctrl, tf.constant(recorded), step
        self.trainable_variables = ctrl.trainable_variables

    def sample(self):
        return self.ctrl.log_prob(self.recorded[self.step])


def test_three_recorded_updates_replay_through_reinforce(golden):
    case, ctrl, cfg = golden
    hp = cfg["controller_hyperparameters"]
    load_reference_weights(ctrl.trainable_variables,
                           str(case / "ckpt_init" / "model.ckpt-0"))
    init = {v.path: v.numpy().copy() for v in ctrl.trainable_variables}
    out = np.load(case / "outputs.npz")
    step = tf.Variable(0)
    valid_ppl = tf.constant(out["train_step_valid_ppl"])

    def reward(arc):
        # The reference's reward before the entropy bonus: 80 / valid ppl.
        value = 80.0 / valid_ppl[step]
        step.assign_add(1)
        return value

    trainer = Reinforce(
        _Replay(ctrl, out["train_step_arc"], step), reward,
        ReinforceConfig(lr=hp["lr_init"], bl_dec=hp["bl_dec"],
                        entropy_weight=hp["entropy_weight"],
                        l2_reg=hp["l2_reg"], optim_algo=hp["optim_algo"]))
    for i in range(3):
        got = {k: float(v) for k, v in trainer.run().items() if k != "arc"}
        np.testing.assert_allclose(-got["log_prob"],
                                   out["train_step_sample_log_prob"][i],
                                   rtol=1e-6)
        for key in ("loss", "reward", "baseline", "entropy", "lr"):
            np.testing.assert_allclose(got[key], out["train_step_" + key][i],
                                       rtol=1e-5, err_msg=key)
        # Observed within 1e-6; the recorded norms come from the reference's
        # racing update (README), hence the looser bound.
        np.testing.assert_allclose(got["grad_norm"],
                                   out["train_step_grad_norm"][i], rtol=1e-4)
    # The gradients are ~1e-3 in norm against Adam's epsilon 1e-3, so the
    # three updates move the weights by at most ~2e-5: the weights must match
    # far below that. Observed: at most 7e-8 apart (a few float32 units of
    # weights ~0.1), i.e. the updates agree to 0.4% of their largest element
    # in every variable.
    final = tf.train.load_checkpoint(str(case / "ckpt" / "model.ckpt-3"))
    for v in ctrl.trainable_variables:
        ref = final.get_tensor(v.path)
        np.testing.assert_allclose(v.numpy(), ref, rtol=0, atol=1e-7,
                                   err_msg=v.path)
        ref_update = ref - init[v.path]
        our_update = v.numpy() - init[v.path]
        if v.path == "controller/attention/w_2":
            # Its query is added to every key alike, so it reaches the logits
            # only through tanh's curvature: an update of ~5e-10, float noise.
            assert np.abs(ref_update).max() < 1e-8
            continue
        scale = np.abs(ref_update).max()
        assert scale > 1e-6, v.path
        assert np.abs(our_update - ref_update).max() < 0.01 * scale, v.path


# -- on its own --------------------------------------------------------------

SMALL = dict(rhn_depth=6, num_funcs=4, lstm_size=16, tanh_constant=2.5,
             temperature=5.0)


@pytest.fixture(scope="module")
def small():
    return PtbController(PtbControllerConfig(seed=3, **SMALL))


def test_variable_names_shapes_and_order_without_the_goldens():
    ctrl = PtbController(PtbControllerConfig(rhn_depth=3, num_funcs=3,
                                             lstm_size=8, seed=1))
    assert [v.path for v in ctrl.trainable_variables] == VAR_ORDER
    shapes = [tuple(v.shape) for v in ctrl.trainable_variables]
    assert shapes == [(16, 32), (1, 8), (3, 8), (8, 3), (8, 8), (8, 8),
                      (8, 1)]
    for v in ctrl.trainable_variables:
        assert 0 < np.abs(v.numpy()).max() <= 0.1
    assert ctrl.g_emb is ctrl.emb.g_emb
    two = PtbController(PtbControllerConfig(rhn_depth=2, lstm_size=8,
                                            lstm_num_layers=2, seed=1))
    assert [v.path for v in two.trainable_variables][:2] == [
        "controller/lstm/layer_0/w", "controller/lstm/layer_1/w"]
    assert two.config.num_funcs == 2 and tuple(two.softmax.w.shape) == (8, 2)


def test_sampled_arcs_are_valid_and_forcing_reports_the_same(small):
    cfg = small.config
    seen_prevs, seen_funcs = set(), set()
    for _ in range(15):
        res = as_numpy(small.sample())
        arc = res["arc"]
        assert arc.dtype == np.int32
        assert arc.shape == (cfg.arc_length,) == (11,)
        parsed = PtbArc.parse(arc.tolist(), cfg.rhn_depth,
                              num_funcs=cfg.num_funcs)
        assert parsed.to_list() == arc.tolist()
        seen_prevs.add(parsed.prevs[-1])
        seen_funcs.update(parsed.funcs)
        assert res["log_prob"] < 0 and res["entropy"] > 0
        np.testing.assert_allclose(
            res["ppl"], np.exp(-res["log_prob"] / cfg.arc_length), rtol=1e-5)
        forced = as_numpy(small.log_prob(arc))
        np.testing.assert_array_equal(forced["arc"], arc)
        for k in ("log_prob", "entropy", "ppl"):
            np.testing.assert_allclose(forced[k], res[k], rtol=1e-6, atol=1e-5)
    assert seen_funcs == {0, 1, 2, 3}
    assert len(seen_prevs) >= 3


def test_sampling_and_forcing_trace_once(small):
    small.sample()
    small.log_prob(small.sample()["arc"])
    n_sample = small._sample_fn.experimental_get_tracing_count()
    n_force = small._log_prob_fn.experimental_get_tracing_count()
    for _ in range(3):
        arc = small.sample()["arc"]
        small.log_prob(arc)
        small.log_prob(arc.numpy().astype(np.int64))
        small.log_prob(arc.numpy().tolist())
    assert small._sample_fn.experimental_get_tracing_count() == n_sample == 1
    assert small._log_prob_fn.experimental_get_tracing_count() == n_force == 1


def test_seed_fixes_weights_and_draws_and_draws_resume_from_the_state():
    cfg = dict(SMALL, rhn_depth=4)
    a = PtbController(PtbControllerConfig(seed=11, **cfg))
    b = PtbController(PtbControllerConfig(seed=11, **cfg))
    c = PtbController(PtbControllerConfig(seed=12, **cfg))
    for va, vb, vc in zip(a.weights, b.weights, c.weights):
        np.testing.assert_array_equal(va.numpy(), vb.numpy())
        if va.trainable:
            assert not np.array_equal(va.numpy(), vc.numpy())
    # Distinct variables of one shape get distinct values.
    assert not np.array_equal(a.attention.w_1.numpy(), a.attention.w_2.numpy())
    arcs_a = [a.sample()["arc"].numpy() for _ in range(5)]
    arcs_b = [b.sample()["arc"].numpy() for _ in range(5)]
    arcs_c = [c.sample()["arc"].numpy() for _ in range(5)]
    np.testing.assert_array_equal(arcs_a, arcs_b)
    assert not np.array_equal(arcs_a, arcs_c)
    # Resuming: the generator's state variable alone determines what follows.
    state = a.seed_generator.state.numpy()
    more = [a.sample()["arc"].numpy() for _ in range(3)]
    a.seed_generator.state.assign(state)
    again = [a.sample()["arc"].numpy() for _ in range(3)]
    np.testing.assert_array_equal(more, again)
    assert any(v.path == "controller/sampler/seed_generator_state"
               for v in a.variables)


def _log_softmax(z):
    z = z - z.max()
    return z - np.log(np.exp(z).sum())


def test_with_zero_weights_the_previous_node_follows_the_distance_penalty():
    # Zero weights: every LSTM output is 0, so attention and activation
    # logits are 0 (also after temperature and tanh) and node i reads node j
    # with probability softmax(-(i - j)^2 / 6); activations are uniform.
    depth, funcs = 7, 3
    ctrl = PtbController(PtbControllerConfig(
        rhn_depth=depth, num_funcs=funcs, lstm_size=8, tanh_constant=2.5,
        temperature=5.0, seed=4))
    for v in ctrl.trainable_variables:
        v.assign(tf.zeros_like(v))
    np.testing.assert_allclose(distance_penalty(3), [[9 / 6, 4 / 6, 1 / 6]],
                               rtol=1e-6)
    log_p = {i: _log_softmax(-(i - np.arange(i)) ** 2 / 6.0)
             for i in range(1, depth)}
    rng = np.random.default_rng(0)
    for _ in range(4):
        prevs = [int(rng.integers(i)) for i in range(1, depth)]
        arc = [int(rng.integers(funcs))]
        for p in prevs:
            arc += [p, int(rng.integers(funcs))]
        expected = depth * np.log(1.0 / funcs) + sum(
            log_p[i][p] for i, p in zip(range(1, depth), prevs))
        res = as_numpy(ctrl.log_prob(arc))
        np.testing.assert_allclose(res["log_prob"], expected, rtol=1e-6)
    # The draws follow the same distribution: the last node's previous node,
    # over 400 samples, within 4.5 standard deviations per value.
    last = depth - 1
    counts = np.zeros(last)
    n = 400
    for _ in range(n):
        counts[int(ctrl.sample()["arc"][2 * last - 1])] += 1
    p = np.exp(log_p[last])
    assert np.all(np.abs(counts - n * p) <= 4.5 * np.sqrt(n * p * (1 - p)) + 1)
    assert counts[last - 1] > counts[last - 2] > counts[last - 3]


# A plain numpy statement of the sampler, to score arcs independently.

def _sigmoid(t):
    return 1.0 / (1.0 + np.exp(-t))


def _squash(logits, temperature, tanh_constant):
    if temperature is not None:
        logits = logits / temperature
    if tanh_constant is not None:
        logits = tanh_constant * np.tanh(logits)
    return logits


def numpy_score(ctrl, arc):
    """(log_prob, entropy, ppl) of `arc` under `ctrl`, in float64."""
    cfg = ctrl.config
    val = lambda v: v.numpy().astype(np.float64)  # noqa: E731
    w_lstm = [val(scope.w) for scope in ctrl.lstm.children]
    g_emb, emb, w_soft = val(ctrl.g_emb), val(ctrl.emb.w), val(ctrl.softmax.w)
    w_1, w_2, v = (val(ctrl.attention.w_1), val(ctrl.attention.w_2),
                   val(ctrl.attention.v))
    size = cfg.lstm_size
    c = [np.zeros((1, size)) for _ in w_lstm]
    h = [np.zeros((1, size)) for _ in w_lstm]

    def step(x):
        for k, w in enumerate(w_lstm):
            i, f, o, g = np.split(np.concatenate([x, h[k]], axis=1) @ w, 4,
                                  axis=1)
            c[k] = _sigmoid(i) * np.tanh(g) + _sigmoid(f) * c[k]
            h[k] = _sigmoid(o) * np.tanh(c[k])
            x = h[k]
        return x

    nlls, ent = [], 0.0

    def score(logits, choice):
        nonlocal ent
        nll = -_log_softmax(logits)[choice]
        nlls.append(nll)
        ent += nll * np.exp(-nll)

    anchors = []
    x = g_emb
    for node in range(cfg.rhn_depth):
        anchors.append(step(x))
        if node > 0:
            prev = arc[2 * node - 1]
            query = anchors[-1] @ w_2
            logits = np.array([(np.tanh(a @ w_1 + query) @ v).item()
                               for a in anchors[:-1]])
            logits = _squash(logits, cfg.temperature, cfg.tanh_constant)
            logits = logits - (node - np.arange(node)) ** 2 / 6.0
            score(logits, prev)
            x = anchors[prev] / (0.1 + node - prev)
        else:
            x = g_emb
        func = arc[2 * node]
        score(_squash((step(x) @ w_soft)[0], cfg.temperature,
                      cfg.tanh_constant), func)
        x = emb[func:func + 1]
    return -sum(nlls), ent, np.exp(np.mean(nlls))


@pytest.mark.parametrize("temperature,tanh_constant,layers",
                         [(None, None, 1), (2.0, None, 1), (None, 1.1, 2),
                          (5.0, 2.5, 1)])
def test_log_probs_entropies_and_ppl_match_a_numpy_statement(
        temperature, tanh_constant, layers):
    ctrl = PtbController(PtbControllerConfig(
        rhn_depth=5, num_funcs=3, lstm_size=8, lstm_num_layers=layers,
        temperature=temperature, tanh_constant=tanh_constant, seed=5))
    # Larger weights than the init, so that tanh and temperature matter.
    rng = np.random.default_rng(0)
    for v in ctrl.trainable_variables:
        v.assign(v.numpy() * 10.0 + rng.normal(0, 0.3, v.shape))
    for _ in range(3):
        res = as_numpy(ctrl.sample())
        lp, ent, ppl = numpy_score(ctrl, res["arc"])
        np.testing.assert_allclose(res["log_prob"], lp, rtol=1e-5)
        np.testing.assert_allclose(res["entropy"], ent, rtol=1e-5)
        np.testing.assert_allclose(res["ppl"], ppl, rtol=1e-5)


def test_a_single_node_cell_has_one_decision():
    ctrl = PtbController(PtbControllerConfig(rhn_depth=1, num_funcs=4,
                                             lstm_size=8, seed=6))
    res = as_numpy(ctrl.sample())
    assert res["arc"].shape == (1,) and 0 <= res["arc"][0] < 4
    np.testing.assert_allclose(res["ppl"], np.exp(-res["log_prob"]),
                               rtol=1e-6)
    forced = as_numpy(ctrl.log_prob([3]))
    assert forced["log_prob"] < 0


def test_log_prob_has_gradients_for_every_weight(small):
    arc = small.sample()["arc"]
    with tf.GradientTape() as tape:
        res = small.log_prob(arc)
    grads = tape.gradient(res["log_prob"], small.trainable_variables)
    for v, g in zip(small.trainable_variables, grads):
        assert g is not None, v.path
        assert np.abs(tf.convert_to_tensor(g).numpy()).max() > 0, v.path
    for key in ("entropy",):
        with tf.GradientTape() as tape:
            res = small.log_prob(arc)
        grads = tape.gradient(res[key], small.trainable_variables)
        # Stopped: None, or zeros where the traced function returns them.
        assert all(g is None or not np.any(tf.convert_to_tensor(g).numpy())
                   for g in grads)


def test_reinforce_trains_on_samples():
    ctrl = PtbController(PtbControllerConfig(
        rhn_depth=4, num_funcs=2, lstm_size=8, tanh_constant=2.5,
        temperature=5.0, seed=8))
    before = [v.numpy().copy() for v in ctrl.trainable_variables]
    trainer = Reinforce(
        ctrl, lambda arc: tf.reduce_mean(tf.cast(arc, tf.float32)) / 3.0,
        ReinforceConfig(lr=0.01, entropy_weight=1e-3))
    for _ in range(2):
        out = trainer.run()
        PtbArc.parse(out["arc"].numpy().tolist(), 4, num_funcs=2)
        assert np.isfinite(out["loss"].numpy()) and out["grad_norm"] > 0
    assert trainer.run.experimental_get_tracing_count() == 1
    for b, v in zip(before, ctrl.trainable_variables):
        if v.path != "controller/attention/w_2":  # see the replay test
            assert not np.array_equal(b, v.numpy()), v.path


def test_bad_arcs_and_configs_are_rejected(small):
    with pytest.raises(ValueError, match="values"):
        small.log_prob([0, 1, 2])
    good = small.sample()["arc"].numpy()
    for pos, value, where in ((0, 4, "node 0, position 0: activation 4"),
                              (3, 2, "node 2, position 3: previous node 2"),
                              (5, -1, "node 3, position 5: previous node -1"),
                              (10, 7, "node 5, position 10: activation 7")):
        bad = good.copy()
        bad[pos] = value
        with pytest.raises(UserError, match=where):
            small.log_prob(bad)
    # Activation 2 (identity) is the child's but not a 2-function
    # controller's to score.
    two = PtbController(PtbControllerConfig(rhn_depth=2, lstm_size=8, seed=9))
    with pytest.raises(UserError, match="activation 2 is out of range 0..1"):
        two.log_prob([0, 0, 2])
    with pytest.raises(UserError, match="rhn_depth"):
        PtbControllerConfig(rhn_depth=0).validate()
    for funcs in (0, 5):
        with pytest.raises(UserError, match="num_funcs"):
            PtbControllerConfig(num_funcs=funcs).validate()
    with pytest.raises(UserError, match="temperature"):
        PtbControllerConfig(temperature=0.0).validate()
    with pytest.raises(UserError, match="LSTM"):
        PtbControllerConfig(lstm_size=0).validate()
