"""The PTB trainer: the training step's objective, clipping, learning rate
and state carry; one trace for every arc; evaluation (window by window,
the fast test pass, one arc per window when searching); the reward pass;
the moving average of the weights and its checkpoint."""

import warnings

import numpy as np
import pytest
import tensorflow as tf

from src import schedules
from src.ptb.arcs import PtbArc
from src.ptb.ptb_child import PtbChildConfig
from src.ptb.data import batch_rows as stream_rows, num_windows
from src.ptb.ptb_trainer import PtbTrainConfig, PtbTrainer, progress_points
from src.ptb.space import SPACE as PTB
from src.train_ops import l2_loss

V, H, D, B, T = 17, 4, 3, 2, 5
ARC = "0 0 1 1 3"
ARCS = ["0 0 1 1 3", "3 0 2 0 0", "1 0 0 1 2"]


def child(arc=ARC, **kw):
    base = dict(vocab_size=V, hidden_size=H, rhn_depth=D, batch_size=B,
                bptt_steps=T, seed=1)
    base.update(kw)
    fixed = None if arc is None else PtbArc.parse(arc, base["rhn_depth"])
    c = PTB.build_child(PtbChildConfig(fixed_arc=fixed, **base))
    rng = np.random.default_rng(0)
    for v in c.trainable_weights:
        if not v.path.endswith(("/scale", "/offset")):
            v.assign(rng.normal(0, 0.5, v.shape).astype(np.float32))
    return c


def train_cfg(**kw):
    base = dict(lr=schedules.LrConfig(lr_init=0.5, lr_dec_start=100,
                                      lr_dec_every=100, lr_dec_rate=0.5))
    base.update(kw)
    return PtbTrainConfig(**base)


def window(seed=0, n=B, t=T):
    rng = np.random.default_rng(seed)
    return (tf.constant(rng.integers(0, V, (n, t)), tf.int32),
            tf.constant(rng.integers(0, V, (n, t)), tf.int32))


def cycling_arcs(texts):
    """An arc_fn returning the given arcs in turn (a traced counter)."""
    table = tf.constant([PtbArc.parse(t, D).to_list() for t in texts],
                        tf.int32)
    counter = tf.Variable(0, dtype=tf.int32, trainable=False)

    def arc_fn():
        i = counter.assign_add(1) - 1
        return table[i % len(texts)]

    arc_fn.counter = counter
    return arc_fn


def test_config_defaults_and_none_l2():
    cfg = PtbTrainConfig(l2_reg=None)
    assert cfg.l2_reg == 0.0
    assert (cfg.clip_mode, cfg.optim_algo) == ("global", "sgd")


def test_train_step_objective_clipping_update_and_carry():
    c = child()
    cfg = train_cfg(l2_reg=1e-3, rnn_l2_reg=1e-2, rnn_slowness_reg=1e-2,
                    grad_bound=0.05)
    trainer = PtbTrainer(c, cfg)
    c.train_states[0].assign(tf.random.stateless_normal([B, H], [3, 4]))
    x, y = window()
    before = [v.numpy() for v in trainer.variables]
    state = tf.stack([tf.convert_to_tensor(v) for v in c.train_states])
    with tf.GradientTape() as tape:
        nll, out, next_state = c.token_nll(x, y, state)
        loss = tf.reduce_sum(nll) / B
        diff = out[:, 1:] - out[:, :-1]
        objective = (loss + 1e-2 * tf.reduce_sum(out ** 2) / B
                     + 1e-2 * tf.reduce_sum(diff ** 2) / B
                     + 1e-3 * l2_loss(trainer.variables))
    grads = [tf.convert_to_tensor(g)
             for g in tape.gradient(objective, trainer.variables)]
    norm = float(tf.linalg.global_norm(grads))
    assert norm > 0.05   # clipping is active
    got = trainer.train_step(x, y)
    np.testing.assert_allclose(float(got["loss"]), float(loss), rtol=1e-6)
    np.testing.assert_allclose(float(got["train_ppl"]),
                               np.exp(float(tf.reduce_mean(nll))), rtol=1e-6)
    np.testing.assert_allclose(float(got["grad_norm"]), norm, rtol=1e-5)
    assert float(got["lr"]) == 0.5
    assert int(trainer.global_step) == 1
    for v, b, g in zip(trainer.variables, before, grads):
        np.testing.assert_allclose(v.numpy(), b - 0.5 * g.numpy() * 0.05
                                   / norm, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(c.train_states[0].numpy(), next_state[0],
                               rtol=1e-5, atol=1e-6)
    trainer.reset_train_state()
    assert not c.train_states[0].numpy().any()


def test_learning_rate_schedule_in_steps_and_warmup():
    c = child()
    lr = schedules.LrConfig(lr_init=1.0, lr_dec_start=3, lr_dec_every=2,
                            lr_dec_rate=0.5, lr_dec_min=0.2,
                            lr_warmup_val=0.01, lr_warmup_steps=2)
    trainer = PtbTrainer(c, train_cfg(lr=lr, grad_bound=1e9))
    x, y = window()
    got = [float(trainer.train_step(x, y)["lr"]) for _ in range(9)]
    np.testing.assert_allclose(
        got, [0.01, 0.01, 1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25], rtol=1e-6)
    # The reported rate is the one applied.
    before = [v.numpy() for v in trainer.variables]
    state = tf.stack([tf.convert_to_tensor(v) for v in c.train_states])
    with tf.GradientTape() as tape:
        nll, _, _ = c.token_nll(x, y, state)
        loss = tf.reduce_sum(nll) / B
    grads = tape.gradient(loss, trainer.variables)
    assert float(trainer.train_step(x, y)["lr"]) == np.float32(0.2)  # floor
    np.testing.assert_allclose(
        trainer.variables[0].numpy(),
        before[0] - 0.2 * tf.convert_to_tensor(grads[0]).numpy(),
        rtol=1e-4, atol=1e-6)


def test_search_train_step_traces_once_for_every_arc():
    arc_fn = cycling_arcs(ARCS)
    c = child(arc=None, e_keep=0.8, x_keep=0.7, h_keep=0.9, o_keep=0.6)
    trainer = PtbTrainer(c, train_cfg(grad_bound=5.0), arc_fn=arc_fn)
    x, y = window()
    arcs = [trainer.train_step(x, y)["arc"].numpy().tolist()
            for _ in range(4)]
    assert trainer.train_step.experimental_get_tracing_count() == 1
    assert arcs == [PtbArc.parse(t, D).to_list() for t in ARCS + ARCS[:1]]
    steps = float(c.output_bn(0)._debias["moving_mean"].local_step)
    assert steps == 4 * T   # statistics updated once per step per bn


def test_two_layer_train_step_runs_with_dropout():
    c = child(num_layers=2, e_keep=0.8, x_keep=0.7, h_keep=0.9, o_keep=0.6)
    trainer = PtbTrainer(c, train_cfg(l2_reg=1e-4, rnn_slowness_reg=1e-3))
    x, y = window()
    for _ in range(2):
        out = trainer.train_step(x, y)
    assert np.isfinite(float(out["loss"]))
    assert all(v.numpy().any() for v in c.train_states)


def manual_windows(c, stream, batch, bptt, arcs=None):
    rows = stream_rows(stream, batch)
    n = num_windows(stream, batch, bptt)
    state = c.zero_state(batch)
    losses = []
    for i in range(n):
        x = rows[:, i * bptt:(i + 1) * bptt]
        y = rows[:, i * bptt + 1:(i + 1) * bptt + 1]
        arc = None if arcs is None else arcs[i % len(arcs)]
        nll, _, state = c.token_nll(x, y, state, arc=arc)
        losses.append(float(tf.reduce_sum(nll)))
    return np.array(losses)


def test_valid_evaluation_equals_window_by_window():
    c = child()
    trainer = PtbTrainer(c, train_cfg())
    stream = np.random.default_rng(5).integers(0, V, 123)
    ref = manual_windows(c, stream, B, T)
    got = trainer.evaluate(stream, B, T, window_losses=True, max_tokens=16)
    assert got["num_windows"] == (123 // B - 1) // T == len(ref)
    assert got["num_words"] == len(ref) * B * T
    np.testing.assert_allclose(got["window_losses"], ref, rtol=1e-5)
    np.testing.assert_allclose(got["total_loss"], ref.sum(), rtol=1e-6)
    log_ppl = ref.sum() / got["num_words"]
    np.testing.assert_allclose(got["log_ppl"], log_ppl, rtol=1e-6)
    np.testing.assert_allclose(got["ppl"], np.exp(min(log_ppl, 10)),
                               rtol=1e-6)


def test_fast_test_evaluation_equals_one_word_at_a_time():
    c = child()
    trainer = PtbTrainer(c, train_cfg())
    stream = np.random.default_rng(6).integers(0, V, 301)
    ref = manual_windows(c, stream, 1, 1)          # 300 calls of one word
    got = trainer.evaluate(stream, 1, 1, window_losses=True, max_tokens=64)
    assert got["num_windows"] == 300 and got["num_words"] == 300
    np.testing.assert_allclose(got["window_losses"], ref, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(got["total_loss"], ref.sum(), rtol=1e-6)
    points = progress_points(got, every=100)
    assert [k for k, _ in points] == [100, 200, 300]
    np.testing.assert_allclose(points[1][1], np.exp(ref[:200].mean()),
                               rtol=1e-6)
    got = trainer.evaluate(stream, 1, 1, progress_every=120)
    assert [k for k, _ in got["progress"]] == [120, 240]
    np.testing.assert_allclose(got["progress"][0][1],
                               np.exp(ref[:120].mean()), rtol=1e-6)
    assert "window_losses" not in got


def test_search_evaluation_scores_one_arc_per_window():
    arc_fn = cycling_arcs(ARCS)
    c = child(arc=None)
    trainer = PtbTrainer(c, train_cfg(), arc_fn=arc_fn)
    stream = np.random.default_rng(7).integers(0, V, 90)
    arcs = [PtbArc.parse(t, D).to_list() for t in ARCS]
    ref = manual_windows(c, stream, B, T, arcs=arcs)
    got = trainer.evaluate(stream, B, T, window_losses=True)
    assert int(arc_fn.counter) == len(ref) == 8
    np.testing.assert_allclose(got["window_losses"], ref, rtol=1e-5)
    # A given arc: no sampling, the arc scores every window.
    ref1 = manual_windows(c, stream, B, T, arcs=arcs[1:2])
    got1 = trainer.evaluate(stream, B, T, arc=arcs[1], window_losses=True)
    assert int(arc_fn.counter) == 8
    np.testing.assert_allclose(got1["window_losses"], ref1, rtol=1e-5)
    # The test pass (batch 1, one word per window): one arc per child's
    # bptt_steps words, state carried.
    got2 = trainer.evaluate(stream, 1, 1, window_losses=True)
    assert int(arc_fn.counter) == 8 + int(np.ceil(89 / T)) == 26
    state, ref2 = c.zero_state(1), []
    rows = stream_rows(stream, 1)
    for k, start in enumerate(range(0, 89, T)):
        end = min(89, start + T)
        nll, _, state = c.token_nll(rows[:, start:end],
                                    rows[:, start + 1:end + 1], state,
                                    arc=arcs[(8 + k) % 3])
        ref2 += list(nll.numpy()[0])
    np.testing.assert_allclose(got2["window_losses"], ref2, rtol=1e-5,
                               atol=1e-6)


def test_reward_is_the_mean_nll_from_zero_state_and_traced_once():
    c = child(arc=None)
    trainer = PtbTrainer(c, train_cfg(), arc_fn=cycling_arcs(ARCS))
    c.train_states[0].assign(tf.ones([B, H]))
    x, y = window(seed=3)
    for text in ARCS:
        arc = PtbArc.parse(text, D).to_list()
        nll, _, _ = c.token_nll(x, y, c.zero_state(B), arc=arc)
        np.testing.assert_allclose(float(trainer.reward_nll(x, y, arc)),
                                   float(tf.reduce_mean(nll)), rtol=1e-6)
    assert trainer._reward_fn.experimental_get_tracing_count() == 1
    trainer.evaluate(np.arange(60) % V, B, T)
    np.testing.assert_array_equal(c.train_states[0].numpy(),
                                  np.ones([B, H]))


def test_reward_compiles_once_for_every_arc_and_equals_the_plain_pass():
    # XLA turns a traced slice start into a compile-time constant (one
    # compilation per arc); the search child gathers its weight blocks, so
    # the compiled reward takes the arc as a parameter.
    c = child(arc=None)
    trainer = PtbTrainer(c, train_cfg(), arc_fn=cycling_arcs(ARCS))
    plain = PtbTrainer(c, train_cfg(), arc_fn=cycling_arcs(ARCS),
                       reward_jit_compile=False)
    assert trainer.reward_jit_compile and not plain.reward_jit_compile
    x, y = window(seed=5)
    arc = tf.constant(PtbArc.parse(ARCS[1], D).to_list(), tf.int32)
    # A device name given: finding one runs an unseeded random op, which
    # the tests' op determinism forbids.
    device = tf.config.list_logical_devices("CPU")[0].name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # device_name is deprecated
        hlo = trainer._reward_fn.experimental_get_compiler_ir(x, y, arc)(
            stage="hlo", device_name=device)
    arc_length = len(PtbArc.parse(ARCS[1], D).to_list())
    assert any("s32[{}]".format(arc_length) in line and "parameter(" in line
               for line in hlo.splitlines())
    for text in ARCS:
        arc = PtbArc.parse(text, D).to_list()
        np.testing.assert_allclose(float(trainer.reward_nll(x, y, arc)),
                                   float(plain.reward_nll(x, y, arc)),
                                   rtol=1e-6)


def test_moving_average_has_tf1_semantics_and_checkpoints(tmp_path):
    c = child()
    trainer = PtbTrainer(c, train_cfg(moving_average=0.9, grad_bound=1e9))
    initial = [v.numpy() for v in trainer.variables]
    for s, v in zip(trainer.shadows, initial):
        np.testing.assert_array_equal(s.numpy(), v)
    x, y = window()
    expected = [v.copy() for v in initial]
    for _ in range(2):
        trainer.train_step(x, y)
        expected = [e - (e - v.numpy()) * np.float32(0.1)
                    for e, v in zip(expected, trainer.variables)]
    for s, e in zip(trainer.shadows, expected):
        np.testing.assert_allclose(s.numpy(), e, rtol=1e-6, atol=1e-7)
    live = [v.numpy() for v in trainer.variables]
    with trainer.averaged_weights():
        for v, e in zip(trainer.variables, expected):
            np.testing.assert_allclose(v.numpy(), e, rtol=1e-6, atol=1e-7)
        stream = np.random.default_rng(8).integers(0, V, 80)
        ref = trainer.evaluate(stream, B, T, averaged=False)
    for v, l in zip(trainer.variables, live):
        np.testing.assert_array_equal(v.numpy(), l)
    assert trainer.evaluate(stream, B, T)["total_loss"] == ref["total_loss"]
    assert trainer.evaluate(stream, B, T, averaged=False)["total_loss"] != \
        ref["total_loss"]
    # The optimiser's step and the shadows come back from a checkpoint.
    ckpt = tf.train.Checkpoint(**trainer.checkpoint_objects())
    path = ckpt.save(str(tmp_path / "ckpt"))
    saved = [s.numpy() for s in trainer.shadows]
    trainer.train_step(x, y)
    ckpt.restore(path).assert_existing_objects_matched()
    assert int(trainer.global_step) == 2
    for s, e in zip(trainer.shadows, saved):
        np.testing.assert_array_equal(s.numpy(), e)


def test_search_needs_an_arc_fn():
    with pytest.raises(ValueError, match="arc_fn"):
        PtbTrainer(child(arc=None), train_cfg())


def test_stream_rows_and_windows_follow_the_input_producer():
    stream = np.arange(23)
    rows = stream_rows(stream, 4)
    np.testing.assert_array_equal(rows, np.arange(20).reshape(4, 5))
    assert num_windows(np.zeros(23), 4, 2) == 2
    with pytest.raises(ValueError, match="too short"):
        PtbTrainer(child(), train_cfg()).evaluate(np.arange(5), 4, 2)
