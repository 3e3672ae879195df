"""REINFORCE arithmetic on a hand-computed example."""

import math

import numpy as np
import pytest
import tensorflow as tf

from src.reinforce import Reinforce, ReinforceConfig


class TwoWayController(tf.Module):
    """Always 'samples' choice 1 of softmax(w); entropy -p log p of it."""

    def __init__(self):
        self.w = tf.Variable([0.0, 0.0])

    def sample(self):
        logp = tf.nn.log_softmax(self.w)[1]
        return {"arc": tf.constant([1]), "log_prob": logp,
                "entropy": -logp * tf.exp(logp),
                "skip_rate": tf.constant(1.0), "skip_penalty": self.w[0] ** 2}


def reward_of(value):
    return lambda arc, *batch: tf.constant(value, tf.float32)


def test_baseline_moves_first_then_the_loss_uses_it():
    ctrl = TwoWayController()
    r = Reinforce(ctrl, reward_of(0.75), ReinforceConfig(bl_dec=0.9, lr=0.1))
    out = r.run()
    b = 0.0 - (1 - 0.9) * (0.0 - 0.75)
    assert float(out["baseline"]) == pytest.approx(b)
    assert float(out["loss"]) == pytest.approx(-math.log(0.5) * (0.75 - b),
                                               rel=1e-6)
    # d/dw [-log p1 * (R - b)] = -(R - b) * ([0, 1] - [0.5, 0.5])
    g = -(0.75 - b) * np.array([-0.5, 0.5])
    assert float(out["grad_norm"]) == pytest.approx(np.linalg.norm(g),
                                                    rel=1e-5)
    assert int(r.train_step) == 1
    assert float(out["valid_acc"]) == pytest.approx(0.75)


def test_entropy_bonus_is_added_to_the_reward_and_skip_penalty_to_the_loss():
    ctrl = TwoWayController()
    ctrl.w.assign([1.0, 0.0])
    cfg = ReinforceConfig(bl_dec=0.5, entropy_weight=0.1, skip_weight=2.0)
    out = Reinforce(ctrl, reward_of(0.5), cfg).run()
    p1 = math.exp(0.0) / (math.exp(1.0) + 1.0)
    ent = -math.log(p1) * p1
    reward = 0.5 + 0.1 * ent
    b = 0.0 - 0.5 * (0.0 - reward)
    assert float(out["reward"]) == pytest.approx(reward, rel=1e-6)
    assert float(out["loss"]) == pytest.approx(
        -math.log(p1) * (reward - b) + 2.0 * 1.0, rel=1e-6)


def test_sync_replicas_averages_num_aggregate_runs_per_update():
    ctrl = TwoWayController()
    r = Reinforce(ctrl, reward_of(1.0), ReinforceConfig(
        sync_replicas=True, num_aggregate=3, lr=0.1))
    before = ctrl.w.numpy().copy()
    r.run(), r.run()
    assert int(r.train_step) == 0
    np.testing.assert_array_equal(ctrl.w.numpy(), before)
    r.run()
    assert int(r.train_step) == 1
    assert not np.allclose(ctrl.w.numpy(), before)
    assert r.run.experimental_get_tracing_count() == 1
