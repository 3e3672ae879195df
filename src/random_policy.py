"""The uniform policy of `--search_policy=random`: random search with weight
sharing (a port addition; the reference has no random baseline).

The child trains as in an ENAS search, but every arc comes from a
`UniformSampler` instead of the controller: each arc position is drawn
uniformly among its legal values (the macro space's skip bits: 1 with
probability `--controller_skip_target`). A space describes its arcs as one
`Choice` per position (`SearchSpace.random_policy`, which turns its
controller config into a `RandomPolicyConfig`); the run's `cfg.controller`
is then that config, and `SearchSpace.build_controller` builds the sampler
from it. The sampler has the controller's interface where the run needs it
(`sample()`, `log_prob(arc)`, `config.arc_length`) and no weights: its only
state is its seed generator (`random_policy/sampler`, seeded from
`--seed`), which the run's checkpoint keeps, so a resumed run draws the
same arcs as an uninterrupted one.
"""

import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf

from src.common_ops import traced
from src.controller import require


@dataclasses.dataclass(frozen=True)
class Choice:
    """How one arc position is drawn.

    Uniform over the integers low .. high - 1 - arc[minus] (`minus`: an
    earlier position whose value narrows the range, itself drawn with a
    fixed range; None: the range is fixed); or, with `p_one` set, a 0/1 bit
    that is 1 with probability `p_one`.
    """
    low: int = 0
    high: int = 2
    minus: int = None
    p_one: float = None


def uniform(n, low=0):
    """A position uniform over low .. low + n - 1."""
    return Choice(low=low, high=low + n)


def bit(p_one):
    """A 0/1 position, 1 with probability p_one."""
    return Choice(p_one=float(p_one))


@dataclasses.dataclass
class RandomPolicyConfig:
    """The uniform policy of a search space: one Choice per arc position,
    and the seed of its draws."""
    choices: tuple
    seed: int = None

    @property
    def arc_length(self):
        return len(self.choices)

    def validate(self):
        for pos, c in enumerate(self.choices):
            if c.p_one is not None:
                require(0.0 <= c.p_one <= 1.0, "position {}: a bit's "
                        "probability {} is outside [0, 1]".format(pos,
                                                                 c.p_one))
                continue
            least = c.high - c.low
            if c.minus is not None:
                dep = (self.choices[c.minus]
                       if 0 <= c.minus < pos else None)
                require(dep is not None and dep.minus is None
                        and dep.p_one is None,
                        "position {} depends on position {}, which is not "
                        "an earlier position with a fixed range".format(
                            pos, c.minus))
                least -= dep.high - 1
            require(least >= 1, "position {} can have no value".format(pos))


class UniformSampler(keras.layers.Layer):
    """Draws arcs of a RandomPolicyConfig, each position uniformly (bits
    with their probability), from `self.seed_generator`.

    sample() and log_prob(arc) return the dict
      arc: int32 [arc_length];
      log_prob: float32, the arc's log-probability under the policy;
      entropy: float32, the policy's entropy given the arc's earlier values
        (the sum of every position's distribution's entropy).
    """

    def __init__(self, config, name="random_policy", **kwargs):
        super().__init__(name=name, **kwargs)
        config.validate()
        self.config = config
        cs = config.choices
        self._bit = np.array([c.p_one is not None for c in cs])
        self._p_one = np.array([c.p_one if c.p_one is not None else 0.0
                                for c in cs])
        self._low = np.array([c.low for c in cs], np.int64)
        self._high = np.array([c.high for c in cs], np.int64)
        self._dependent = np.array([c.minus is not None for c in cs])
        # A position without `minus` subtracts its own (unused) value.
        self._minus = np.array([c.minus if c.minus is not None else i
                                for i, c in enumerate(cs)], np.int64)
        self.build()
        self._sample_fn = traced(self._sample_graph)
        self._log_prob_fn = traced(
            self._log_prob_graph,
            input_signature=[tf.TensorSpec([config.arc_length], tf.int32)])

    def build(self, input_shape=None):
        # Created in the layer's scope: `random_policy/sampler/...`.
        self.seed_generator = keras.random.SeedGenerator(
            seed=self.config.seed, name="sampler")
        self.built = True

    def sample(self):
        """Draws one arc (inside the child's step, or eagerly)."""
        return self._sample_fn()

    def log_prob(self, arc):
        """Scores `arc` (arc_length integers) under the policy."""
        return self._log_prob_fn(tf.cast(tf.convert_to_tensor(arc),
                                         tf.int32))

    def call(self, arc=None):
        return self._sample_graph() if arc is None else \
            self._log_prob_graph(arc)

    def _counts(self, values):
        """Each position's number of values, given the arc's `values`
        (int64; bits: 2)."""
        narrow = tf.where(self._dependent,
                          tf.gather(values, self._minus),
                          tf.zeros_like(values))
        return tf.where(self._bit, tf.constant(2, tf.int64),
                        self._high - self._low - narrow)

    def _sample_graph(self):
        n = self.config.arc_length
        # float64: floor(u * count) is uniform over 0 .. count - 1 to
        # within count / 2^52.
        u = keras.random.uniform([n], dtype="float64",
                                 seed=self.seed_generator)
        fixed = self._low + tf.minimum(
            tf.cast(tf.floor(u * tf.cast(self._high - self._low,
                                         tf.float64)), tf.int64),
            self._high - self._low - 1)
        counts = self._counts(fixed)
        values = self._low + tf.minimum(
            tf.cast(tf.floor(u * tf.cast(counts, tf.float64)), tf.int64),
            counts - 1)
        values = tf.where(self._bit,
                          tf.cast(u < self._p_one, tf.int64), values)
        return self._result(values)

    def _log_prob_graph(self, arc):
        return self._result(tf.cast(arc, tf.int64))

    def _result(self, values):
        counts = tf.cast(self._counts(values), tf.float64)
        p = tf.constant(self._p_one)
        p_value = tf.where(tf.equal(values, 1), p, 1.0 - p)
        log_p = tf.where(self._bit, tf.math.log(p_value),
                         -tf.math.log(counts))
        bit_entropy = -(tf.math.xlogy(p, p) + tf.math.xlogy(1.0 - p, 1.0 - p))
        entropy = tf.where(self._bit, bit_entropy, tf.math.log(counts))
        return {"arc": tf.cast(values, tf.int32),
                "log_prob": tf.cast(tf.reduce_sum(log_p), tf.float32),
                "entropy": tf.cast(tf.reduce_sum(entropy), tf.float32)}


def chi_square_sf(x, df):
    """P(X >= x) for X chi-square with `df` (a positive integer) degrees of
    freedom, in closed form (no SciPy): the tests' uniformity check."""
    if x <= 0:
        return 1.0
    h = x / 2.0
    if df % 2 == 0:
        term, total = 1.0, 1.0
        for i in range(1, df // 2):
            term *= h / i
            total += term
        return math.exp(-h) * total
    total = math.erfc(math.sqrt(h))
    term = math.exp(-h) / math.sqrt(math.pi * h)
    for i in range(1, (df + 1) // 2):
        term *= h / (i - 0.5)
        total += term
    return total
