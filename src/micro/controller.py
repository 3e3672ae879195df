"""The micro search space's controller (the reference's `MicroController`).

An LSTM that writes a micro architecture: one flat int32 vector of
8 * num_cells integers, the normal cell's 4 * num_cells then the reduction
cell's, each node as (index_1, op_1, index_2, op_2) (the encoding of
`--child_fixed_arc` and of `src.micro.arcs.MicroArc`; op ids index
`arcs.MICRO_OPS`).

Each cell is written by the same procedure, the reduction cell's LSTM
starting from the state the normal cell's left (its input is reset to the
start embedding `g_emb`, and its anchors start afresh):

- two LSTM steps, both fed `g_emb`, stand for the cell's two inputs: their
  outputs go through `attention/w_1` to become the first two attention keys,
  while the anchors themselves (what an index feeds back) are zeros;
- per node k (0-based), four LSTM steps, the first fed `g_emb`:
  index_1 and index_2, each chosen among the k + 2 anchors by the attention
  logits v^T tanh(key_j + h w_2), the next input being the chosen anchor;
  then op_1 and op_2, each from the logits h w_soft + b_soft, the next input
  being the op's embedding row; then a fifth step fed the last op's
  embedding, whose output becomes node k's anchor and attention key.

Logits are divided by `temperature` when set; index logits are then squashed
to `tanh_constant * tanh(.)`, op logits to
`(tanh_constant / op_tanh_reduce) * tanh(.)`, when `tanh_constant` is set.
The normal cell's op logits then get the fixed bias [0.25, 0.25, -0.25, ...]
added (after the squashing); the reduction cell's do not. The learnable op
bias `softmax/b` starts at [10, 10, 0, ...] in both.

The same code scores a given arc (teacher forcing): the draws are replaced
by the arc's values, so a sampled arc and the same arc forced report the same
log-probability and entropy.

Variable paths are the reference's names: `controller/lstm/layer_{i}/w`,
`controller/g_emb`, `controller/emb/w`, `controller/softmax/w`,
`controller/softmax/b`, `controller/attention/w_1`, `w_2`, `v`; all but
`softmax/b` uniform in [-0.1, 0.1].
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from src.micro import arcs
from src.controller import (ArcController, Decisions, WeightScope,
                            check_sampler_settings, require)


def micro_op_bias(num_branches):
    """The learnable op bias's initial value: 10 for the first two ops (the
    separable convolutions), 0 for the others; shape [1, num_branches]."""
    return np.array([[10.0, 10.0] + [0.0] * (num_branches - 2)], np.float32)


def micro_normal_op_bias(num_branches):
    """The fixed bias the normal cell adds to its op logits: +0.25 for the
    first two ops, -0.25 for the others; shape [1, num_branches]."""
    return np.array([[0.25, 0.25] + [-0.25] * (num_branches - 2)],
                    np.float32)


@dataclasses.dataclass
class MicroControllerConfig:
    """The reference controller's constructor arguments that shape sampling.

    num_branches is the number of ops (5 in the micro search space); the
    entry point should keep it equal to the child's op table.
    """
    num_cells: int = 5
    num_branches: int = 5
    lstm_size: int = 64
    lstm_num_layers: int = 1
    tanh_constant: float = None
    op_tanh_reduce: float = 1.0
    temperature: float = None
    seed: int = None

    def validate(self):
        require(self.num_cells >= 1, "--child_num_cells must be at least 1, "
                "got {}".format(self.num_cells))
        require(self.num_branches >= 2, "--child_num_branches must be at "
                "least 2 for the micro controller (its op biases favour the "
                "first two ops), got {}".format(self.num_branches))
        check_sampler_settings(self)
        require(self.op_tanh_reduce is not None and self.op_tanh_reduce > 0,
                "--controller_op_tanh_reduce={} must be positive: the op "
                "logits' tanh constant is divided by it".format(
                    self.op_tanh_reduce))

    @property
    def arc_length(self):
        """Integers in a micro arc: 4 per node, normal then reduction cell."""
        return arcs.micro_arc_length(self.num_cells)


class MicroController(ArcController):
    """The micro controller (`MicroController`), named "controller".

    sample(): draws an arc. log_prob(arc): scores a given arc. Both return
    the dict
      arc: int32 [8 * num_cells], normal cell then reduction cell, each node
        (index_1, op_1, index_2, op_2);
      log_prob: float32 scalar, sum of the log-probabilities of all 8 *
        num_cells decisions (negative; the reference's `sample_log_prob` is
        its negation);
      entropy: float32 scalar, sum over decisions of the entropy of the
        whole categorical distribution (the reference's `sample_entropy`;
        gradient stopped).
    Draws come from `self.seed_generator` (a keras.random.SeedGenerator whose
    state is a variable of this layer): checkpoint it to resume the stream.
    """

    def __init__(self, config, name="controller", **kwargs):
        super().__init__(name=name, **kwargs)
        seeds = self._start_init(config, config.lstm_num_layers + 6)
        cfg = config
        size, ops = cfg.lstm_size, cfg.num_branches
        self.emb = WeightScope("emb", weights=[("w", (ops, size), None)],
                          seeds=seeds)
        self.softmax = WeightScope(
            "softmax", weights=[
                ("w", (size, ops), None),
                ("b", (1, ops),
                 keras.initializers.Constant(micro_op_bias(ops)))],
            seeds=seeds)
        self.attention = WeightScope(
            "attention", weights=[("w_1", (size, size), None),
                                  ("w_2", (size, size), None),
                                  ("v", (size, 1), None)],
            seeds=seeds)
        self._normal_op_bias = tf.constant(micro_normal_op_bias(ops))
        self._finish_init()

    def _check_values(self, values):
        cfg = self.config
        for pos, value in enumerate(values):
            cell, rest = divmod(pos, 4 * cfg.num_cells)
            node, slot = divmod(rest, 4)
            # Slots 0 and 2 are input indices, 1 and 3 op ids.
            bound = node + 2 if slot % 2 == 0 else cfg.num_branches
            if not 0 <= value < bound:
                raise ValueError(
                    "arc position {} ({} cell, node {}, {}) is {}: it must "
                    "lie in [0, {})".format(
                        pos, ("normal", "reduction")[cell], node,
                        ("index_1", "op_1", "index_2", "op_2")[slot], value,
                        bound))

    # -- the decisions ----------------------------------------------------

    def _choose(self, logits, forced):
        """One decision (`_draw`) and the entropy of the whole distribution
        [1], gradient stopped (the reference's `sample_entropy` term; its
        kernel called directly as `_draw`'s)."""
        choice, nll = self._draw(logits, forced)
        entropy, _ = tf.raw_ops.SoftmaxCrossEntropyWithLogits(
            features=logits, labels=tf.nn.softmax(logits))
        return choice, nll, tf.stop_gradient(entropy)

    def _index_logits(self, w, keys, h):
        cfg = self.config
        scores = tf.tanh(keys + tf.matmul(h, w["w_2"]))
        logits = tf.transpose(tf.matmul(scores, w["v"]))  # [1, k]
        if cfg.temperature is not None:
            logits = logits / cfg.temperature
        if cfg.tanh_constant is not None:
            logits = cfg.tanh_constant * tf.tanh(logits)
        return logits

    def _op_logits(self, w, h, normal):
        cfg = self.config
        logits = tf.matmul(h, w["w_soft"]) + w["b_soft"]
        if cfg.temperature is not None:
            logits = logits / cfg.temperature
        if cfg.tanh_constant is not None:
            logits = (cfg.tanh_constant / cfg.op_tanh_reduce) * tf.tanh(logits)
        if normal:
            logits = logits + self._normal_op_bias
        return logits

    def _decide_all(self, forced_arc):
        cfg = self.config
        # Each weight read once: the graph holds ~50 LSTM steps.
        w = {"lstm": [tf.convert_to_tensor(scope.w)
                      for scope in self.lstm.children]}
        for key, var in (("g_emb", self.g_emb), ("emb", self.emb.w),
                         ("w_soft", self.softmax.w),
                         ("b_soft", self.softmax.b),
                         ("w_1", self.attention.w_1),
                         ("w_2", self.attention.w_2),
                         ("v", self.attention.v)):
            w[key] = tf.convert_to_tensor(var)
        d = Decisions(w["lstm"], cfg.lstm_size, self._choose, forced_arc)
        step, decide, zeros = d.step, d.decide, d.zeros

        pos = 0
        for normal in (True, False):
            # The cell's two inputs: zero anchors, keys from two LSTM steps.
            anchors, keys = [zeros, zeros], []
            for _ in range(2):
                keys.append(tf.matmul(step(w["g_emb"]), w["w_1"]))
            inputs = w["g_emb"]
            for _ in range(cfg.num_cells):
                # (index_1, op_1, index_2, op_2): the two indices are drawn
                # first, then the two ops.
                for i in range(2):
                    h = step(inputs)
                    index = decide(
                        self._index_logits(w, tf.concat(keys, axis=0), h),
                        pos + 2 * i)
                    inputs = tf.gather(tf.concat(anchors, axis=0), index)
                for i in range(2):
                    h = step(inputs)
                    op = decide(self._op_logits(w, h, normal),
                                pos + 2 * i + 1)
                    inputs = tf.gather(w["emb"], op)
                h = step(inputs)
                anchors.append(h)
                keys.append(tf.matmul(h, w["w_1"]))
                inputs = w["g_emb"]
                pos += 4

        # Decisions were made in the order i1, i2, o1, o2; the arc is
        # (i1, o1, i2, o2) per node.
        order = []
        for node in range(2 * cfg.num_cells):
            order += [4 * node, 4 * node + 2, 4 * node + 1, 4 * node + 3]
        return {
            "arc": tf.concat([d.choices[j] for j in order], axis=0),
            "log_prob": -tf.reduce_sum(tf.concat(d.nlls, axis=0)),
            "entropy": tf.reduce_sum(tf.concat(d.entropies, axis=0)),
        }
