"""What the LSTM controllers share (the reference's `src/controller.py` is
their base class too): weight scopes with the reference's names, seeded
uniform initialisation, and the sample / teacher-forcing plumbing.

A controller subclass creates its scopes in `__init__`, then calls
`_finish_init()`, and implements `_decide_all(arc)`: one pass over every
decision, drawing where `arc` is None and taking the arc's values otherwise,
returning the dict its docstring describes.
"""

import keras
import numpy as np
import tensorflow as tf

from src.common_ops import stacked_lstm_step, traced
from src.errors import UserError


def require(ok, message):
    """Raises UserError(message) unless `ok` (config validation)."""
    if not ok:
        raise UserError(message)


def check_sampler_settings(cfg):
    """What every controller config needs: a real LSTM and a positive
    temperature when one is set."""
    require(cfg.lstm_size >= 1 and cfg.lstm_num_layers >= 1,
            "the controller's LSTM needs a positive size and layer count, "
            "got {} x {}".format(cfg.lstm_size, cfg.lstm_num_layers))
    require(cfg.temperature is None or cfg.temperature > 0,
            "--controller_temperature={} must be positive (or unset)".format(
                cfg.temperature))


def uniform_init(seeds):
    """Uniform in [-0.1, 0.1] with the next seed of `seeds` (None: Keras'
    global generator). One seed per variable: a Keras initializer reused with
    the same integer seed draws the same values for every variable of a
    shape."""
    return keras.initializers.RandomUniform(
        -0.1, 0.1, seed=None if seeds is None else next(seeds))


def seed_stream(seed, count):
    """`count` well-mixed integer seeds derived from `seed` (None: None)."""
    if seed is None:
        return None
    return iter(int(s) for s in
                np.random.SeedSequence(seed).generate_state(count))


class WeightScope(keras.layers.Layer):
    """Holds weights under one name scope, to give them the reference's
    paths (`controller/attention/w_1`). weights: (name, shape) pairs or
    (name, shape, initializer) triples, a missing or None initializer
    meaning `uniform_init(seeds)`; children: nested scopes, built first."""

    def __init__(self, name, weights=(), children=(), seeds=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self._weight_specs = [tuple(w) + (None,) * (3 - len(w))
                              for w in weights]
        self.children = list(children)
        self._seeds = seeds

    def build(self, input_shape=None):
        for child in self.children:
            child.build()
        for name, shape, initializer in self._weight_specs:
            if initializer is None:
                initializer = uniform_init(self._seeds)
            setattr(self, name, self.add_weight(
                name=name, shape=shape, initializer=initializer))
        self.built = True


class Decisions:
    """The bookkeeping of one pass over a controller's decisions.

    `step(x)` feeds x [1, lstm_size] to the stacked LSTM (weights `w_lstm`,
    state from zeros) and returns the top layer's output [1, lstm_size].
    `record(choice, nll, entropy)` keeps one decision's values;
    `decide(logits, pos)` draws (or, with `forced_arc`, takes the arc's
    value at `pos`) through `choose(logits, forced)` and records it.
    `choices`, `nlls`, `entropies`: the recorded values, in order.
    """

    def __init__(self, w_lstm, lstm_size, choose=None, forced_arc=None):
        self.zeros = tf.zeros([1, lstm_size], tf.float32)
        self._c = [self.zeros] * len(w_lstm)
        self._h = [self.zeros] * len(w_lstm)
        self._w = w_lstm
        self._choose = choose
        self.forced_arc = forced_arc
        self.choices, self.nlls, self.entropies = [], [], []

    def step(self, x):
        self._c, self._h = stacked_lstm_step(x, self._c, self._h, self._w)
        return self._h[-1]

    def forced(self, pos, n=1):
        """The arc's n values at `pos`, or None when drawing."""
        if self.forced_arc is None:
            return None
        return self.forced_arc[pos:pos + n]

    def record(self, choice, nll, entropy):
        self.choices.append(choice)
        self.nlls.append(nll)
        self.entropies.append(entropy)
        return choice

    def decide(self, logits, pos):
        return self.record(*self._choose(logits, self.forced(pos)))


class ArcController(keras.layers.Layer):
    """Base of the controllers: `sample()` and `log_prob(arc)` as traced
    functions over the subclass's `_decide_all`, weights in the reference's
    order (lstm, g_emb, emb, softmax, attention), and a seed generator
    (`controller/sampler/...`) whose state a checkpoint keeps."""

    def _start_init(self, config, num_seeds):
        """Validates and keeps `config`, starts the stream of `num_seeds`
        initialiser seeds (drawn as the weights are built, in the base's
        order), and creates the stacked LSTM's scope (`lstm/layer_<i>/w`,
        [2 lstm_size, 4 lstm_size]). Returns the seed stream."""
        config.validate()
        self.config = config
        size = config.lstm_size
        seeds = self._seeds = seed_stream(config.seed, num_seeds)
        self.lstm = WeightScope("lstm", children=[
            WeightScope("layer_{}".format(i),
                        weights=[("w", (2 * size, 4 * size))], seeds=seeds)
            for i in range(config.lstm_num_layers)], seeds=seeds)
        return seeds

    def _draw(self, logits, forced):
        """One decision: logits [1, k]; forced int32 [1] or None (draw from
        `self.seed_generator`). Returns (choice int32 [1], negative
        log-probability [1]). The cross-entropy kernel is called directly:
        the tf.nn wrapper adds a dozen reshaping ops per call, which the
        decisions multiply into a slower trace."""
        if forced is None:
            choice = keras.random.categorical(
                logits, 1, dtype="int32", seed=self.seed_generator)[:, 0]
        else:
            choice = forced
        nll, _ = tf.raw_ops.SparseSoftmaxCrossEntropyWithLogits(
            features=logits, labels=choice)
        return choice, nll

    @staticmethod
    def _chosen_entropy(nll):
        """-log(p) p of the chosen value [1], gradient stopped (the PTB
        controllers' `sample_entropy` term)."""
        return tf.stop_gradient(nll * tf.exp(-nll))

    def _temperature_tanh(self, logits):
        """logits / temperature, then tanh_constant * tanh(.), each when
        configured (the reference's order)."""
        cfg = self.config
        if cfg.temperature is not None:
            logits = logits / cfg.temperature
        if cfg.tanh_constant is not None:
            logits = cfg.tanh_constant * tf.tanh(logits)
        return logits

    def _finish_init(self):
        self.build()
        self._sample_fn = traced(self._sample_graph)
        self._log_prob_fn = traced(
            self._log_prob_graph,
            input_signature=[tf.TensorSpec([self.config.arc_length],
                                           tf.int32)])

    def build(self, input_shape=None):
        self.lstm.build()
        self.g_emb = self.add_weight(
            name="g_emb", shape=(1, self.config.lstm_size),
            initializer=uniform_init(self._seeds))
        self.emb.build()
        self.softmax.build()
        self.attention.build()
        self._build_sampler()

    def _build_sampler(self):
        """The seed generator of the draws, built last (created in the
        layer's scope: `controller/sampler/...` paths)."""
        self.seed_generator = keras.random.SeedGenerator(
            seed=self.config.seed, name="sampler")
        self.built = True

    def sample(self):
        """Draws one arc; returns the dict described in the class doc."""
        return self._sample_fn()

    def log_prob(self, arc):
        """Scores `arc` (any integer sequence of arc_length values) with the
        same decisions as `sample`, the draws replaced by the arc's values.
        Returns the same dict (`arc` is the given arc)."""
        arc = tf.cast(tf.convert_to_tensor(arc), tf.int32)
        n = self.config.arc_length
        if arc.shape.rank != 1 or (arc.shape[0] is not None
                                   and arc.shape[0] != n):
            raise ValueError("arc has shape {}, the controller's arcs have "
                             "{} values".format(arc.shape, n))
        if tf.executing_eagerly():
            self._check_values(arc.numpy())
        return self._log_prob_fn(arc)

    def _check_values(self, values):
        """Hook: reject a concrete arc the controller could never produce."""

    def call(self, arc=None):
        """Untraced form: sample when `arc` is None, else score it."""
        return self._decide_all(arc)

    def _sample_graph(self):
        return self._decide_all(None)

    def _log_prob_graph(self, arc):
        return self._decide_all(arc)

    def _decide_all(self, arc):
        raise NotImplementedError
