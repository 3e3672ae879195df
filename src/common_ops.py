"""Pieces shared by every model: the reference's weight initialisers, the
controllers' LSTM cell, and `traced`, how every step becomes a graph."""

import math

import keras
import tensorflow as tf


def traced(fn, **kwargs):
    """tf.function(fn, **kwargs) without AutoGraph.

    The traced code writes its control flow as tf.while_loop, tf.cond and
    tf.switch_case, and its Python loops are meant to unroll at trace time,
    so AutoGraph's conversion of the Python source changes no graph (the
    same ops, type by type, with and without it) and only costs time: 0.6-4.6
    s of every model's first step (enas_lm's fixed child 4.2 -> 2.0 s;
    BUILD.md, Benchmarks). A tensor used as a Python bool then fails at
    trace time instead of becoming a tf.cond."""
    return tf.function(fn, autograph=False, **kwargs)


def he_normal_tf1(shape, dtype="float32", seed=None):
    """He-normal as TF <= 1.10 drew it (the reference's `create_weight`).

    A normal with sigma = sqrt(2 / fan_in), re-drawn beyond 2 sigma, without
    the 0.8796 variance correction later Keras versions apply (so the actual
    std is 0.88 sqrt(2 / fan_in)). fan_in comes from the shape as Keras'
    VarianceScaling computes it: shape[0] for 1-D and 2-D shapes,
    prod(shape[:-1]) for convolution kernels [k, k, in, out].
    """
    return TF1HeNormal(seed=seed)(shape, dtype=dtype)


def fan_in(shape):
    """Fan-in of a weight of this shape, as TF1's initialisers compute it."""
    shape = tuple(int(d) for d in shape)
    if len(shape) < 1:
        return 1
    if len(shape) <= 2:
        return shape[0]
    receptive = 1
    for d in shape[:-2]:
        receptive *= d
    return shape[-2] * receptive


class TF1HeNormal(keras.initializers.Initializer):
    """Keras initializer form of `he_normal_tf1` (usable in `add_weight`)."""

    def __init__(self, seed=None):
        self.seed = seed

    def __call__(self, shape, dtype=None):
        stddev = math.sqrt(2.0 / max(1, fan_in(shape)))
        return keras.initializers.TruncatedNormal(
            mean=0.0, stddev=stddev, seed=self.seed)(shape, dtype=dtype)

    def get_config(self):
        return {"seed": self.seed}


def lstm_step(x, prev_c, prev_h, w):
    """One step of the controllers' LSTM cell, without biases.

    A single fused matrix `w` [input_size + hidden, 4 * hidden] maps the
    concatenation [x, prev_h] to the four gate blocks, in the order input,
    forget, output, candidate. x [N, input_size]; prev_c, prev_h [N, hidden].
    Returns (next_c, next_h).
    """
    gates = tf.matmul(tf.concat([x, prev_h], axis=1), w)
    in_gate, forget_gate, out_gate, candidate = tf.split(gates, 4, axis=1)
    next_c = (tf.sigmoid(in_gate) * tf.tanh(candidate)
              + tf.sigmoid(forget_gate) * prev_c)
    next_h = tf.sigmoid(out_gate) * tf.tanh(next_c)
    return next_c, next_h


def stacked_lstm_step(x, prev_c, prev_h, weights):
    """One step through a stack of `lstm_step` cells: layer k reads the new
    hidden state of layer k - 1 (layer 0 reads x). prev_c, prev_h and weights
    are lists with one entry per layer; returns the new (c list, h list)."""
    next_c, next_h = [], []
    layer_input = x
    for c, h, w in zip(prev_c, prev_h, weights):
        c, h = lstm_step(layer_input, c, h, w)
        next_c.append(c)
        next_h.append(h)
        layer_input = h
    return next_c, next_h
