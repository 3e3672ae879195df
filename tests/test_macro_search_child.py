"""The macro search child (shared weights, the arc given at call time):
shapes, variable names, op gating, gradient routing, skips, per-channel
masking, masked batch norm, tracing, and the reference's recorded outputs
(../shared/reference/goldens/macro_search; skipped when absent)."""

import json

import numpy as np
import pytest
import tensorflow as tf

from src.macro import arcs
from src.cifar10.image_ops import MaskedBatchNorm
from src.macro.child import (FixedMacroChild, MacroConfig,
                              SearchMacroChild, count_params)
from src.errors import UserError
from src.reference_checkpoint import load_reference_weights, reference_name
from src.train_ops import l2_loss
from tests.conftest import golden_case

FILTERS = 8


def search_child(num_layers=3, num_branches=6, whole_channels=True,
                 out_filters=FILTERS):
    return SearchMacroChild(MacroConfig(num_layers=num_layers,
                                        out_filters=out_filters,
                                        num_branches=num_branches,
                                        whole_channels=whole_channels))


def images(n=4, size=8, seed=0):
    return tf.random.stateless_normal([n, size, size, 3], seed=[seed, 1])


def whole_arc(ops, skips):
    """Flat whole-channel arc from per-layer ops and skip lists."""
    flat = []
    for op, layer_skips in zip(ops, skips):
        flat += [op] + list(layer_skips)
    return tf.constant(flat, tf.int32)


def channel_arc(branches, skips):
    """Flat per-channel arc from per-layer ((start, count) per branch)."""
    flat = []
    for pairs, layer_skips in zip(branches, skips):
        for start, count in pairs:
            flat += [start, count]
        flat += list(layer_skips)
    return tf.constant(flat, tf.int32)


def random_arc(rng, num_layers, num_branches, whole_channels,
               out_filters=FILTERS):
    flat = []
    for layer in range(num_layers):
        if whole_channels:
            flat.append(int(rng.integers(num_branches)))
        else:
            for _ in range(num_branches):
                start = int(rng.integers(out_filters))
                flat += [start, int(rng.integers(out_filters - start + 1))]
        flat += [int(b) for b in rng.integers(0, 2, layer)]
    return tf.constant(flat, tf.int32)


def built(child, arc, x=None):
    child(images(1) if x is None else x, training=False, arc=arc)
    return child


def branch_vars(layer, i):
    return [v for v in layer.branches[i].trainable_weights]


# ---------------------------------------------------------------- shapes

@pytest.mark.parametrize("whole_channels", [True, False])
def test_logits_shape_for_whole_and_per_channel_arcs(whole_channels):
    m = search_child(whole_channels=whole_channels)
    arc = random_arc(np.random.default_rng(1), 3, 6, whole_channels)
    assert len(arc) == m.cfg.arc_length
    for training in (True, False):
        assert m(images(), training=training, arc=arc).logits.shape == (4, 10)


def test_layers_keep_out_filters_and_halve_resolution_at_pool_layers():
    arc = whole_arc([0, 1, 2], [[], [1], [1, 1]])
    m = built(search_child(num_layers=3), arc)
    x = m.stem_conv(images(size=16))
    layers = [x]
    start = 0
    for layer in m.macro_layers:
        layers = layer(layers, arc=arc, start_idx=start)
        start += layer.arc_span
        assert all(t.shape[-1] == FILTERS for t in layers)
    # Pool layers 0 and 1: 16 -> 8 -> 4.
    assert [tuple(t.shape[1:3]) for t in layers] == [(4, 4)] * 4


def test_search_mode_needs_an_arc_of_the_right_length():
    m = search_child()
    with pytest.raises(ValueError, match="needs an arc"):
        m(images(), training=False)
    with pytest.raises(ValueError, match="has 5 values"):
        m(images(), training=False, arc=tf.zeros([5], tf.int32))


def test_unsupported_branch_counts_are_rejected():
    with pytest.raises(UserError, match="num_branches=3"):
        search_child(num_branches=3)


def test_the_fixed_and_the_search_child_are_two_classes():
    fixed = arcs.MacroArc.parse("0 1 1", 2, 4, True)
    cfg = MacroConfig(num_layers=2, out_filters=4, num_branches=4,
                      fixed_arc=fixed)
    m = FixedMacroChild(cfg)
    x = images()
    assert not m.searching and search_child().searching
    with pytest.raises(TypeError):
        m(x, training=False, arc=tf.constant([5, 5, 5]))
    with pytest.raises(ValueError, match="fixed_arc"):
        SearchMacroChild(cfg)
    with pytest.raises(ValueError, match="fixed_arc"):
        FixedMacroChild(MacroConfig(num_layers=2, out_filters=4))


# ---------------------------------------------------------------- names

def test_variable_paths_mirror_the_reference_scopes():
    arc = whole_arc([0, 1, 2, 3], [[], [1], [1, 0], [0, 1, 1]])
    m = built(search_child(num_layers=4), arc)
    shapes = {v.path: tuple(v.shape) for v in m.weights}
    c = FILTERS
    expected = {
        "child/stem_conv/w": (3, 3, 3, c),
        "child/layer_0/branch_0/inp_conv_1/w": (1, 1, c, c),
        "child/layer_0/branch_0/inp_conv_1/bn/moving_mean": (c,),
        "child/layer_0/branch_0/out_conv_3/w": (3, 3, c, c),
        "child/layer_0/branch_0/out_conv_3/bn/moving_variance": (c,),
        "child/layer_2/branch_1/out_conv_3/w_depth": (3, 3, c, 1),
        "child/layer_2/branch_1/out_conv_3/w_point": (c, c),
        "child/layer_2/branch_3/out_conv_5/w_depth": (5, 5, c, 1),
        "child/layer_3/branch_2/out_conv_5/w": (5, 5, c, c),
        "child/layer_1/branch_4/conv_1/w": (1, 1, c, c),
        "child/layer_1/branch_5/conv_1/bn/scale": (c,),
        "child/layer_1/skip/bn/offset": (c,),
        "child/layer_1/pool_at_1/from_0/path1_conv/w": (1, 1, c, c // 2),
        "child/layer_1/pool_at_1/from_2/path2_conv/w": (1, 1, c, c // 2),
        "child/fc/w": (c, 10),
    }
    for path, shape in expected.items():
        assert shapes[path] == shape, path
    # The masked batch norm has no zero-debiasing state; the standard one has.
    assert "child/layer_0/branch_0/out_conv_3/bn/moving_mean_biased" \
        not in shapes
    assert "child/layer_0/branch_0/inp_conv_1/bn/moving_mean_biased" in shapes
    assert not any("layer_0/skip" in p for p in shapes)
    assert not any("final_conv" in p for p in shapes)


def test_per_channel_child_has_a_final_conv_per_layer():
    m = search_child(num_layers=2, num_branches=4, whole_channels=False)
    built(m, random_arc(np.random.default_rng(2), 2, 4, False))
    shapes = {v.path: tuple(v.shape) for v in m.weights}
    assert shapes["child/layer_0/final_conv/w"] == (4 * FILTERS, FILTERS)
    assert shapes["child/layer_1/final_conv/bn/offset"] == (FILTERS,)
    assert not any("branch_4" in p for p in shapes)


# ---------------------------------------------------------------- gating

@pytest.mark.parametrize("training", [False, True])
def test_whole_channel_layer_output_is_the_chosen_branch_alone(training):
    # Two layers: no pool layer, so layer_0's output is the op's output.
    m = built(search_child(num_layers=2), whole_arc([0, 0], [[], [0]]))
    layer = m.macro_layers[0]
    x = m.stem_conv(images(), training=False)
    outs = []
    for op in range(6):
        arc = whole_arc([op, 0], [[], [0]])
        out = layer([x], arc=arc, start_idx=0, training=training)[-1]
        alone = layer.run_branch(op, x, training=training)
        np.testing.assert_allclose(out.numpy(), alone.numpy(), atol=1e-6)
        assert out.shape == (4, 8, 8, FILTERS)
        outs.append(out.numpy())
    for i in range(6):
        for j in range(i):
            assert np.abs(outs[i] - outs[j]).max() > 1e-3, (i, j)


def test_different_ops_give_different_logits():
    m = search_child(num_layers=2)
    x = images()
    logits = [m(x, training=False,
                arc=whole_arc([op, op], [[], [1]])).logits.numpy()
              for op in range(6)]
    for i in range(6):
        for j in range(i):
            assert np.abs(logits[i] - logits[j]).max() > 1e-4, (i, j)


@pytest.mark.parametrize("traced", [False, True])
def test_only_the_chosen_branch_runs_and_updates_its_batch_norm(traced):
    m = built(search_child(num_layers=2), whole_arc([0, 0], [[], [0]]))
    step = lambda x, a: m(x, training=True, arc=a).logits  # noqa: E731
    if traced:
        step = tf.function(step)
    for op in (2, 4):
        before = {v.path: v.numpy().copy() for v in m.non_trainable_weights}
        step(images(), whole_arc([op, op], [[], [1]]))
        after = {v.path: v.numpy() for v in m.non_trainable_weights}
        changed = {p for p, v in before.items()
                   if "branch_" in p and not np.array_equal(v, after[p])}
        branches = {p.split("/")[2] for p in changed}
        assert branches == {"branch_{}".format(op)}


# ------------------------------------------------------- gradient routing

def _grads(m, x, arc):
    with tf.GradientTape() as tape:
        logits = m(x, training=True, arc=arc).logits
        loss = tf.reduce_sum(logits * tf.linspace(-1.0, 1.0, 10))
    return tape.gradient(loss, m.trainable_weights)


def _check_routing(m, grads, op):
    by_path = dict(zip([v.path for v in m.trainable_weights], grads))
    for layer in m.macro_layers:
        for i in range(6):
            for v in branch_vars(layer, i):
                g = by_path[v.path]
                if i == op:
                    assert g is not None and np.abs(g).max() > 0, v.path
                else:
                    assert g is None or not np.any(g), v.path


@pytest.mark.parametrize("traced", [False, True])
def test_gradients_reach_only_the_chosen_branch(traced):
    m = built(search_child(num_layers=2), whole_arc([0, 0], [[], [1]]))
    x = images()
    if traced:
        def fn(x, arc):
            grads = _grads(m, x, arc)
            return [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
                    for g, v in zip(grads, m.trainable_weights)]
        fn = tf.function(fn)
    else:
        fn = lambda x, arc: _grads(m, x, arc)  # noqa: E731
    for op in range(6):
        grads = fn(x, whole_arc([op, op], [[], [1]]))
        grads = [None if g is None else tf.convert_to_tensor(g).numpy()
                 for g in grads]
        _check_routing(m, grads, op)
    if traced:
        assert fn.experimental_get_tracing_count() == 1


# ---------------------------------------------------------------- skips

def test_skip_bits_add_earlier_outputs_before_the_batch_norm():
    m = built(search_child(num_layers=3), whole_arc([0, 0, 0],
                                                    [[], [0], [0, 0]]))
    layer = m.macro_layers[2]
    prev = [tf.random.stateless_normal([4, 4, 4, FILTERS], seed=[s, 2])
            for s in range(3)]
    results = {}
    for skips in ([0, 0], [1, 0], [0, 1], [1, 1]):
        # Layer 2 reads its op at index 3 of the arc: 1 + (1 + 1).
        arc = whole_arc([0, 0, 3], [[], [0], skips])
        results[tuple(skips)] = layer(prev, arc=arc, start_idx=3)[-1].numpy()
    branch = layer.run_branch(3, prev[-1])
    np.testing.assert_allclose(results[(0, 0)],
                               layer.skip.bn(branch).numpy(), atol=1e-6)
    np.testing.assert_allclose(
        results[(1, 1)],
        layer.skip.bn(prev[0] + prev[1] + branch).numpy(), atol=1e-5)
    values = list(results.values())
    for i in range(4):
        for j in range(i):
            assert np.abs(values[i] - values[j]).max() > 1e-3


def test_changing_a_skip_bit_changes_the_logits():
    m = search_child(num_layers=3)
    x = images()
    a = m(x, training=False,
          arc=whole_arc([1, 2, 0], [[], [0], [0, 1]])).logits
    b = m(x, training=False,
          arc=whole_arc([1, 2, 0], [[], [1], [0, 1]])).logits
    assert np.abs(a.numpy() - b.numpy()).max() > 1e-4


# ---------------------------------------------------------- per channel

PAIRS = ((1, 3), (2, 4), (0, 8), (5, 2), (3, 0), (6, 1))


def _per_channel_layer_output(m, layer_id, arc, x, training=False):
    layer = m.macro_layers[layer_id]
    return layer([x], arc=arc, start_idx=0, training=training)[-1]


def test_unselected_channels_do_not_affect_the_output():
    m = search_child(num_layers=1, whole_channels=False)
    arc = channel_arc([PAIRS], [[]])
    built(m, arc)
    x = m.stem_conv(images(), training=False)
    layer = m.macro_layers[0]
    base = _per_channel_layer_output(m, 0, arc, x).numpy()
    c = FILTERS
    for i, (start, count) in enumerate(PAIRS):
        out_of = np.ones(c, bool)
        out_of[start:start + count] = False
        branch = layer.branches[i]
        if i < 4:
            conv = branch.out_conv
            if conv.separable:
                conv.w_point.assign(tf.where(out_of[:, None], 99.0,
                                             conv.w_point))
            else:
                conv.w.assign(tf.where(out_of, 99.0, conv.w))
            for v in (conv.bn.offset, conv.bn.scale, conv.bn.moving_mean,
                      conv.bn.moving_variance):
                v.assign(tf.where(out_of, 7.0, v))
    rows = np.ones(6 * c, bool)
    for i, (start, count) in enumerate(PAIRS):
        rows[i * c + start:i * c + start + count] = False
    w = layer.final_conv.w
    w.assign(tf.where(rows[:, None], 99.0, w))
    after = _per_channel_layer_output(m, 0, arc, x).numpy()
    np.testing.assert_allclose(after, base, atol=1e-6)
    # And a selected row does matter.
    i, (start, _) = 2, PAIRS[2]
    w.assign(tf.tensor_scatter_nd_add(tf.convert_to_tensor(w),
                                      [[i * c + start]], [tf.ones([c])]))
    changed = _per_channel_layer_output(m, 0, arc, x).numpy()
    assert np.abs(changed - base).max() > 1e-3


def test_per_channel_output_is_the_masked_mix_of_the_branch_slices():
    m = search_child(num_layers=1, whole_channels=False)
    arc = channel_arc([PAIRS], [[]])
    built(m, arc)
    x = m.stem_conv(images(), training=False)
    layer = m.macro_layers[0]
    out = _per_channel_layer_output(m, 0, arc, x).numpy()
    c = FILTERS
    pieces, rows = [], []
    for i, (start, count) in enumerate(PAIRS):
        full = layer.branches[i](x).numpy()  # all channels, whole mode
        pieces.append(full[..., start:start + count])
        rows += list(range(i * c + start, i * c + start + count))
    mixed = np.concatenate(pieces, axis=-1)
    w = layer.final_conv.w.numpy()[rows]
    expected = layer.final_conv.bn(tf.constant(mixed @ w)).numpy()
    np.testing.assert_allclose(out, np.maximum(expected, 0), atol=1e-4)


def test_zero_counts_do_not_crash():
    m = search_child(num_layers=2, whole_channels=False)
    none = [(0, 0)] * 6
    one = [(0, 0), (2, 0), (7, 1), (0, 0), (0, 0), (8, 0)]
    for pairs in (none, one):
        arc = channel_arc([pairs, pairs], [[], [1]])
        for training in (True, False):
            out = m(images(), training=training, arc=arc).logits
            assert out.shape == (4, 10)
            assert np.all(np.isfinite(out.numpy()))


def test_masked_batch_norm_updates_only_the_selected_moving_stats():
    m = search_child(num_layers=1, whole_channels=False)
    arc = channel_arc([PAIRS], [[]])
    built(m, arc)
    bns = [m.macro_layers[0].branches[i].out_conv.bn for i in range(4)]
    before = [(bn.moving_mean.numpy(), bn.moving_variance.numpy())
              for bn in bns]
    m(images(), training=True, arc=arc)
    for (start, count), bn, (mean0, var0) in zip(PAIRS, bns, before):
        sel = np.zeros(FILTERS, bool)
        sel[start:start + count] = True
        mean1, var1 = bn.moving_mean.numpy(), bn.moving_variance.numpy()
        np.testing.assert_array_equal(mean1[~sel], mean0[~sel])
        np.testing.assert_array_equal(var1[~sel], var0[~sel])
        assert np.all(mean1[sel] != mean0[sel])
        assert np.all(var1[sel] != var0[sel])


def test_masked_batch_norm_plain_update_and_inference():
    bn = MaskedBatchNorm(5)
    bn.build()
    bn.moving_mean.assign([1.0, 2.0, 3.0, 4.0, 5.0])
    x = tf.random.stateless_normal([4, 3, 3, 2], seed=[7, 8]) * 2.0 + 1.0
    xn = x.numpy().reshape(-1, 2)
    y = bn(x, start=tf.constant(2), count=tf.constant(2), training=True)
    mean, var = xn.mean(0), xn.var(0)
    n = xn.shape[0]
    # Batch statistics, epsilon 1e-3.
    np.testing.assert_allclose(y.numpy().reshape(-1, 2),
                               (xn - mean) / np.sqrt(var + 1e-3), atol=1e-5)
    # moving -= 0.1 (moving - batch), no debiasing; Bessel-corrected variance.
    np.testing.assert_allclose(bn.moving_mean.numpy(),
                               [1, 2, 3 - 0.1 * (3 - mean[0]),
                                4 - 0.1 * (4 - mean[1]), 5], rtol=1e-6)
    np.testing.assert_allclose(
        bn.moving_variance.numpy()[2:4], 1 - 0.1 * (1 - var * n / (n - 1)),
        rtol=1e-6)
    # Inference: the selected channels' moving statistics and parameters.
    bn.scale.assign([1.0, 1.0, 2.0, 3.0, 1.0])
    y = bn(x, start=2, count=2, training=False).numpy().reshape(-1, 2)
    mm, mv = bn.moving_mean.numpy()[2:4], bn.moving_variance.numpy()[2:4]
    np.testing.assert_allclose(y, (xn - mm) / np.sqrt(mv + 1e-3)
                               * np.array([2.0, 3.0]), atol=1e-5)


# ---------------------------------------------------------------- tracing

@pytest.mark.parametrize("whole_channels", [True, False])
def test_one_trace_serves_every_arc(whole_channels):
    m = search_child(num_layers=2, num_branches=4,
                     whole_channels=whole_channels)
    rng = np.random.default_rng(3)
    # Weights are created eagerly first (a tf.function that creates
    # variables traces twice by design).
    built(m, random_arc(rng, 2, 4, whole_channels))
    fn = tf.function(lambda x, a: m(x, training=True, arc=a).logits)
    x = images()
    outs = [fn(x, random_arc(rng, 2, 4, whole_channels)).numpy()
            for _ in range(10)]
    assert fn.experimental_get_tracing_count() == 1
    assert len({o.tobytes() for o in outs}) > 1


# ---------------------------------------------------------------- golden

def golden_child(case):
    cfg = json.loads((case / "config.json").read_text())["child_attributes"]
    m = SearchMacroChild(MacroConfig(
        num_layers=cfg["num_layers"], out_filters=cfg["out_filters"],
        num_branches=cfg["num_branches"],
        whole_channels=cfg["whole_channels"], keep_prob=cfg["keep_prob"]))
    inputs = np.load(case / "inputs.npz")
    m(tf.constant(inputs["valid_x"][:1]), training=False,
      arc=tf.constant(inputs["arcs"][0]))
    return m, cfg


def op_positions(num_layers):
    """Indices of the op ids in a whole-channel arc."""
    return [layer + layer * (layer - 1) // 2 for layer in range(num_layers)]


def with_op(arc, op, num_layers):
    arc = np.array(arc, np.int32)
    arc[op_positions(num_layers)] = op
    return tf.constant(arc)


def test_golden_variable_names_and_shapes_equal_the_reference():
    case = golden_case("macro_search")
    m, cfg = golden_child(case)
    ref = {}
    for line in (case / "vars.txt").read_text().splitlines()[1:]:
        name, shape = line.split("\t")[:2]
        if name.startswith("child/"):
            ref[name] = tuple(json.loads(shape))
    ours = {reference_name(v.path): tuple(v.shape) for v in m.weights}
    assert ours == ref
    assert count_params(m) == cfg["num_vars"]


def test_golden_valid_logits_are_the_max_pool_branch_everywhere():
    case = golden_case("macro_search")
    m, cfg = golden_child(case)
    load_reference_weights(m.weights, str(case / "ckpt" / "model.ckpt-3"))
    inputs, outputs = (np.load(case / "inputs.npz"),
                       np.load(case / "outputs.npz"))
    x = tf.constant(inputs["valid_x"])
    n = cfg["num_layers"]
    for i, arc in enumerate(inputs["arcs"]):
        # The reference's closure bug: whatever op is sampled, every layer
        # runs its last branch (max pool); the skips are the sampled ones.
        logits = m(x, training=False, arc=with_op(arc, 5, n)).logits.numpy()
        np.testing.assert_allclose(logits, outputs["valid_logits"][i],
                                   atol=1e-4)
        # Here the sampled ops are run, and they change the logits.
        sampled = m(x, training=False, arc=tf.constant(arc)).logits.numpy()
        assert np.abs(sampled - outputs["valid_logits"][i]).max() > 0.1


def test_golden_first_training_step_loss_and_grad_norm():
    case = golden_case("macro_search")
    m, cfg = golden_child(case)
    load_reference_weights(m.weights, str(case / "ckpt_init" / "model.ckpt-0"))
    inputs, outputs = (np.load(case / "inputs.npz"),
                       np.load(case / "outputs.npz"))
    np.testing.assert_allclose(float(l2_loss(m.trainable_weights)),
                               outputs["train_step_l2_sum_before_step"][0],
                               rtol=1e-5)
    arc = with_op(outputs["train_step_arc"][0], 5, cfg["num_layers"])
    with tf.GradientTape() as tape:
        logits = m(tf.constant(inputs["train_step_x_train"][0]),
                   training=True, arc=arc).logits
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=inputs["train_step_y_train"][0], logits=logits))
        total = loss + cfg["l2_reg"] * l2_loss(m.trainable_weights)
    grads = tape.gradient(total, m.trainable_weights)
    np.testing.assert_allclose(float(loss), outputs["train_step_loss"][0],
                               rtol=1e-5)
    np.testing.assert_allclose(float(tf.linalg.global_norm(grads)),
                               outputs["train_step_grad_norm"][0], rtol=1e-3)


def test_golden_layer0_branches_differ_from_max_pool_as_recorded():
    # The reference recorded, at layer 0 of its valid graph, the largest
    # difference between the max-pool branch and the avg-pool and conv 3x3
    # branches: evidence that those branches (masked batch norm included)
    # compute what the reference's would, though its output never used them.
    case = golden_case("macro_search")
    m, _ = golden_child(case)
    load_reference_weights(m.weights, str(case / "ckpt" / "model.ckpt-3"))
    inputs, outputs = (np.load(case / "inputs.npz"),
                       np.load(case / "outputs.npz"))
    stem = m.stem_conv(tf.constant(inputs["valid_x"]), training=False)
    layer = m.macro_layers[0]
    out = {op: layer.run_branch(op, stem).numpy() for op in (5, 4, 0)}
    diffs = [np.abs(out[5] - out[op]).max() for op in (5, 4, 0)]
    recorded = outputs["closure_check_layer0_absdiff_case_vs_[max,avg,conv3]"]
    np.testing.assert_allclose(diffs, recorded[0], atol=1e-4)


@pytest.mark.parametrize("whole_channels", [True, False])
def test_nchw_gives_the_same_logits_as_nhwc_where_a_gpu_is_present(
        whole_channels):
    if not tf.config.list_physical_devices("GPU"):
        pytest.skip("NCHW convolutions need a GPU; none is visible")
    arc = random_arc(np.random.default_rng(4), 3, 6, whole_channels)
    cfgs = [MacroConfig(num_layers=3, out_filters=FILTERS, num_branches=6,
                        whole_channels=whole_channels, data_format=df)
            for df in ("NHWC", "NCHW")]
    a, b = SearchMacroChild(cfgs[0]), SearchMacroChild(cfgs[1])
    x = images(size=16)
    built(a, arc, x), built(b, arc, x)
    for va, vb in zip(a.weights, b.weights):
        vb.assign(va)
    for training in (False, True):
        np.testing.assert_allclose(
            a(x, training=training, arc=arc).logits.numpy(),
            b(x, training=training, arc=arc).logits.numpy(), atol=1e-4)
