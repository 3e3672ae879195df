"""Shared ops: the tied-embedding softmax NLLs (the training steps' and the
reward passes' chunked mean) against TensorFlow's fused cross-entropy
kernel they replace."""

import numpy as np
import pytest
import tensorflow as tf

from src.common_ops import mean_softmax_nll, pick, tied_softmax_nll


def fused_kernel_nll(outputs, w_emb, labels):
    logits = tf.einsum("...h,vh->...v", outputs, w_emb)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels,
                                                          logits=logits)


@pytest.mark.parametrize("shape", [(7,), (3, 5)])
@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("scale", [3.0, 40.0])
def test_tied_softmax_nll_gives_the_fused_kernel_s_loss_and_gradients(
        shape, jit, scale):
    # Spread logits and repeated labels (up to 15 tokens drawn from 6 of
    # 40 words), eager and under XLA, as the PTB fixed step runs it; at
    # scale 40 some labels' probabilities underflow (losses in the
    # hundreds), the case where the loss comes from the logits.
    rng = np.random.default_rng(7)
    outputs = tf.constant(rng.normal(0, scale, shape + (8,)), tf.float32)
    w_emb = tf.constant(rng.normal(0, 1, (40, 8)), tf.float32)
    labels = tf.constant(rng.integers(0, 6, shape), tf.int32)
    upstream = tf.constant(rng.uniform(0.5, 2, shape), tf.float32)

    def loss_and_grads(nll_fn):
        def run(o, w, y):
            with tf.GradientTape() as tape:
                tape.watch([o, w])
                nll = nll_fn(o, w, y)
                loss = tf.reduce_sum(nll * upstream)
            return (nll,) + tuple(tape.gradient(loss, [o, w]))
        return tf.function(run, jit_compile=jit)(outputs, w_emb, labels)

    got = loss_and_grads(tied_softmax_nll)
    want = loss_and_grads(fused_kernel_nll)
    assert got[0].shape == shape
    assert (np.max(want[0]) > 100) == (scale > 3)
    # Float rounding apart: the one-hot part is subtracted in another
    # order (gradient entries up to about 20 at scale 3).
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-5,
                                   atol=2e-5 * scale / 3)


def test_tied_softmax_nll_rejects_a_label_outside_the_vocabulary():
    outputs = tf.zeros([2, 4])
    w_emb = tf.zeros([5, 4])
    with pytest.raises(tf.errors.InvalidArgumentError):
        tied_softmax_nll(outputs, w_emb, tf.constant([1, 5]))


@pytest.mark.parametrize("shape", [(3, 7), (2, 64), (1, 130)])
@pytest.mark.parametrize("jit", [False, True])
def test_mean_softmax_nll_is_the_mean_cross_entropy(shape, jit):
    # Spread logits (scale 3), token counts below, at and above one chunk
    # (padding), eager and under XLA.
    rng = np.random.default_rng(4)
    outputs = rng.normal(0, 3, shape + (8,)).astype(np.float32)
    w_emb = rng.normal(0, 1, (50, 8)).astype(np.float32)
    labels = rng.integers(0, 50, shape).astype(np.int32)
    fn = mean_softmax_nll
    if jit:
        fn = tf.function(fn, jit_compile=True)
    got = fn(tf.constant(outputs), tf.constant(w_emb), tf.constant(labels))
    ref = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=labels, logits=outputs @ w_emb.T))
    np.testing.assert_allclose(float(got), float(ref), rtol=1e-6)
    small = mean_softmax_nll(tf.constant(outputs), tf.constant(w_emb),
                             tf.constant(labels), chunk=16)
    np.testing.assert_allclose(float(small), float(ref), rtol=1e-6)


def test_pick_gives_the_gather_s_value_and_gradients_in_a_traced_step():
    rng = np.random.default_rng(0)
    nodes = [tf.constant(rng.normal(size=(3, 4)), tf.float32)
             for _ in range(4)]
    weights = tf.constant(rng.normal(size=(3, 4)), tf.float32)

    def grads(select):
        @tf.function
        def step(index):
            with tf.GradientTape() as tape:
                tape.watch(nodes)
                # Each node also read elsewhere, as a cell's nodes are.
                loss = (tf.reduce_sum(select(nodes, index) * weights)
                        + 0.5 * tf.add_n([tf.reduce_sum(n) for n in nodes]))
            return loss, tape.gradient(loss, nodes)
        return step

    ours = grads(pick)
    gathered = grads(lambda ts, i: tf.gather(tf.stack(ts), i))
    for index in range(4):
        index = tf.constant(index)
        (loss, g), (want_loss, want_g) = ours(index), gathered(index)
        assert loss.numpy() == want_loss.numpy()
        for a, b in zip(g, want_g):
            np.testing.assert_array_equal(a, b)
