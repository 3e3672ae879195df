"""enas_lm's controller (`controller.Controller`) and its REINFORCE
training (the shared `src.reinforce.Reinforce`, with TF1's
SyncReplicasOptimizer token rule and its default Adam).

An LSTM (hidden 64, one layer, no biases) writes a cell in the encoding of
`src.enas_lm.arcs.EnasLmArc`, two decisions per node k = 1..K:
- an LSTM step on the current input (the start embedding `g` for node 1,
  then the previous function's embedding row) gives h_k; node k's
  attention key is h_k w_1 (node 0's anchor and key are zeros);
- the node it reads, j in 0..k-1: logits v^T tanh(h_k w_2 + key_j),
  divided by the temperature, squashed to tanh_constant * tanh(.), minus
  (k - j)^2 / 6; the next input is anchor_j / (0.1 + k - j) (anchor_0 is
  zeros, anchor_j = h_j);
- a second LSTM step gives the function logits h w_emb^T (w_emb [4, 64]),
  divided by the temperature and squashed; the next input is the chosen
  function's row of w_emb.

The same code scores a given arc (teacher forcing). Variable paths are
enas_lm's: `controller/lstm/w` [128, 256], `controller/embedding/g`
[1, 64], `controller/embedding/w` [4, 64], `controller/attention/w_1`,
`w_2` [64, 64], `v` [64, 1], uniform in [-0.01, 0.01], in this order in
`trainable_variables`.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from src.controller import (ArcController, Decisions, WeightScope,
                            check_sampler_settings, require, seed_stream)
from src.enas_lm.arcs import ENAS_LM_FUNCS, EnasLmArc
from src.reinforce import Reinforce
from src.train_ops import all_finite

# The reward's numerator: reward = REWARD_CONSTANT / valid perplexity.
REWARD_CONSTANT = 80.0


@dataclasses.dataclass
class EnasLmControllerConfig:
    """enas_lm's controller hparams that shape sampling."""
    num_layers: int = 9
    lstm_size: int = 64
    temperature: float = 5.0
    tanh_constant: float = 2.25
    seed: int = None
    lstm_num_layers: int = 1   # enas_lm's controller has one layer

    def validate(self):
        require(self.num_layers >= 1, "--controller_num_layers must be at "
                "least 1, got {}".format(self.num_layers))
        check_sampler_settings(self)

    @property
    def arc_length(self):
        return 2 * self.num_layers


def distance_penalty(node):
    """(node - j)^2 / 6 for j = 0..node-1, [1, node] float32 (numpy)."""
    j = np.arange(node, dtype=np.float32)
    return ((node - j) ** 2 / 6.0)[None, :].astype(np.float32)


class EnasLmController(ArcController):
    """enas_lm's controller, named "controller".

    sample(), log_prob(arc) -> {"arc": int32 [2 K], "log_prob": float32
    (sum of the decisions' log-probabilities, negative), "entropy": sum over
    decisions of -log(p) p of the chosen value (gradient stopped), "ppl":
    exp of the mean negative log-probability, "nll": the per-decision
    negative log-probabilities [2 K], in arc order}.
    """

    def __init__(self, config, name="controller", **kwargs):
        super().__init__(name=name, **kwargs)
        config.validate()
        self.config = config
        size, funcs = config.lstm_size, len(ENAS_LM_FUNCS)
        seeds = seed_stream(config.seed, 6)

        def init():
            return keras.initializers.RandomUniform(
                -0.01, 0.01, seed=None if seeds is None else next(seeds))

        self.lstm = WeightScope("lstm", weights=[
            ("w", (2 * size, 4 * size), init())])
        self.emb = WeightScope("embedding", weights=[
            ("g", (1, size), init()), ("w", (funcs, size), init())])
        self.attention = WeightScope("attention", weights=[
            ("w_1", (size, size), init()), ("w_2", (size, size), init()),
            ("v", (size, 1), init())])
        self._penalties = [None] + [tf.constant(distance_penalty(k))
                                    for k in range(1, config.num_layers + 1)]
        self._finish_init()

    def build(self, input_shape=None):
        self.lstm.build()
        self.emb.build()
        self.attention.build()
        self._build_sampler()

    def _check_values(self, values):
        EnasLmArc.parse([int(v) for v in values], self.config.num_layers,
                        flag="controller arc")

    def _choose(self, logits, forced):
        """One decision (`_draw`) and -log(p) p of the choice."""
        choice, nll = self._draw(logits, forced)
        return choice, nll, self._chosen_entropy(nll)

    def _decide_all(self, forced_arc):
        cfg = self.config
        size = cfg.lstm_size
        w_lstm = tf.convert_to_tensor(self.lstm.w)
        g_emb = tf.convert_to_tensor(self.emb.g)
        w_emb = tf.convert_to_tensor(self.emb.w)
        w_1 = tf.convert_to_tensor(self.attention.w_1)
        w_2 = tf.convert_to_tensor(self.attention.w_2)
        v = tf.convert_to_tensor(self.attention.v)
        d = Decisions([w_lstm], size, self._choose, forced_arc)
        zeros = tf.zeros([1, size])
        anchors, keys = [zeros], [zeros]
        inputs = g_emb
        for node in range(1, cfg.num_layers + 1):
            h = d.step(inputs)
            anchors.append(h)
            keys.append(tf.matmul(h, w_1))
            scores = tf.tanh(tf.matmul(h, w_2)
                             + tf.concat(keys[:-1], axis=0))   # [node, H]
            logits = tf.reshape(tf.matmul(scores, v), [1, node])
            logits = self._temperature_tanh(logits) - self._penalties[node]
            prev = d.decide(logits, 2 * (node - 1))
            distance = tf.cast(node - prev, tf.float32)
            inputs = (tf.gather(tf.concat(anchors[:-1], axis=0), prev)
                      / (0.1 + distance[:, None]))
            h = d.step(inputs)
            logits = self._temperature_tanh(
                tf.matmul(h, w_emb, transpose_b=True))
            func = d.decide(logits, 2 * (node - 1) + 1)
            inputs = tf.gather(w_emb, func)
        nll = tf.concat(d.nlls, axis=0)
        return {"arc": tf.concat(d.choices, axis=0),
                "log_prob": -tf.reduce_sum(nll),
                "entropy": tf.reduce_sum(tf.concat(d.entropies, axis=0)),
                "ppl": tf.exp(tf.reduce_mean(nll)),
                "nll": nll}


class SyncReplicasReinforce(Reinforce):
    """The shared REINFORCE with enas_lm's optimiser: TF1's default Adam
    (beta1 0.9, beta2 0.999, epsilon 1e-8) under SyncReplicasOptimizer
    with one replica and `num_aggregate` gradients per update.

    TF1's token rule is kept: each call's gradient carries the update count
    of the token its previous call took (`local_step`); the accumulator
    drops it when that is older than the updates applied; an update
    enqueues `num_aggregate` tokens of the new count; the queue starts with
    `num_aggregate` tokens of 0. So the gradient of the call after the
    first update is dropped (updates after calls 10, 21, 31, 41, ... for
    10), and none after.

    After each `run`: `accepted` (this call's gradient was aggregated) and
    `applied` (it completed an update) hold the call's outcome.
    """

    def __init__(self, controller, reward_fn, cfg):
        cfg = dataclasses.replace(cfg, sync_replicas=True)
        super().__init__(controller, reward_fn, cfg)
        self.optimizer = keras.optimizers.Adam(
            cfg.lr, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
            name="controller_optimizer")
        self.optimizer.build(self.variables)
        n = self.aggregate
        self.local_step = tf.Variable(0, dtype=tf.int64, trainable=False,
                                      name="sync_rep_local_step")
        self.tokens = tf.Variable(tf.zeros([n], tf.int64),
                                  shape=tf.TensorShape([None]),
                                  trainable=False, name="tokens")
        self.accepted = tf.Variable(False, trainable=False, name="accepted")
        self.applied = tf.Variable(False, trainable=False, name="applied")

    def _aggregate(self, grads, loss, reward):
        grad_norm = tf.linalg.global_norm(grads)
        updates = tf.cast(self.optimizer.iterations, tf.int64)
        fresh = self.local_step >= updates
        accepted = tf.logical_and(fresh, all_finite([loss, reward,
                                                     grad_norm]))
        for acc, g in zip(self._accum, grads):
            acc.assign_add(tf.where(accepted, g, tf.zeros_like(g)))
        self._count.assign_add(tf.cast(accepted, tf.int64))
        n = self.aggregate

        def apply():
            mean = [acc / float(n) for acc in self._accum]
            self.optimizer.apply_gradients(zip(mean, self.variables))
            for acc in self._accum:
                acc.assign(tf.zeros_like(acc))
            self._count.assign(0)
            self.tokens.assign(tf.concat([
                self.tokens, tf.fill([n], tf.cast(self.optimizer.iterations,
                                                  tf.int64))], 0))
            return tf.constant(True)

        applied = tf.cond(self._count >= n, apply,
                          lambda: tf.constant(False))
        # This call takes the next token (the newest count when none is
        # left: TF1 would wait for the update that enqueues one).
        queue = tf.convert_to_tensor(self.tokens)
        padded = tf.concat([queue, tf.cast(self.optimizer.iterations,
                                           tf.int64)[None]], 0)
        self.local_step.assign(padded[0])
        self.tokens.assign(queue[1:])
        self.accepted.assign(accepted)
        self.applied.assign(applied)
        return tf.constant(self.cfg.lr, tf.float32), grad_norm

    def checkpoint_objects(self):
        objects = super().checkpoint_objects()
        objects.update(controller_sync={
            "local_step": self.local_step, "tokens": self.tokens,
            "count": self._count,
            **{"accum_{}".format(i): a for i, a in enumerate(self._accum)}})
        return objects

