"""The micro controller: against the reference's recorded samples and
updates (../shared/reference/goldens/micro_controller; skipped when absent),
and on its own: arc validity, forcing = sampling, seeds, tracing, where
temperature, tanh_constant, op_tanh_reduce and the op biases act, gradients.
"""

import json

import numpy as np
import pytest
import tensorflow as tf

from src.micro import arcs
from src.micro.controller import (MicroController,
                                          MicroControllerConfig)
from src.errors import UserError
from src.reference_checkpoint import load_reference_weights, reference_name
from src.reinforce import Reinforce, ReinforceConfig
from tests.conftest import golden_case


def golden_controller(case):
    cfg = json.loads((case / "config.json").read_text())
    kw = cfg["controller_constructor_kwargs"]
    return MicroController(MicroControllerConfig(
        num_cells=kw["num_cells"], num_branches=kw["num_branches"],
        lstm_size=kw["lstm_size"], lstm_num_layers=kw["lstm_num_layers"],
        tanh_constant=kw["tanh_constant"],
        op_tanh_reduce=kw["op_tanh_reduce"], temperature=kw["temperature"],
        seed=1)), kw


@pytest.fixture(scope="module")
def golden():
    """(case folder, controller, constructor kwargs); one controller for the
    tests that load a checkpoint into it, so its functions trace once."""
    case = golden_case("micro_controller")
    ctrl, kw = golden_controller(case)
    return case, ctrl, kw


def as_numpy(result):
    return {k: v.numpy() for k, v in result.items()}


def recorded_arcs(out, prefix):
    """The reference records each cell's arc apart; ours is one vector."""
    return np.concatenate([out[prefix + "normal_arc"],
                           out[prefix + "reduce_arc"]], axis=1)


# -- against the reference ---------------------------------------------------

def test_variables_carry_the_reference_names_and_initial_values():
    case = golden_case("micro_controller")
    ctrl, _ = golden_controller(case)
    rows = [line.split("\t") for line in
            (case / "vars.txt").read_text().splitlines()[1:]]
    ref = {name: json.loads(shape) for name, shape, *_ in rows
           if name.startswith("controller/")}
    ours = {reference_name(v.path): list(v.shape)
            for v in ctrl.trainable_weights}
    assert ours == ref
    init = tf.train.load_checkpoint(str(case / "ckpt_init" / "model.ckpt-0"))
    np.testing.assert_array_equal(ctrl.softmax.b.numpy(),
                                  init.get_tensor("controller/softmax/b"))
    for v in ctrl.trainable_weights:
        if v.path != "controller/softmax/b":
            assert np.abs(v.numpy()).max() <= 0.1


def test_forced_recorded_samples_score_as_the_reference(golden):
    case, ctrl, _ = golden
    load_reference_weights(ctrl.trainable_weights,
                           str(case / "ckpt" / "model.ckpt-3"))
    out = np.load(case / "outputs.npz")
    for i, arc in enumerate(recorded_arcs(out, "sample_")):
        got = as_numpy(ctrl.log_prob(arc))
        np.testing.assert_array_equal(got["arc"], arc)
        assert got["log_prob"] < 0
        np.testing.assert_allclose(-got["log_prob"], out["sample_log_prob"][i],
                                   rtol=0, atol=1e-5)
        np.testing.assert_allclose(got["entropy"], out["sample_entropy"][i],
                                   rtol=0, atol=1e-5)


def test_first_update_loss_and_gradient_norm_as_the_reference(golden):
    # The reference's REINFORCE loss of its first update, built on log_prob:
    # the entropy bonus enters the reward without a gradient.
    case, ctrl, kw = golden
    load_reference_weights(ctrl.trainable_weights,
                           str(case / "ckpt_init" / "model.ckpt-0"))
    out = np.load(case / "outputs.npz")
    arc = recorded_arcs(out, "train_step_")[0]
    with tf.GradientTape() as tape:
        res = ctrl.log_prob(arc)
        reward = (out["train_step_valid_acc"][0]
                  + kw["entropy_weight"] * res["entropy"])
        baseline = (1.0 - kw["bl_dec"]) * reward  # from 0
        loss = -res["log_prob"] * (reward - baseline)
    grads = tape.gradient(loss, ctrl.trainable_weights)
    np.testing.assert_allclose(-res["log_prob"].numpy(),
                               out["train_step_sample_log_prob"][0], rtol=1e-6)
    np.testing.assert_allclose(res["entropy"].numpy(),
                               out["train_step_entropy"][0], rtol=1e-6)
    np.testing.assert_allclose(reward.numpy(), out["train_step_reward"][0],
                               rtol=1e-6)
    np.testing.assert_allclose(baseline.numpy(), out["train_step_baseline"][0],
                               rtol=1e-6)
    np.testing.assert_allclose(loss.numpy(), out["train_step_loss"][0],
                               rtol=1e-5)
    np.testing.assert_allclose(tf.linalg.global_norm(grads).numpy(),
                               out["train_step_grad_norm"][0], rtol=1e-3)


class _Replay:
    """A controller whose `sample()` scores the recorded arcs in turn."""

    def __init__(self, ctrl, recorded, step):
        self.ctrl, self.recorded, self.step = ctrl, tf.constant(recorded), step
        self.trainable_variables = ctrl.trainable_variables

    def sample(self):
        return self.ctrl.log_prob(self.recorded[self.step])


def test_three_recorded_updates_replay_through_reinforce(golden):
    # The controller is not chaotic like the children: the reference's three
    # Adam updates replay closely and land on its ckpt/ weights.
    case, ctrl, kw = golden
    load_reference_weights(ctrl.trainable_weights,
                           str(case / "ckpt_init" / "model.ckpt-0"))
    out = np.load(case / "outputs.npz")
    step = tf.Variable(0)
    accuracies = tf.constant(out["train_step_valid_acc"])

    def reward(arc):
        acc = accuracies[step]
        step.assign_add(1)
        return acc

    trainer = Reinforce(
        _Replay(ctrl, recorded_arcs(out, "train_step_"), step), reward,
        ReinforceConfig(lr=kw["lr_init"], bl_dec=kw["bl_dec"],
                        entropy_weight=kw["entropy_weight"],
                        l2_reg=kw["l2_reg"], optim_algo=kw["optim_algo"]))
    for i in range(3):
        got = {k: float(v) for k, v in trainer.run().items()
               if k not in ("arc",)}
        for key in ("loss", "reward", "baseline", "entropy", "lr"):
            np.testing.assert_allclose(got[key], out["train_step_" + key][i],
                                       rtol=1e-5)
        np.testing.assert_allclose(got["grad_norm"],
                                   out["train_step_grad_norm"][i], rtol=1e-4)
    final = tf.train.load_checkpoint(str(case / "ckpt" / "model.ckpt-3"))
    for v in ctrl.trainable_weights:
        np.testing.assert_allclose(v.numpy(), final.get_tensor(v.path),
                                   rtol=0, atol=1e-4, err_msg=v.path)


# -- on its own --------------------------------------------------------------

SMALL = dict(num_cells=3, num_branches=5, lstm_size=16, lstm_num_layers=2,
             tanh_constant=1.5, op_tanh_reduce=2.0, temperature=2.0)


@pytest.fixture(scope="module")
def small():
    return MicroController(MicroControllerConfig(seed=3, **SMALL))


def assert_valid(arc, num_cells, num_ops):
    assert arc.dtype == np.int32 and arc.shape == (8 * num_cells,)
    for cell in range(2):
        for node in range(num_cells):
            i1, o1, i2, o2 = arc[4 * (cell * num_cells + node):][:4]
            assert 0 <= i1 < node + 2 and 0 <= i2 < node + 2, arc
            assert 0 <= o1 < num_ops and 0 <= o2 < num_ops, arc
    parsed = arcs.MicroArc.parse(arc.tolist(), num_cells)
    assert parsed.to_list() == arc.tolist()
    assert parsed.cell_lines() == [arc[:4 * num_cells].tolist(),
                                   arc[4 * num_cells:].tolist()]


def test_sampled_arcs_are_valid_and_forcing_reports_the_same(small):
    seen_indices, seen_ops = set(), set()
    for _ in range(10):
        res = as_numpy(small.sample())
        arc = res["arc"]
        assert_valid(arc, 3, 5)
        seen_indices.update(arc[0::2].tolist())
        seen_ops.update(arc[1::2].tolist())
        assert res["log_prob"] < 0 and res["entropy"] > 0
        forced = as_numpy(small.log_prob(arc))
        np.testing.assert_array_equal(forced["arc"], arc)
        for k in ("log_prob", "entropy"):
            np.testing.assert_allclose(forced[k], res[k], rtol=1e-6, atol=1e-5)
    # Every input of the last node and every op turns up.
    assert seen_indices == set(range(4)) and seen_ops == set(range(5))


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
    cfg = dict(SMALL, lstm_num_layers=1)
    a = MicroController(MicroControllerConfig(seed=11, **cfg))
    b = MicroController(MicroControllerConfig(seed=11, **cfg))
    c = MicroController(MicroControllerConfig(seed=12, **cfg))
    for va, vb, vc in zip(a.weights, b.weights, c.weights):
        np.testing.assert_array_equal(va.numpy(), vb.numpy())
        if va.trainable and va.path != "controller/softmax/b":
            assert not np.array_equal(va.numpy(), vc.numpy())
    # Distinct variables of one shape get distinct values.
    assert not np.array_equal(a.attention.w_1.numpy(), a.attention.w_2.numpy())
    arcs_a = [a.sample()["arc"].numpy() for _ in range(4)]
    arcs_b = [b.sample()["arc"].numpy() for _ in range(4)]
    arcs_c = [c.sample()["arc"].numpy() for _ in range(4)]
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


# A plain numpy statement of the sampler, to score arcs independently.

def _sigmoid(t):
    return 1.0 / (1.0 + np.exp(-t))


def _log_softmax(z):
    z = z - z.max()
    return z - np.log(np.exp(z).sum())


def _squash(logits, temperature, tanh_constant):
    if temperature is not None:
        logits = logits / temperature
    if tanh_constant is not None:
        logits = tanh_constant * np.tanh(logits)
    return logits


def numpy_score(ctrl, arc):
    """(log_prob, entropy) of `arc` under `ctrl`, in float64."""
    cfg = ctrl.config
    val = lambda v: v.numpy().astype(np.float64)  # noqa: E731
    w_lstm = [val(scope.w) for scope in ctrl.lstm.children]
    g_emb, emb = val(ctrl.g_emb), val(ctrl.emb.w)
    w_soft, b_soft = val(ctrl.softmax.w), val(ctrl.softmax.b)
    w_1, w_2, v = (val(ctrl.attention.w_1), val(ctrl.attention.w_2),
                   val(ctrl.attention.v))
    n = cfg.num_branches
    normal_bias = np.array([0.25, 0.25] + [-0.25] * (n - 2))
    op_tanh = (None if cfg.tanh_constant is None
               else cfg.tanh_constant / cfg.op_tanh_reduce)
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

    total_lp, total_ent = 0.0, 0.0

    def score(logits, choice):
        nonlocal total_lp, total_ent
        lp = _log_softmax(logits)
        total_lp += lp[choice]
        total_ent += -(np.exp(lp) * lp).sum()

    for cell in range(2):
        anchors = [np.zeros((1, size))] * 2
        keys = [step(g_emb) @ w_1 for _ in range(2)]
        for node in range(cfg.num_cells):
            i1, o1, i2, o2 = arc[4 * (cell * cfg.num_cells + node):][:4]
            x = g_emb
            for index in (i1, i2):
                q = step(x) @ w_2
                logits = np.array([(np.tanh(k + q) @ v).item() for k in keys])
                score(_squash(logits, cfg.temperature, cfg.tanh_constant),
                      index)
                x = anchors[index]
            for op in (o1, o2):
                logits = (step(x) @ w_soft + b_soft)[0]
                logits = _squash(logits, cfg.temperature, op_tanh)
                if cell == 0:
                    logits = logits + normal_bias
                score(logits, op)
                x = emb[op:op + 1]
            anchors.append(step(x))
            keys.append(anchors[-1] @ w_1)
    return total_lp, total_ent


@pytest.mark.parametrize("temperature,tanh_constant,op_tanh_reduce",
                         [(None, None, 3.0), (2.0, None, 1.0),
                          (None, 1.1, 2.5), (0.5, 2.5, 4.0)])
def test_log_probs_and_entropies_match_a_numpy_statement(
        temperature, tanh_constant, op_tanh_reduce):
    ctrl = MicroController(MicroControllerConfig(
        num_cells=2, lstm_size=8, seed=5, temperature=temperature,
        tanh_constant=tanh_constant, op_tanh_reduce=op_tanh_reduce))
    # Larger weights than the init, so that tanh and temperature matter.
    rng = np.random.default_rng(0)
    for v in ctrl.trainable_weights:
        v.assign(v.numpy() * 10.0 + rng.normal(0, 0.3, v.shape))
    for _ in range(3):
        res = as_numpy(ctrl.sample())
        lp, ent = numpy_score(ctrl, res["arc"])
        np.testing.assert_allclose(res["log_prob"], lp, rtol=1e-5)
        np.testing.assert_allclose(res["entropy"], ent, rtol=1e-5)


@pytest.mark.parametrize("temperature,tanh_constant,op_tanh_reduce",
                         [(None, None, 1.0), (None, None, 4.0),
                          (2.0, None, 1.0), (None, 2.0, 4.0),
                          (0.5, 1.1, 2.5)])
def test_op_logits_temperature_then_tanh_then_the_normal_cell_bias(
        temperature, tanh_constant, op_tanh_reduce):
    # softmax/w = 0 and attention/v = 0: op logits are the squashed learnable
    # bias (plus the fixed bias in the normal cell only), index logits are 0.
    num_cells = 2
    ctrl = MicroController(MicroControllerConfig(
        num_cells=num_cells, lstm_size=8, seed=6, temperature=temperature,
        tanh_constant=tanh_constant, op_tanh_reduce=op_tanh_reduce))
    ctrl.softmax.w.assign(tf.zeros_like(ctrl.softmax.w))
    ctrl.attention.v.assign(tf.zeros_like(ctrl.attention.v))
    bias = np.array([1.0, -0.5, 0.3, 0.0, 2.0])
    ctrl.softmax.b.assign(bias[None, :])
    op_tanh = None if tanh_constant is None else tanh_constant / op_tanh_reduce
    reduce_logits = _squash(bias, temperature, op_tanh)
    normal_logits = reduce_logits + np.array([0.25, 0.25, -0.25, -0.25, -0.25])
    arc = [0, 4, 1, 0, 2, 1, 1, 4,     # normal: nodes 0, 1
           1, 2, 0, 3, 0, 0, 2, 4]     # reduction: nodes 0, 1
    lp, ent = 0.0, 0.0
    for cell, logits in ((0, normal_logits), (1, reduce_logits)):
        log_p = _log_softmax(logits)
        for node in range(num_cells):
            _, o1, _, o2 = arc[4 * (cell * num_cells + node):][:4]
            lp += 2 * np.log(1.0 / (node + 2)) + log_p[o1] + log_p[o2]
            ent += 2 * np.log(node + 2) - 2 * (np.exp(log_p) * log_p).sum()
    res = as_numpy(ctrl.log_prob(arc))
    np.testing.assert_allclose(res["log_prob"], lp, rtol=1e-6)
    np.testing.assert_allclose(res["entropy"], ent, rtol=1e-6)


def test_initial_op_bias_favours_the_separable_convolutions():
    ctrl = MicroController(MicroControllerConfig(
        num_cells=1, lstm_size=8, seed=7, tanh_constant=1.1,
        op_tanh_reduce=2.5))
    np.testing.assert_array_equal(ctrl.softmax.b.numpy(),
                                  [[10.0, 10.0, 0.0, 0.0, 0.0]])
    # Normal cell: ops 0 and 1 much likelier than 2-4; reduction: less so.
    p_normal = np.exp([ctrl.log_prob([0, op, 0, 0, 0, 0, 0, 0])["log_prob"]
                       for op in range(5)])
    p_reduce = np.exp([ctrl.log_prob([0, 0, 0, 0, 0, op, 0, 0])["log_prob"]
                       for op in range(5)])
    assert p_normal[0] / p_normal[2] > 2.0
    assert 1.3 < p_reduce[0] / p_reduce[2] < p_normal[0] / p_normal[2]


def test_log_prob_has_gradients_for_every_weight(small):
    arc = small.sample()["arc"]
    with tf.GradientTape() as tape:
        res = small.log_prob(arc)
    grads = tape.gradient(res["log_prob"], small.trainable_weights)
    for v, g in zip(small.trainable_weights, grads):
        assert g is not None, v.path
        assert np.abs(tf.convert_to_tensor(g).numpy()).max() > 0, v.path
    with tf.GradientTape() as tape:
        res = small.log_prob(arc)
    grads = tape.gradient(res["entropy"], small.trainable_weights)
    # Stopped: None, or zeros where the traced function returns them.
    assert all(g is None or not np.any(tf.convert_to_tensor(g).numpy())
               for g in grads)


def test_reinforce_trains_on_samples():
    ctrl = MicroController(MicroControllerConfig(
        num_cells=2, lstm_size=8, seed=8, tanh_constant=1.1,
        op_tanh_reduce=2.5))
    before = [v.numpy().copy() for v in ctrl.trainable_weights]
    trainer = Reinforce(
        ctrl, lambda arc: tf.reduce_mean(tf.cast(arc, tf.float32)) / 5.0,
        ReinforceConfig(lr=0.01, entropy_weight=1e-4))
    for _ in range(2):
        out = trainer.run()
        assert_valid(out["arc"].numpy(), 2, 5)
        assert np.isfinite(out["loss"].numpy()) and out["grad_norm"] > 0
    assert trainer.run.experimental_get_tracing_count() == 1
    # attention/w_2 moves too little to show: the query it makes is added to
    # every key alike, so it reaches the logits only through tanh's
    # curvature (its gradient is about 1e-6 of the others').
    for b, v in zip(before, ctrl.trainable_weights):
        if v.path != "controller/attention/w_2":
            assert not np.array_equal(b, v.numpy()), v.path


def test_bad_arcs_and_configs_are_rejected(small):
    with pytest.raises(ValueError, match="values"):
        small.log_prob([0, 1, 2])
    good = small.sample()["arc"].numpy()
    for pos, value, where in ((4, 3, "normal cell, node 1, index_1"),
                              (11, 5, "normal cell, node 2, op_2"),
                              (14, -1, "reduction cell, node 0, index_2")):
        bad = good.copy()
        bad[pos] = value
        with pytest.raises(ValueError, match=where):
            small.log_prob(bad)
    with pytest.raises(UserError, match="num_cells"):
        MicroControllerConfig(num_cells=0).validate()
    with pytest.raises(UserError, match="num_branches"):
        MicroControllerConfig(num_branches=1).validate()
    with pytest.raises(UserError, match="temperature"):
        MicroControllerConfig(temperature=0.0).validate()
    with pytest.raises(UserError, match="op_tanh_reduce"):
        MicroControllerConfig(op_tanh_reduce=0.0).validate()
    with pytest.raises(UserError, match="LSTM"):
        MicroControllerConfig(lstm_size=0).validate()
