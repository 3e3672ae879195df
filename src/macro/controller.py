"""The macro search space's controller (the reference's `GeneralController`).

An LSTM that writes a macro architecture (the encoding of
`src.macro.arcs.MacroArc`) decision by decision. Per layer:

- whole channels: one op id, sampled from a softmax over the LSTM output;
  the op's embedding is the next input;
- per channel: for each branch a start channel then a channel count, each
  its own LSTM step, softmax and embedding; counts are restricted so that
  start + count <= out_filters;
- then one more LSTM step, and for layer_id > 0 one 2-way decision per
  earlier layer (skip from it or not) scored by attention over the earlier
  layers' outputs ("anchors"); the next input is the sum of the chosen
  anchors divided by (1 + their number), or the start embedding `g_emb`
  after layer 0.

Every decision's logits are divided by `temperature` and squashed to
`tanh_constant * tanh(.)` when those are set. The same code scores a given
arc (teacher forcing): the draws are replaced by the arc's values, so the
reported log-probability, entropy term and skip statistics of a sampled arc
and of the same arc forced agree.

Variable paths are the reference's names: `controller/lstm/layer_0/w`,
`controller/g_emb`, `controller/emb/w`, `controller/softmax/w` (per channel:
`controller/emb/branch_{b}/w_start`, `.../w_count`, and the same under
`softmax`), `controller/attention/w_1`, `w_2`, `v`; all uniform in
[-0.1, 0.1].
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from src.macro import arcs
from src.controller import (ArcController, Decisions, WeightScope,
                            check_sampler_settings, require)


@dataclasses.dataclass
class MacroControllerConfig:
    """The reference controller's constructor arguments that shape sampling.

    op_tanh_reduce is accepted and ignored, as by the reference's macro
    controller. skip_weight is not used here: it scales the skip penalty in
    the controller's loss (the trainer's business).
    """
    num_layers: int = 4
    num_branches: int = 6
    out_filters: int = 48
    lstm_size: int = 64
    lstm_num_layers: int = 1
    tanh_constant: float = None
    op_tanh_reduce: float = 1.0
    temperature: float = None
    search_whole_channels: bool = True
    skip_target: float = 0.8
    skip_weight: float = 0.0
    seed: int = None

    def validate(self):
        require(self.num_layers >= 1, "--child_num_layers must be at least "
                "1, got {}".format(self.num_layers))
        require(self.num_branches >= 1, "--child_num_branches must be at "
                "least 1, got {}".format(self.num_branches))
        require(self.search_whole_channels or self.out_filters >= 2,
                "--child_out_filters={} leaves no channel count to choose: "
                "the per-channel controller needs at least 2".format(
                    self.out_filters))
        check_sampler_settings(self)
        require(0.0 < self.skip_target < 1.0,
                "--controller_skip_target={} must lie strictly between 0 "
                "and 1: the skip penalty takes its logarithm".format(
                    self.skip_target))

    @property
    def arc_length(self):
        return arcs.macro_arc_length(self.num_layers, self.num_branches,
                                     self.search_whole_channels)


class MacroController(ArcController):
    """The macro controller (`GeneralController`), named "controller".

    sample(): draws an arc. log_prob(arc): scores a given arc. Both return
    the dict
      arc: int32 [arc_length], the MacroArc encoding;
      log_prob: float32 scalar, sum of the log-probabilities of all decisions
        (negative; the reference's `sample_log_prob` is its negation);
      entropy: sum over decisions of -log(p) * p of the CHOSEN value only
        (the reference's `sample_entropy`; gradient stopped);
      skip_count: float32, number of skips chosen;
      skip_rate: skip_count / (num_layers (num_layers - 1) / 2);
      skip_penalty: per layer with skips, the sum over its skip decisions of
        KL(p || [1 - target, target]) with p = sigmoid([-q, q]) = [1 -
        sigmoid(q), sigmoid(q)] (q the decision's skip logit after
        temperature / tanh; the skip itself is drawn from softmax([-q, q]),
        whose skip probability is sigmoid(2 q)), averaged over those layers
        (the reference's `skip_penaltys`; 0 with a single layer).
    Draws come from `self.seed_generator` (a keras.random.SeedGenerator whose
    state is a variable of this layer): checkpoint it to resume the stream.
    """

    def __init__(self, config, name="controller", **kwargs):
        super().__init__(name=name, **kwargs)
        seeds = self._start_init(
            config, config.lstm_num_layers + 5 + 4 * config.num_branches)
        cfg = config
        size = cfg.lstm_size
        if cfg.search_whole_channels:
            self.emb = WeightScope(
                "emb", weights=[("w", (cfg.num_branches, size))], seeds=seeds)
            self.softmax = WeightScope(
                "softmax", weights=[("w", (size, cfg.num_branches))],
                seeds=seeds)
        else:
            f = cfg.out_filters
            self.emb = WeightScope("emb", children=[
                WeightScope("branch_{}".format(b),
                       weights=[("w_start", (f, size)),
                                ("w_count", (f - 1, size))], seeds=seeds)
                for b in range(cfg.num_branches)], seeds=seeds)
            self.softmax = WeightScope("softmax", children=[
                WeightScope("branch_{}".format(b),
                       weights=[("w_start", (size, f)),
                                ("w_count", (size, f - 1))], seeds=seeds)
                for b in range(cfg.num_branches)], seeds=seeds)
        self.attention = WeightScope(
            "attention", weights=[("w_1", (size, size)),
                                  ("w_2", (size, size)), ("v", (size, 1))],
            seeds=seeds)
        self._finish_init()

    # -- the decisions ----------------------------------------------------

    def _choose(self, logits, forced):
        """One row of decisions: logits [n, k]; forced int32 [n] or None.

        Returns (choice int32 [n], neg_log_prob scalar, entropy scalar), the
        negative log-probability and the -log(p) p terms summed over rows."""
        if forced is None:
            choice = keras.random.categorical(
                logits, 1, dtype="int32", seed=self.seed_generator)[:, 0]
        else:
            choice = forced
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=choice, logits=logits)
        entropy = tf.stop_gradient(nll * tf.exp(-nll))
        return choice, tf.reduce_sum(nll), tf.reduce_sum(entropy)

    def _decide_all(self, forced_arc):
        cfg = self.config
        d = Decisions([scope.w for scope in self.lstm.children],
                      cfg.lstm_size)
        step = d.step

        skip_targets = tf.constant(
            [1.0 - cfg.skip_target, cfg.skip_target], tf.float32)
        pos = 0

        def forced(n, offset=0):
            if forced_arc is None:
                return None
            return forced_arc[pos:pos + n] - offset

        skip_counts, skip_penalties = [], []
        anchors, anchors_w_1 = [], []
        inputs = self.g_emb
        for layer_id in range(cfg.num_layers):
            if cfg.search_whole_channels:
                h = step(inputs)
                logits = self._temperature_tanh(tf.matmul(h, self.softmax.w))
                op = d.record(*self._choose(logits, forced(1)))
                pos += 1
                inputs = tf.gather(self.emb.w, op)
            else:
                for b in range(cfg.num_branches):
                    soft, emb = self.softmax.children[b], self.emb.children[b]
                    h = step(inputs)
                    logits = self._temperature_tanh(tf.matmul(h, soft.w_start))
                    start = d.record(*self._choose(logits, forced(1)))
                    pos += 1
                    inputs = tf.gather(emb.w_start, start)

                    h = step(inputs)
                    logits = self._temperature_tanh(tf.matmul(h, soft.w_count))
                    # Count index c stands for c + 1 channels; allowed while
                    # start + c + 1 <= out_filters.
                    allowed = tf.less_equal(
                        tf.range(cfg.out_filters - 1, dtype=tf.int32)[None, :],
                        cfg.out_filters - 1 - start[:, None])
                    logits = tf.where(
                        allowed, logits,
                        tf.fill(tf.shape(logits), -np.inf))
                    count, nll, ent = self._choose(logits, forced(1, 1))
                    pos += 1
                    d.record(count + 1, nll, ent)
                    inputs = tf.gather(emb.w_count, count)

            h = step(inputs)
            if layer_id > 0:
                query = tf.tanh(tf.concat(anchors_w_1, axis=0)
                                + tf.matmul(h, self.attention.w_2))
                query = tf.matmul(query, self.attention.v)
                logits = self._temperature_tanh(
                    tf.concat([-query, query], axis=1))
                skip = d.record(*self._choose(logits, forced(layer_id)))
                pos += layer_id

                skip_prob = tf.sigmoid(logits)
                skip_penalties.append(tf.reduce_sum(
                    skip_prob * tf.math.log(skip_prob / skip_targets)))

                skip = tf.cast(skip, tf.float32)[None, :]
                num_skips = tf.reduce_sum(skip)
                skip_counts.append(num_skips)
                inputs = (tf.matmul(skip, tf.concat(anchors, axis=0))
                          / (1.0 + num_skips))
            else:
                inputs = self.g_emb
            anchors.append(h)
            anchors_w_1.append(tf.matmul(h, self.attention.w_1))

        if skip_counts:
            skip_count = tf.reduce_sum(tf.stack(skip_counts))
            skip_penalty = tf.reduce_mean(tf.stack(skip_penalties))
        else:
            skip_count = tf.constant(0.0)
            skip_penalty = tf.constant(0.0)
        num_pairs = cfg.num_layers * (cfg.num_layers - 1) // 2
        return {
            "arc": tf.concat(d.choices, axis=0),
            "log_prob": -tf.reduce_sum(tf.stack(d.nlls)),
            "entropy": tf.reduce_sum(tf.stack(d.entropies)),
            "skip_count": skip_count,
            "skip_rate": skip_count / float(max(1, num_pairs)),
            "skip_penalty": skip_penalty,
        }
