"""The PTB search space's controller (the reference's `PTBEnasController`).

An LSTM that writes a recurrent cell in the encoding of
`src.ptb.arcs.PtbArc`: `2 * rhn_depth - 1` integers, node 0's activation,
then (previous node, activation) for each node i >= 1. It makes exactly
these decisions, in this order:

- node 0: an LSTM step fed the start embedding `g_emb`, whose output h_0 is
  node 0's anchor (and h_0 w_1 its attention key); a second step, fed
  `g_emb` again, whose output gives the activation logits h w_soft; the
  chosen activation's embedding row is the next input;
- node i >= 1: an LSTM step fed that input, whose output h_i becomes node
  i's anchor and key; the previous node j in 0..i-1 is chosen by the
  attention logits v^T tanh(h_j w_1 + h_i w_2) minus (i - j)^2 / 6 (a
  penalty on distant nodes); the next input is the chosen anchor divided by
  0.1 + (i - j); a second step on it gives the activation logits, and the
  chosen activation's embedding row is the next input.

Both kinds of logits are divided by `temperature` and squashed to
`tanh_constant * tanh(.)` when those are set; the distance penalty is
subtracted after the squashing. The controller samples `num_funcs`
activations: the reference's controller keeps its default of 2 (tanh, relu)
while its child knows 4 (`PTB_FUNCS`).

The same code scores a given arc (teacher forcing): the draws are replaced
by the arc's values, so a sampled arc and the same arc forced report the
same log-probability, entropy term and perplexity.

Variable paths are the reference's names: `controller/lstm/layer_{i}/w`,
`controller/embedding/g_emb`, `controller/embedding/w`,
`controller/softmax/w`, `controller/attention/w_1`, `w_2`, `v`; all uniform
in [-0.1, 0.1], and in this order in `trainable_variables` (the reference's
optimiser order).
"""

import dataclasses

import numpy as np
import tensorflow as tf

from src.controller import (ArcController, Decisions, WeightScope,
                            check_sampler_settings, require)
from src.ptb.arcs import PTB_FUNCS, PtbArc, ptb_arc_length


@dataclasses.dataclass
class PtbControllerConfig:
    """The reference controller's constructor arguments that shape sampling.

    num_funcs: how many of the child's activations (`PTB_FUNCS`, in order)
      the controller chooses among; the reference's controller uses its
      default, 2, under every script.
    """
    rhn_depth: int = 5
    num_funcs: int = 2
    lstm_size: int = 100
    lstm_num_layers: int = 1
    tanh_constant: float = None
    temperature: float = None
    seed: int = None

    def validate(self):
        require(self.rhn_depth >= 1, "--child_rhn_depth must be at least 1, "
                "got {}".format(self.rhn_depth))
        require(1 <= self.num_funcs <= len(PTB_FUNCS),
                "--controller_num_funcs={} must lie in 1..{}: the child has "
                "the activations {}".format(self.num_funcs, len(PTB_FUNCS),
                                            ", ".join(PTB_FUNCS)))
        check_sampler_settings(self)

    @property
    def arc_length(self):
        """Integers in a PTB arc: 2 * rhn_depth - 1."""
        return ptb_arc_length(self.rhn_depth)


def distance_penalty(node):
    """What node `node`'s attention logits lose for each earlier node j:
    (node - j)^2 / 6, shape [1, node] float32 (numpy)."""
    j = np.arange(node, dtype=np.float32)
    return ((node - j) ** 2 / 6.0)[None, :].astype(np.float32)


class PtbController(ArcController):
    """The PTB controller (`PTBEnasController`), named "controller".

    sample(): draws an arc. log_prob(arc): scores a given arc. Both return
    the dict
      arc: int32 [2 * rhn_depth - 1], the PtbArc encoding;
      log_prob: float32 scalar, sum of the log-probabilities of all
        2 * rhn_depth - 1 decisions (negative; the reference's
        `sample_log_probs`, once summed, is its negation);
      entropy: float32 scalar, sum over decisions of -log(p) * p of the
        CHOSEN value only (the reference's `sample_entropy`; gradient
        stopped);
      ppl: float32 scalar, exp of the mean negative log-probability per
        decision (the reference's `ppl`).
    Draws come from `self.seed_generator` (a keras.random.SeedGenerator whose
    state is a variable of this layer): checkpoint it to resume the stream.
    """

    def __init__(self, config, name="controller", **kwargs):
        super().__init__(name=name, **kwargs)
        seeds = self._start_init(config, config.lstm_num_layers + 6)
        cfg = config
        size, funcs = cfg.lstm_size, cfg.num_funcs
        # Unlike the CIFAR controllers, g_emb lives under `embedding/`.
        self.emb = WeightScope(
            "embedding", weights=[("g_emb", (1, size)), ("w", (funcs, size))],
            seeds=seeds)
        self.softmax = WeightScope("softmax", weights=[("w", (size, funcs))],
                                   seeds=seeds)
        self.attention = WeightScope(
            "attention", weights=[("w_1", (size, size)),
                                  ("w_2", (size, size)), ("v", (size, 1))],
            seeds=seeds)
        self._penalties = [None] + [tf.constant(distance_penalty(i))
                                    for i in range(1, cfg.rhn_depth)]
        self._finish_init()

    def build(self, input_shape=None):
        # The base's build, with g_emb taken from the `embedding` scope.
        self.lstm.build()
        self.emb.build()
        self.softmax.build()
        self.attention.build()
        self._build_sampler()

    @property
    def g_emb(self):
        """The start embedding `controller/embedding/g_emb` (a property, so
        that Keras does not also track it as this layer's own weight, which
        would move it to the front of `trainable_variables`)."""
        return self.emb.g_emb

    def _check_values(self, values):
        cfg = self.config
        # PtbArc.parse names the node and position of the first problem.
        PtbArc.parse([int(v) for v in values], cfg.rhn_depth,
                     num_funcs=cfg.num_funcs, flag="controller arc")

    # -- the decisions ----------------------------------------------------

    def _choose(self, logits, forced):
        """One decision (`_draw`) and -log(p) p of the choice."""
        choice, nll = self._draw(logits, forced)
        return choice, nll, self._chosen_entropy(nll)

    def _decide_all(self, forced_arc):
        cfg = self.config
        # Each weight read once.
        w_lstm = [tf.convert_to_tensor(scope.w)
                  for scope in self.lstm.children]
        g_emb = tf.convert_to_tensor(self.emb.g_emb)
        w_emb = tf.convert_to_tensor(self.emb.w)
        w_soft = tf.convert_to_tensor(self.softmax.w)
        w_1 = tf.convert_to_tensor(self.attention.w_1)
        w_2 = tf.convert_to_tensor(self.attention.w_2)
        v = tf.convert_to_tensor(self.attention.v)
        d = Decisions(w_lstm, cfg.lstm_size, self._choose, forced_arc)
        step, decide = d.step, d.decide

        anchors, keys = [], []
        inputs = g_emb
        for node in range(cfg.rhn_depth):
            h = step(inputs)
            anchors.append(h)
            keys.append(tf.matmul(h, w_1))
            if node > 0:
                scores = tf.tanh(tf.concat(keys[:-1], axis=0)
                                 + tf.matmul(h, w_2))
                logits = tf.transpose(tf.matmul(scores, v))  # [1, node]
                logits = self._temperature_tanh(logits) - self._penalties[node]
                prev = decide(logits, 2 * node - 1)
                distance = tf.cast(node - prev, tf.float32)
                inputs = (tf.gather(tf.concat(anchors[:-1], axis=0), prev)
                          / (0.1 + distance[:, None]))
            else:
                inputs = g_emb
            h = step(inputs)
            func = decide(self._temperature_tanh(tf.matmul(h, w_soft)), 2 * node)
            inputs = tf.gather(w_emb, func)

        nll = tf.concat(d.nlls, axis=0)
        return {
            "arc": tf.concat(d.choices, axis=0),
            "log_prob": -tf.reduce_sum(nll),
            "entropy": tf.reduce_sum(tf.concat(d.entropies, axis=0)),
            "ppl": tf.exp(tf.reduce_mean(nll)),
        }
