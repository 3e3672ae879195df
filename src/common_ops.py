"""Pieces shared by every model: the reference's weight initialisers, the
controllers' LSTM cell, the language models' tied-softmax NLL (training:
`tied_softmax_nll`; the reward passes' mean: `mean_softmax_nll`), their
search cells' choice of the node a node reads (`pick`), and `traced`, how
every step becomes a graph."""

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


def pick(tensors, index):
    """tensors[index]: tensors a list of same-shaped tensors, index an int32
    scalar tensor (a branch past the end picks the last one).

    A `tf.switch_case` whose branches return the candidates as they are,
    for a pass that takes gradients: `tf.gather(tf.stack(tensors), index)`
    computes the same, but its gradient (a scatter into the stack's shape,
    unstacked: zeros to every candidate but one) on every node of every
    step is time a baked arc does not spend (the PTB search training step's
    gating ratio 1.21-1.29 -> 1.02-1.10; BUILD.md, Benchmarks). XLA
    compiles the gather far faster than switch_cases."""
    out = tf.switch_case(index, [(lambda t=t: t) for t in tensors])
    out.set_shape(tensors[0].shape)
    return out


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


def tied_softmax_nll(outputs, w_emb, labels):
    """-log softmax(outputs @ w_emb^T)[label] per token: what
    `tf.nn.sparse_softmax_cross_entropy_with_logits` gives over the tied
    embedding's logits, with its gradients, as plain ops.

    outputs [..., H], w_emb [V, H], labels [...] int32 (all float32) ->
    [...]. The loss is -log of the label's softmax probability, or, when
    some label's probability is below 1e-30, the fused kernel's own
    log(sum exp(l - max)) - (l[label] - max) in its order; the gradients
    are the kernel's (softmax - one-hot) times the upstream gradient,
    pushed through the logits' product, with the one-hot part taken as
    rows of w_emb and of outputs instead of a dense [N, V] one-hot, and
    the upstream gradient scaling the products' [N, H] factors. Both
    differ from the kernel's by float rounding (about 1e-7 relative on the
    mean loss). Why not the kernel: the loss and gradients over [1100,
    10000] logits, the logits' products included, took 0.043-0.060 s with
    it against 0.020-0.025 s with these ops (2 cores; BUILD.md,
    Benchmarks). A label outside [0, V) fails in the gather, as in the
    kernel.
    """
    h = tf.shape(outputs)[-1]
    nll = _tied_softmax_nll_rows(tf.reshape(outputs, [-1, h]), w_emb,
                                 tf.reshape(labels, [-1]))
    return tf.reshape(nll, tf.shape(labels))


# Below this probability of a label, -log p loses digits (p near float32's
# smallest normal numbers) and the loss is computed from the logits instead.
_SMALLEST_SAFE_PROBABILITY = 1e-30


@tf.custom_gradient
def _tied_softmax_nll_rows(outputs, w_emb, labels):
    """tied_softmax_nll of outputs [N, H], labels [N]; the gradient written
    out so the backward pass reuses the forward's softmax."""
    # One softmax op (oneDNN's kernel: 0.013-0.016 s over [1100, 10000]
    # here against 0.021-0.022 for max, subtract, exp and sum as four ops).
    softmax = tf.nn.softmax(tf.matmul(outputs, w_emb, transpose_b=True))
    label_p = tf.gather(softmax, labels, batch_dims=1)
    # The rare fallback recomputes the logits, so they are not kept.
    nll = tf.cond(
        tf.reduce_all(label_p >= _SMALLEST_SAFE_PROBABILITY),
        lambda: -tf.math.log(label_p),
        lambda: _nll_from_logits(
            tf.matmul(outputs, w_emb, transpose_b=True), labels))

    def grad(upstream):
        # d logits = upstream * (softmax - one-hot), the one-hot part
        # applied to the products' other factor row by row, and the
        # upstream to their [N, H] sides rather than to the [N, V] softmax
        # (one pass over it fewer: 0.0189 against 0.0216 s for the loss
        # and gradients at [700, 10000], hidden 64).
        scaled = upstream[:, None]
        d_outputs = scaled * (tf.matmul(softmax, w_emb)
                              - tf.gather(w_emb, labels))
        scaled_outputs = scaled * outputs
        d_w_emb = tf.tensor_scatter_nd_sub(
            tf.matmul(softmax, scaled_outputs, transpose_a=True),
            labels[:, None], scaled_outputs)
        return d_outputs, d_w_emb, None

    return nll, grad


def _nll_from_logits(logits, labels):
    """The fused kernel's loss, log(sum exp(l - max)) - (l[label] - max),
    for logits [N, V] where some label's probability is too small for
    -log p."""
    shift = tf.reduce_max(logits, axis=1, keepdims=True)
    picked = tf.gather(logits, labels, batch_dims=1) - shift[:, 0]
    return tf.math.log(tf.reduce_sum(tf.exp(logits - shift), axis=1)) - picked


# Tokens per chunk of `mean_softmax_nll` (the reward passes): a [V, 128]
# block of logits at a time. At vocabulary 10000, hidden 64, 700 tokens, on
# 2 cores under XLA: 0.020 s against 0.027 s for the whole [700, V] logits
# (chunks of 64 to 350 tokens: 0.020-0.023 s).
NLL_CHUNK_TOKENS = 128


def mean_softmax_nll(outputs, w_emb, labels, chunk=NLL_CHUNK_TOKENS):
    """The mean over tokens of -log softmax(outputs @ w_emb^T)[label]:
    `tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(...))`
    over the tied-embedding logits, for the language models' reward passes
    (no gradient wanted). outputs [..., H], w_emb [V, H], labels [...]
    int32, all float32.

    The same maths as the fused kernel, log(sum(exp(l - max))) + max -
    l[label] per token, equal up to float rounding (about 3e-7 relative on
    the mean); written as plain ops over chunks of `chunk` tokens with the
    vocabulary first ([V, chunk] logits), which XLA compiles into a loop
    whose blocks stay in cache (the PTB reward), and which without XLA
    (enas_lm's reward) never holds more than a chunk's logits: the enas_lm
    controller update peaked at 726-727 MB with it against 769-770 MB with
    the whole [700, V] softmax, at the same step time. The kernel also
    writes the softmax for a gradient and was most of the PTB reward pass.
    Labels are not range-checked.
    """
    h = outputs.shape[-1]
    flat = tf.reshape(outputs, [-1, h])
    targets = tf.reshape(labels, [-1])
    count = tf.shape(targets)[0]
    num_chunks = (count + chunk - 1) // chunk
    pad = num_chunks * chunk - count
    flat = tf.reshape(tf.pad(flat, [[0, pad], [0, 0]]),
                      [num_chunks, chunk, h])
    targets = tf.reshape(tf.pad(targets, [[0, pad]]), [num_chunks, chunk])
    valid = tf.reshape(tf.range(num_chunks * chunk) < count,
                       [num_chunks, chunk])
    columns = tf.range(chunk)

    def body(i, total):
        logits = tf.matmul(w_emb, flat[i], transpose_b=True)   # [V, chunk]
        shift = tf.reduce_max(logits, axis=0, keepdims=True)
        log_sum = tf.math.log(tf.reduce_sum(tf.exp(logits - shift), axis=0))
        picked = tf.gather_nd(logits, tf.stack([targets[i], columns], 1))
        nll = log_sum + shift[0] - picked
        return i + 1, total + tf.reduce_sum(tf.where(valid[i], nll, 0.0))

    _, total = tf.while_loop(lambda i, _: i < num_chunks, body,
                             (tf.constant(0), tf.constant(0.0)))
    return total / tf.cast(count, tf.float32)
