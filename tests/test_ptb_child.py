"""The PTB child: configuration, variable names and shapes, the cell against
a numpy reimplementation (fixed and search mode, batch norm, loose ends,
every activation, two layers, l_skip), variational dropout (the embedding
rule, masks fixed over the window and where they apply), batch-norm moving
statistics, state carry, tracing and gradient routing."""

import numpy as np
import pytest
import tensorflow as tf

from src.errors import UserError
from src.ptb import ptb_child
from src.ptb.arcs import PTB_FUNCS, PtbArc
from src.ptb.ptb_child import (PTB_FUNC_TABLE, BakedArc, FixedPtbChild,
                               PtbBatchNorm, PtbChildConfig, SearchPtbChild,
                               apply_activation, count_params,
                               embedding_mask, init_range)

V, H, D, B = 13, 4, 4, 3

ACTS = (np.tanh, lambda x: np.maximum(x, 0.0), lambda x: x,
        lambda x: 1.0 / (1.0 + np.exp(-x)))


def config(arc=None, **kw):
    base = dict(vocab_size=V, hidden_size=H, rhn_depth=D, batch_size=B,
                bptt_steps=5, seed=3)
    base.update(kw)
    if isinstance(arc, str):
        arc = PtbArc.parse(arc, base["rhn_depth"])
    return PtbChildConfig(fixed_arc=arc, **base)


def tokens(n=B, t=6, seed=0, vocab=V):
    return np.random.default_rng(seed).integers(0, vocab, (n, t)).astype(
        np.int32)


def randomize(child, seed=0, scale=0.5):
    """Larger random weights (the cell's nonlinearities then matter)."""
    rng = np.random.default_rng(seed)
    for v in child.trainable_weights:
        v.assign(rng.normal(0, scale, v.shape).astype(np.float32))


def np_bn(x, bn, training):
    scale, offset = bn.scale.numpy(), bn.offset.numpy()
    if training:
        mean, var = x.mean(0), x.var(0)
    else:
        mean, var = bn.moving_mean.numpy(), bn.moving_variance.numpy()
    return scale * (x - mean) / np.sqrt(1.0 + var) + offset, (mean, var)


def np_forward(child, arc, toks, state, training=False, masks=None):
    """numpy float64 reimplementation of the reference's _model. masks:
    dict e [N, T] (after the rule), x, h (lists per layer), o; None: none.
    Returns (outputs [N, T, H], next_state [L, N, H], per layer the batch
    moments per step: list over t of list over bns of (mean, var))."""
    cfg = child.cfg
    h, f, d = cfg.hidden_size, cfg.num_funcs, cfg.rhn_depth
    search = child.searching
    emb = child.w_emb.numpy().astype(np.float64)
    x = emb[toks]
    if masks and masks.get("e") is not None:
        x = x * masks["e"][:, :, None]
    n, steps = toks.shape
    next_state, all_moments = [], []
    for layer in range(cfg.num_layers):
        w_prev = child.w_prev(layer).numpy().astype(np.float64)
        if search:
            w_prev = w_prev[arc.funcs[0] * 2 * h:(arc.funcs[0] + 1) * 2 * h]
        ws = [None]
        for i in range(1, d):
            w = child.w_node(layer, i).numpy().astype(np.float64)
            if search:
                r = (arc.prevs[i] * f + arc.funcs[i]) * h
                w = w[r:r + h]
            ws.append(w)
        xm = masks["x"][layer] if masks and masks.get("x") else np.ones((n, h))
        hm = masks["h"][layer] if masks and masks.get("h") else np.ones((n, h))
        s = state[layer].astype(np.float64)
        outs, moments = [], []
        for t in range(steps):
            step_moments = []

            def node(i, inp, pre):
                if search:
                    pre, m = np_bn(pre, child.node_bn(layer, i), training)
                    step_moments.append(m)
                hh = ACTS[arc.funcs[i]](pre[:, :h])
                gate = 1.0 / (1.0 + np.exp(-pre[:, h:]))
                return inp + gate * (hh - inp)

            pre = np.concatenate([x[:, t] * xm, s * hm], axis=1) @ w_prev
            nodes = [node(0, s, pre)]
            for i in range(1, d):
                p = nodes[arc.prevs[i]]
                nodes.append(node(i, p, (p * hm) @ ws[i]))
            out = np.mean([nodes[i] for i in arc.loose_ends()], axis=0)
            if search:
                out, m = np_bn(out, child.output_bn(layer), training)
                step_moments.append(m)
            if cfg.l_skip:
                out = out + x[:, t]
            outs.append(out)
            moments.append(step_moments)
            s = out
        x = np.stack(outs, axis=1)
        next_state.append(s)
        all_moments.append(moments)
    if masks and masks.get("o") is not None:
        x = x * masks["o"][:, None, :]
    return x, np.stack(next_state), all_moments


def neutral_search_bn(child):
    """Inference-mode batch norms that pass values through: moving mean 0,
    moving variance 0 (epsilon 1), scale 1, offset 0."""
    for layer in child.bn_layers:
        for bn in [c.children[0] for c in layer.children[:-1]] + \
                [layer.children[-1]]:
            bn.moving_mean.assign(tf.zeros_like(bn.moving_mean))
            bn.moving_variance.assign(tf.zeros_like(bn.moving_variance))
            bn.scale.assign(tf.ones_like(bn.scale))
            bn.offset.assign(tf.zeros_like(bn.offset))


def random_bn_stats(child, seed=1):
    rng = np.random.default_rng(seed)
    for v in child.non_trainable_weights:
        if v.path.endswith("moving_mean"):
            v.assign(rng.normal(0, 0.3, v.shape).astype(np.float32))
        elif v.path.endswith("moving_variance"):
            v.assign(rng.uniform(0.1, 2.0, v.shape).astype(np.float32))
    for v in child.trainable_weights:
        if v.path.endswith("/scale"):
            v.assign(rng.uniform(0.5, 1.5, v.shape).astype(np.float32))
        elif v.path.endswith("/offset"):
            v.assign(rng.normal(0, 0.2, v.shape).astype(np.float32))


ARCS = ["0 0 1 1 2 0 3",      # loose ends 2, 3
        "3 0 2 0 1 0 0",      # three readers of node 0: loose 1, 2, 3
        "1 0 0 1 3 2 2"]      # a chain: loose end 3 only


# ------------------------------------------------------------ configuration

@pytest.mark.parametrize("change, words", [
    (dict(hidden_size=0), "hidden_size"),
    (dict(rhn_depth=0), "rhn_depth"),
    (dict(num_layers=0), "num_layers"),
    (dict(batch_size=0), "batch_size"),
    (dict(bptt_steps=0), "bptt_steps"),
    (dict(vocab_size=0), "vocabulary"),
    (dict(num_funcs=5), "activations"),
    (dict(e_keep=0.0), "e_keep"),
    (dict(o_keep=1.5), "o_keep"),
    (dict(x_keep=-0.1), "x_keep"),
    (dict(h_keep=0.0), "h_keep"),
])
def test_config_rejects_nonsense(change, words):
    cfg = config(**change)
    with pytest.raises(UserError, match=words):
        cfg.validate()


def test_config_rejects_a_fixed_arc_of_another_depth():
    cfg = config(arc=PtbArc.parse("0 0 1", 2))
    with pytest.raises(UserError, match="rhn_depth"):
        cfg.validate()
    with pytest.raises(UserError, match="activation 3"):
        config(arc="0 0 1 1 2 0 3", num_funcs=2).validate()


def test_init_range_follows_the_hidden_size():
    assert [init_range(s) for s in (64, 300, 301, 400, 401, 748)] == \
        [0.1, 0.1, 0.05, 0.05, 0.04, 0.04]


# ------------------------------------------------------ names and shapes

def test_fixed_mode_names_and_shapes():
    child = FixedPtbChild(config(arc=ARCS[0], num_layers=2))
    shapes = {v.path: tuple(v.shape) for v in child.weights}
    m = "ptb_enas_model/"
    expected = {m + "embedding/w": (V, H)}
    for layer in range(2):
        expected[m + "rnn/layer_{}/w_prev".format(layer)] = (2 * H, 2 * H)
        for i in range(1, D):
            expected[m + "rnn/layer_{}/layer_{}/w".format(layer, i)] = (
                H, 2 * H)
    for k, rows in enumerate((B, 1, B, 1)):
        name = "Variable" if k == 0 else "Variable_{}".format(k)
        expected[m + "starting_states/" + name] = (rows, H)
    assert shapes == expected
    trainable = [v.path for v in child.trainable_weights]
    assert trainable[0] == m + "rnn/layer_0/w_prev"
    assert trainable[-1] == m + "embedding/w"
    assert all("starting_states" not in p for p in trainable)
    # The dropout generator's state lives in the layer's scope.
    assert any(v.path == m + "dropout/seed_generator_state"
               for v in child.variables)


def test_search_mode_names_and_shapes():
    f = 4
    child = SearchPtbChild(config())
    shapes = {v.path: tuple(v.shape) for v in child.weights}
    m = "ptb_enas_model/"
    assert shapes[m + "rnn/layer_0/w_prev"] == (2 * f * H, 2 * H)
    for i in range(1, D):
        assert shapes[m + "rnn/layer_0/layer_{}/w".format(i)] == (
            f * i * H, 2 * H)
    for scope, c in [("layer_0/rhn_layer_{}/batch_norm".format(i), 2 * H)
                     for i in range(D)] + [("layer_0/batch_norm", H)]:
        for name in ("offset", "scale", "moving_mean", "moving_variance",
                     "moving_mean_biased", "moving_variance_biased"):
            assert shapes[m + scope + "/" + name] == (c,)
        for name in ("moving_mean_local_step", "moving_variance_local_step"):
            assert shapes[m + scope + "/" + name] == ()
    # Optimiser order: rnn weights, embedding, then offset/scale per bn.
    trainable = [v.path[len(m):] for v in child.trainable_weights]
    assert trainable[:D + 1] == (
        ["rnn/layer_0/w_prev"]
        + ["rnn/layer_0/layer_{}/w".format(i) for i in range(1, D)]
        + ["embedding/w"])
    assert trainable[D + 1:D + 3] == ["layer_0/rhn_layer_0/batch_norm/offset",
                                      "layer_0/rhn_layer_0/batch_norm/scale"]
    assert trainable[-2:] == ["layer_0/batch_norm/offset",
                              "layer_0/batch_norm/scale"]


def test_search_parameter_count_equals_the_reference():
    # ptb_controller golden: hidden 64, depth 12, 10000 words -> 2871424.
    child = SearchPtbChild(PtbChildConfig(vocab_size=10000, hidden_size=64,
                                          rhn_depth=12, batch_size=2,
                                          bptt_steps=2))
    assert count_params(child.trainable_weights) == 2871424


def test_initial_values_are_uniform_in_the_range_and_seeded():
    a = SearchPtbChild(config(seed=5))
    b = SearchPtbChild(config(seed=5))
    for va, vb in zip(a.trainable_weights, b.trainable_weights):
        np.testing.assert_array_equal(va.numpy(), vb.numpy())
    w = a.w_node(0, 3).numpy()
    assert np.abs(w).max() <= 0.1 and w.std() > 0.03
    # One seed per variable: two weights of the same shape differ.
    fixed = FixedPtbChild(config(arc=ARCS[0], seed=5))
    assert not np.array_equal(fixed.w_node(0, 1).numpy(),
                              fixed.w_node(0, 2).numpy())


# ------------------------------------------------------------ the cell

def test_the_function_table_names_the_arcs_activations_in_order():
    assert [f.name for f in PTB_FUNC_TABLE] == list(PTB_FUNCS)
    assert [f.fn for f in PTB_FUNC_TABLE] == [tf.tanh, tf.nn.relu,
                                              tf.identity, tf.sigmoid]


def test_the_fixed_and_the_search_child_are_two_classes():
    fixed = FixedPtbChild(config(arc=ARCS[0]))
    search = SearchPtbChild(config())
    assert not fixed.searching and search.searching
    assert not fixed.bn_layers and search.bn_layers
    with pytest.raises(ValueError, match="fixed_arc"):
        FixedPtbChild(config())
    with pytest.raises(ValueError, match="fixed_arc"):
        SearchPtbChild(config(arc=ARCS[0]))


@pytest.mark.parametrize("func", range(4))
def test_each_activation(func):
    x = np.linspace(-3, 3, 12).reshape(3, 4).astype(np.float32)
    np.testing.assert_allclose(apply_activation(func, tf.constant(x)),
                               ACTS[func](x), rtol=1e-6, atol=1e-7)
    traced = tf.function(lambda f: apply_activation(f, tf.constant(x)))
    np.testing.assert_allclose(traced(tf.constant(func)), ACTS[func](x),
                               rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("text", ARCS)
@pytest.mark.parametrize("l_skip", [False, True])
def test_fixed_mode_equals_numpy(text, l_skip):
    child = FixedPtbChild(config(arc=text, l_skip=l_skip))
    randomize(child)
    toks = tokens()
    state = np.random.default_rng(1).normal(0, 1, (1, B, H))
    out, nxt = child(toks, state.astype(np.float32))
    ref_out, ref_next, _ = np_forward(child, child.cfg.fixed_arc, toks, state)
    np.testing.assert_allclose(out, ref_out, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(nxt, ref_next, rtol=2e-5, atol=2e-6)


def test_every_function_at_every_node_equals_numpy():
    # Node 0..3 cycle through the four activations in both positions.
    for shift in range(4):
        funcs = [(shift + i) % 4 for i in range(D)]
        text = " ".join([str(funcs[0])] + ["{} {}".format(max(0, i - 2),
                                                          funcs[i])
                                           for i in range(1, D)])
        child = FixedPtbChild(config(arc=text))
        randomize(child, seed=shift)
        toks = tokens(seed=shift)
        out, _ = child(toks, child.zero_state(B))
        ref, _, _ = np_forward(child, child.cfg.fixed_arc, toks,
                               np.zeros((1, B, H)))
        np.testing.assert_allclose(out, ref, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("text", ARCS)
@pytest.mark.parametrize("training", [False, True])
def test_search_mode_with_batch_norm_equals_numpy(text, training):
    child = SearchPtbChild(config(num_layers=2))
    randomize(child)
    random_bn_stats(child)
    arc = PtbArc.parse(text, D)
    toks = tokens()
    state = np.random.default_rng(2).normal(0, 1, (2, B, H))
    out, nxt = child(toks, state.astype(np.float32), arc=arc.to_list(),
                     training=training)
    ref_out, ref_next, _ = np_forward(child, arc, toks, state, training)
    np.testing.assert_allclose(out, ref_out, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(nxt, ref_next, rtol=1e-4, atol=1e-5)


def test_baked_search_arc_equals_the_gated_one():
    child = SearchPtbChild(config())
    randomize(child)
    random_bn_stats(child)
    toks = tokens()
    for text in ARCS:
        values = PtbArc.parse(text, D).to_list()
        for training in (False, True):
            gated, _ = child(toks, child.zero_state(B), arc=values,
                             training=training)
            baked, _ = child(toks, child.zero_state(B),
                             arc=BakedArc(values), training=training)
            np.testing.assert_allclose(gated, baked, rtol=1e-5, atol=1e-6)


def test_fixed_and_search_agree_on_the_same_blocks():
    for text in ARCS:
        arc = PtbArc.parse(text, D)
        fixed = FixedPtbChild(config(arc=arc))
        search = SearchPtbChild(config())
        randomize(fixed, seed=7)
        randomize(search, seed=8)
        neutral_search_bn(search)
        search.w_emb.assign(fixed.w_emb)
        w_prev = search.w_prev(0).numpy()
        w_prev[arc.funcs[0] * 2 * H:(arc.funcs[0] + 1) * 2 * H] = \
            fixed.w_prev(0).numpy()
        search.w_prev(0).assign(w_prev)
        for i in range(1, D):
            w = search.w_node(0, i).numpy()
            r = (arc.prevs[i] * 4 + arc.funcs[i]) * H
            w[r:r + H] = fixed.w_node(0, i).numpy()
            search.w_node(0, i).assign(w)
        toks = tokens(seed=4)
        a, sa = fixed(toks, fixed.zero_state(B))
        b, sb = search(toks, search.zero_state(B), arc=arc.to_list())
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(sa, sb, rtol=1e-5, atol=1e-6)


def test_two_layers_build_and_equal_numpy():
    # Bug 9 of the reference (h_mask appended to itself) is fixed: one
    # x_mask and h_mask per layer, layer 1 reads layer 0's output.
    child = FixedPtbChild(config(arc=ARCS[0], num_layers=2, x_keep=0.7,
                                 h_keep=0.6))
    randomize(child)
    toks = tokens()
    out, nxt = child(toks, child.zero_state(B))
    ref, ref_next, _ = np_forward(child, child.cfg.fixed_arc, toks,
                                  np.zeros((2, B, H)))
    np.testing.assert_allclose(out, ref, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(nxt, ref_next, rtol=2e-5, atol=2e-6)
    out, nxt = child(toks, child.zero_state(B), training=True)
    assert out.shape == (B, 6, H) and nxt.shape == (2, B, H)


@pytest.mark.parametrize("search", [False, True])
def test_state_carry_across_windows_equals_one_long_window(search):
    child = (SearchPtbChild if search else FixedPtbChild)(
        config(arc=None if search else ARCS[1]))
    randomize(child)
    if search:
        random_bn_stats(child)
    arc = PtbArc.parse(ARCS[1], D).to_list() if search else None
    toks = tokens(t=10)
    whole, s_whole = child(toks, child.zero_state(B), arc=arc)
    a, s = child(toks[:, :4], child.zero_state(B), arc=arc)
    b, s = child(toks[:, 4:], s, arc=arc)
    np.testing.assert_allclose(np.concatenate([a, b], axis=1), whole,
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(s, s_whole, rtol=1e-6, atol=1e-7)


def test_unrolled_and_while_loop_agree():
    loop = FixedPtbChild(config(arc=ARCS[0], unroll_max_steps=0))
    unrolled = FixedPtbChild(config(arc=ARCS[0], unroll_max_steps=64))
    for a, b in zip(loop.trainable_weights, unrolled.trainable_weights):
        b.assign(a)
    toks = tokens()
    f_loop = tf.function(lambda x: loop(x, loop.zero_state(B)))
    f_unrolled = tf.function(lambda x: unrolled(x, unrolled.zero_state(B)))
    spec = tf.TensorSpec([B, 6], tf.int32)
    a = f_loop.get_concrete_function(spec)(tf.constant(toks))
    b = f_unrolled.get_concrete_function(spec)(tf.constant(toks))
    np.testing.assert_allclose(a[0], b[0], rtol=1e-6, atol=1e-7)


def test_logits_are_tied_to_the_embedding_and_nll_is_cross_entropy():
    child = FixedPtbChild(config(arc=ARCS[0]))
    randomize(child)
    toks, labels = tokens(), tokens(seed=9)
    nll, outputs, _ = child.token_nll(toks, labels, child.zero_state(B))
    logits = outputs.numpy() @ child.w_emb.numpy().T
    logits = logits - logits.max(-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ref = -np.take_along_axis(logp, labels[..., None], -1)[..., 0]
    np.testing.assert_allclose(nll, ref, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------ dropout

def test_embedding_dropout_rule_on_hand_made_rows():
    toks = np.array([[5, 7, 5, 9, 7, 5],
                     [7, 7, 3, 5, 3, 7]], np.int32)
    k = 1.25
    mask = np.array([[k, 0, k, k, k, 0],
                     [0, k, k, k, 0, k]], np.float32)
    got = embedding_mask(tf.constant(toks), tf.constant(mask)).numpy()
    expected = np.array([[k, 0, k, k, 0, 0],    # 7 at 4: the 7 at 1 dropped
                         [0, 0, k, k, 0, 0]],   # every later 7 dropped
                        np.float32)
    np.testing.assert_array_equal(got, expected)


def np_embedding_rule(toks, mask):
    out = mask.copy()
    for r in range(toks.shape[0]):
        for t in range(toks.shape[1]):
            if any(toks[r, j] == toks[r, t] and mask[r, j] == 0
                   for j in range(t)):
                out[r, t] = 0
    return out


def test_masks_are_fixed_over_the_window_and_applied_as_the_reference(
        monkeypatch):
    drawn = []
    original = ptb_child.variational_mask

    def recording(shape, keep, seed):
        m = original(shape, keep, seed)
        drawn.append((keep, m.numpy()))
        return m

    monkeypatch.setattr(ptb_child, "variational_mask", recording)
    child = FixedPtbChild(config(arc=ARCS[1], num_layers=2, e_keep=0.5,
                                 x_keep=0.7, h_keep=0.6, o_keep=0.8))
    randomize(child)
    toks = tokens(t=8, vocab=4)   # few words: repeats in every row
    out, nxt = child(toks, child.zero_state(B), training=True)
    keeps = [k for k, _ in drawn]
    assert keeps == [0.5, 0.7, 0.6, 0.7, 0.6, 0.8]
    e, x0, h0, x1, h1, o = [m for _, m in drawn]
    assert e.shape == (B, 8)
    assert all(m.shape == (B, H) for m in (x0, h0, x1, h1, o))
    for keep, m in drawn:
        values = np.unique(m)
        assert values[0] == 0.0 and len(values) == 2
        np.testing.assert_allclose(values[1], 1.0 / keep, rtol=1e-6)
    e_rule = np_embedding_rule(toks, e)
    assert (e_rule == 0).sum() > (e == 0).sum()   # the rule fired
    ref, ref_next, _ = np_forward(
        child, child.cfg.fixed_arc, toks, np.zeros((2, B, H)),
        masks={"e": e_rule, "x": [x0, x1], "h": [h0, h1], "o": o})
    np.testing.assert_allclose(out, ref, rtol=2e-5, atol=2e-6)
    # The carried state is the top layer's output before the output mask.
    np.testing.assert_allclose(nxt, ref_next, rtol=2e-5, atol=2e-6)


def test_no_dropout_in_evaluation_and_fresh_masks_each_training_call():
    child = FixedPtbChild(config(arc=ARCS[0], e_keep=0.5, x_keep=0.5,
                                 h_keep=0.5, o_keep=0.5))
    randomize(child)
    toks = tokens()
    a, _ = child(toks, child.zero_state(B))
    b, _ = child(toks, child.zero_state(B))
    np.testing.assert_array_equal(a, b)
    c, _ = child(toks, child.zero_state(B), training=True)
    d, _ = child(toks, child.zero_state(B), training=True)
    assert not np.allclose(c, d)


# -------------------------------------------------------- batch norm

def test_closed_form_update_equals_t_sequential_updates():
    rng = np.random.default_rng(0)
    a, b = PtbBatchNorm(5), PtbBatchNorm(5)
    a.build()
    b.build()
    start = rng.normal(0, 1, 5).astype(np.float32)
    for bn in (a, b):   # the same non-trivial starting state
        bn.update_once(start, np.ones(5, np.float32))
    means = rng.normal(0, 1, (35, 5)).astype(np.float32)
    variances = rng.uniform(0, 2, (35, 5)).astype(np.float32)
    for _ in range(2):
        for t in range(35):
            a.update_once(means[t], variances[t])
        b.apply_updates(tf.constant(means), tf.constant(variances))
    for va, vb in zip(a.non_trainable_weights, b.non_trainable_weights):
        np.testing.assert_allclose(va.numpy(), vb.numpy(), rtol=2e-6,
                                   atol=1e-7)
    assert float(b._debias["moving_mean"].local_step) == 71.0


def test_first_update_makes_the_moving_mean_the_batch_mean():
    bn = PtbBatchNorm(3)
    bn.build()
    bn.apply_updates(tf.constant([[1.0, 2.0, 3.0]]),
                     tf.constant([[0.5, 0.5, 0.5]]))
    # Up to float32 rounding of 1 - (1 - 0.001), as in TF1 (1.3e-5).
    np.testing.assert_allclose(bn.moving_mean.numpy(), [1, 2, 3], rtol=2e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), [0.5] * 3,
                               rtol=2e-5)


@pytest.mark.parametrize("driver", ["loop", "unrolled"])
def test_training_call_updates_statistics_once_per_step_per_node(driver):
    child = SearchPtbChild(config(
        unroll_max_steps=0 if driver == "loop" else 64))
    randomize(child)
    random_bn_stats(child)
    before = {v.path: v.numpy() for v in child.non_trainable_weights}
    arc = PtbArc.parse(ARCS[0], D)
    toks = tokens(t=5)
    _, _, moments = np_forward(child, arc, toks, np.zeros((1, B, H)),
                               training=True)
    step = tf.function(lambda x, a: child(x, child.zero_state(B), arc=a,
                                          training=True))
    step(tf.constant(toks), tf.constant(arc.to_list()))
    # Replay the reference: one assign_moving_average per step and bn.
    bns = [child.node_bn(0, i) for i in range(D)] + [child.output_bn(0)]
    for j, bn in enumerate(bns):
        replay = PtbBatchNorm(bn.num_channels, name="replay")
        replay.build()
        for r, v in zip(replay.non_trainable_weights,
                        bn.non_trainable_weights):
            r.assign(before[v.path])
        for t in range(5):
            mean, var = moments[0][t][j]
            replay.update_once(mean.astype(np.float32),
                               var.astype(np.float32))
        for v, r in zip(bn.non_trainable_weights,
                        replay.non_trainable_weights):
            np.testing.assert_allclose(v.numpy(), r.numpy(), rtol=1e-4,
                                       atol=1e-6)
    assert float(child.output_bn(0)._debias["moving_mean"].local_step) == 5.0


def test_evaluation_leaves_the_statistics_alone():
    child = SearchPtbChild(config())
    random_bn_stats(child)
    before = [v.numpy() for v in child.non_trainable_weights]
    child(tokens(), child.zero_state(B), arc=PtbArc.parse(ARCS[0], D).to_list())
    for b, v in zip(before, child.non_trainable_weights):
        np.testing.assert_array_equal(b, v.numpy())


# ------------------------------------------------- tracing and gradients

def test_one_trace_serves_every_arc():
    child = SearchPtbChild(config())
    fn = tf.function(lambda x, a: child(x, child.zero_state(B), arc=a,
                                        training=True)[0],
                     input_signature=[tf.TensorSpec([B, 6], tf.int32),
                                      tf.TensorSpec([2 * D - 1], tf.int32)])
    outs = [fn(tf.constant(tokens()), tf.constant(PtbArc.parse(t, D).to_list()))
            for t in ARCS]
    assert fn.experimental_get_tracing_count() == 1
    assert not np.allclose(outs[0], outs[1])


def test_gradients_reach_only_the_chosen_blocks():
    child = SearchPtbChild(config())
    arc = PtbArc.parse(ARCS[1], D)
    toks = tokens()
    with tf.GradientTape() as tape:
        out, _ = child(toks, child.zero_state(B), arc=arc.to_list(),
                       training=True)
        loss = tf.reduce_sum(out * tf.random.stateless_normal(out.shape,
                                                              [1, 2]))
    w_prev = child.w_prev(0)
    ws = [child.w_node(0, i) for i in range(1, D)]
    grads = tape.gradient(loss, [w_prev] + ws)
    rows = np.abs(tf.convert_to_tensor(grads[0]).numpy()).sum(1)
    block = arc.funcs[0] * 2 * H
    assert rows[block:block + 2 * H].all()
    assert not np.delete(rows, np.arange(block, block + 2 * H)).any()
    for i, g in enumerate(grads[1:], start=1):
        rows = np.abs(tf.convert_to_tensor(g).numpy()).sum(1)
        r = (arc.prevs[i] * 4 + arc.funcs[i]) * H
        assert rows[r:r + H].any()
        assert not np.delete(rows, np.arange(r, r + H)).any()
