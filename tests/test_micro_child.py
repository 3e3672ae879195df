"""The micro child in fixed and search mode: configuration, shapes, each op,
node input selection, the unread-node concatenation, drop-path, the aux
head, gradient routing, tracing, variable names, and the reference's
recorded outputs (../shared/reference/goldens/micro_fixed, micro_search;
skipped when absent)."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from src.child_output import ChildOutput
from src.micro import arcs
from src.cifar10.image_ops import (FactorizedReduction, RowSepConvBN,
                                   drop_path, pool3x3)
from src.macro.child import count_params
from src.micro.child import (BakedArc, FixedCell, FixedMicroChild,
                             MicroConfig, SearchFinalConv, SearchMicroChild,
                             SearchNodeInput, StackedSepConv, aux_head_layer,
                             drop_path_keep_prob, fixed_op, reduction_layers)
from src.errors import UserError
from src.reference_checkpoint import load_reference_weights, reference_name
from src.train_ops import l2_loss
from tests.conftest import golden_case

# scripts/cifar10_micro_final.sh
FINAL = ("0 2 0 0 0 4 0 1 0 4 1 1 1 0 0 1 0 2 1 1 "
         "1 0 1 0 0 3 0 2 1 1 3 1 1 0 0 4 0 3 1 1")
F = 4


def images(n=2, size=8, seed=0):
    return tf.random.stateless_normal([n, size, size, 3], seed=[seed, 1])


def maps(n, size=6, channels=F, count=1, seed=0):
    return [tf.random.stateless_normal([n, size, size, channels],
                                       seed=[seed, i]) for i in range(count)]


def fixed_child(text=FINAL, num_layers=0, num_cells=5, out_filters=F, **kw):
    arc = arcs.MicroArc.parse(text, num_cells)
    return FixedMicroChild(MicroConfig(
        num_layers=num_layers, num_cells=num_cells, out_filters=out_filters,
        fixed_arc=arc, **kw))


def search_child(num_layers=0, num_cells=2, out_filters=F, **kw):
    return SearchMicroChild(MicroConfig(
        num_layers=num_layers, num_cells=num_cells, out_filters=out_filters,
        **kw))


def random_arc(rng, num_cells):
    flat = []
    for _ in range(2):
        for node in range(num_cells):
            for _ in range(2):
                flat += [int(rng.integers(node + 2)), int(rng.integers(5))]
    return flat


def built(child, arc=None, x=None):
    kw = {} if arc is None else {"arc": tf.constant(arc, tf.int32)}
    child(images(1) if x is None else x, training=False, **kw)
    return child


# ---------------------------------------------------------------- config

@pytest.mark.parametrize("kw, pattern", [
    (dict(num_cells=0), "--child_num_cells must be at least 1"),
    (dict(num_layers=-1), "--child_num_layers must be at least 0"),
    (dict(num_layers=0, use_aux_heads=True), "--child_use_aux_heads needs"),
    (dict(keep_prob=0.0), "--child_keep_prob=0.0 is not in"),
    (dict(drop_path_keep_prob=1.5), "--child_drop_path_keep_prob=1.5"),
    (dict(data_format="NWHC"), "--data_format='NWHC' is unknown"),
])
def test_bad_configurations_are_user_errors(kw, pattern):
    with pytest.raises(UserError, match=pattern):
        MicroConfig(**kw).validate()


def test_fixed_drop_path_needs_the_schedule_length_and_arc_cells_match():
    arc = arcs.MicroArc.parse(FINAL, 5)
    with pytest.raises(UserError, match="needs the number of training steps"):
        MicroConfig(fixed_arc=arc, drop_path_keep_prob=0.6).validate()
    with pytest.raises(UserError, match="5 nodes per cell but "
                                        "--child_num_cells=4"):
        MicroConfig(fixed_arc=arc, num_cells=4).validate()
    assert MicroConfig(num_cells=4).arc_length == 32


def test_odd_out_filters_build_in_both_modes():
    # Every factorized reduction runs where the filters have doubled.
    for m, kw in ((fixed_child(out_filters=3), {}),
                  (search_child(out_filters=3),
                   {"arc": tf.constant(random_arc(np.random.default_rng(0),
                                                  2))})):
        assert m(images(), training=True, **kw).logits.shape == (2, 10)


def test_reduction_and_aux_head_layers_follow_the_reference():
    assert reduction_layers(2) == [0, 1]
    assert reduction_layers(6) == [2, 5]
    assert reduction_layers(15) == [5, 11]
    assert aux_head_layer(15) == 12
    assert aux_head_layer(2) == 2


# ------------------------------------------------------------- drop-path

def test_drop_path_keep_prob_schedule_values():
    # 0.6, num_layers=2 (4 layers): per layer 1 - (l + 1) / 4 x 0.4.
    full = [float(drop_path_keep_prob(0.6, l, 2, 10 ** 6, 100))
            for l in range(4)]
    np.testing.assert_allclose(full, [0.9, 0.8, 0.7, 0.6], rtol=1e-6)
    # Progress (step + 1) / num_train_steps, capped at 1.
    np.testing.assert_allclose(
        float(drop_path_keep_prob(0.6, 3, 2, 49, 100)), 0.8, rtol=1e-6)
    np.testing.assert_allclose(
        float(drop_path_keep_prob(0.6, 0, 2, 0, 100)), 1 - 0.01 * 0.1,
        rtol=1e-6)
    np.testing.assert_allclose(
        float(drop_path_keep_prob(0.6, 1, 2, tf.constant(99, tf.int64),
                                  100)), 0.8, rtol=1e-6)
    assert float(drop_path_keep_prob(1.0, 3, 2, 5, 100)) == 1.0


def test_drop_path_zeroes_whole_examples_and_rescales_the_rest():
    x = tf.ones([256, 2, 2, 3])
    y = drop_path(x, 0.25, keras.random.SeedGenerator(3)).numpy()
    per_example = y.reshape(256, -1)
    for row in per_example:
        assert np.all(row == 0.0) or np.allclose(row, 4.0)
    kept = np.mean(per_example[:, 0] > 0)
    assert 0.15 < kept < 0.35
    # keep_prob 1 changes nothing.
    same = drop_path(x, 1.0, keras.random.SeedGenerator(3)).numpy()
    np.testing.assert_array_equal(same, x.numpy())


def test_fixed_child_drop_path_is_seeded_and_needs_the_step():
    kw = dict(drop_path_keep_prob=0.5, num_train_steps=1, seed=7)
    a, b = fixed_child(**kw), fixed_child(**kw)
    built(a), built(b)
    for va, vb in zip(a.weights, b.weights):
        vb.assign(va)
    x = images(8)
    step = tf.constant(10, tf.int64)
    ya1, ya2 = (a(x, training=True, step=step).logits.numpy()
                for _ in range(2))
    yb1 = b(x, training=True, step=step).logits.numpy()
    np.testing.assert_array_equal(ya1, yb1)
    assert np.abs(ya1 - ya2).max() > 1e-4
    with pytest.raises(ValueError, match="needs the global step"):
        a(x, training=True)
    # In inference drop-path is off, so the step is not needed.
    a(x, training=False)


# ---------------------------------------------------------------- fixed

def layer_shapes(m, x, **kw):
    return [tuple(t.shape) for t in m.layer_outputs(x, **kw)]


def test_fixed_layers_double_filters_and_halve_size_at_reductions():
    # num_layers=3: layers 0..4, reductions at 1 and 3. The final arc's
    # normal cell concatenates 5 nodes, its reduction cell 4.
    m = built(fixed_child(num_layers=3), x=images(1, 16))
    assert layer_shapes(m, images(1, 16)) == [
        (1, 16, 16, 5 * F), (1, 8, 8, 4 * 2 * F), (1, 8, 8, 5 * 2 * F),
        (1, 4, 4, 4 * 4 * F), (1, 4, 4, 5 * 4 * F)]
    shapes = {v.path: tuple(v.shape) for v in m.weights}
    # Layer 0 reads the stem twice: 1x1 convs from 3F to F.
    assert shapes["child/layer_0/calibrate/pool_x/w"] == (1, 1, 3 * F, F)
    assert shapes["child/layer_0/calibrate/pool_y/w"] == (1, 1, 3 * F, F)
    # Layer 2 reads layer 0 (twice the size): ReLU + factorized reduction.
    assert shapes["child/layer_2/calibrate/pool_x/path1_conv/w"] == (
        1, 1, 5 * F, F)
    assert shapes["child/layer_2/layer_base/w"] == (1, 1, 2 * F, 2 * F)
    # Reduction cell: sep convs at stride 2 on inputs 0/1, identity on
    # input 0 as a factorized reduction.
    assert shapes["child/layer_1/cell_0/x_conv/sep_conv_0/w_point"] == (
        1, 1, 2 * F, 2 * F)
    assert "child/layer_1/cell_3/y_conv/path2_conv/w" in shapes
    assert not any("final_combine" in p for p in shapes)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("op", range(5))
def test_each_fixed_op(op, stride):
    x = maps(2, 6)[0]
    layer = fixed_op(op, stride, F, name="x_conv")
    out = layer(x, training=False)
    assert out.shape == (2, 6 // stride, 6 // stride, F)
    if op in (2, 3):
        pool = tf.nn.avg_pool2d if op == 2 else tf.nn.max_pool2d
        np.testing.assert_allclose(out.numpy(),
                                   pool(x, 3, stride, "SAME").numpy())
    elif op == 4 and stride == 1:
        np.testing.assert_array_equal(out.numpy(), x.numpy())
    elif op == 4:
        assert isinstance(layer, FactorizedReduction)
    else:
        assert isinstance(layer, StackedSepConv)
        k = 3 if op == 0 else 5
        expected = x
        for i, sep in enumerate((layer.sep_conv_0, layer.sep_conv_1)):
            assert tuple(sep.w_depth.shape) == (k, k, F, 1)
            s = stride if i == 0 else 1
            expected = tf.nn.separable_conv2d(
                tf.nn.relu(expected), sep.w_depth, sep.w_point,
                [1, s, s, 1], "SAME")
            # Fresh moving statistics: mean 0, variance 1.
            expected = expected / np.sqrt(1.0 + 1e-5)
        np.testing.assert_allclose(out.numpy(), expected.numpy(), atol=1e-5)


def test_fixed_node_adds_its_two_ops_at_the_cell_stride():
    inputs = maps(2, 6, count=3)
    # Reduction: input 1 read at stride 2 (max pool), node 0 (index 2,
    # already reduced here) at stride 1 (avg pool).
    cell = FixedCell(1, (1, 3, 2, 2), 2, F)
    inputs[2] = inputs[2][:, ::2, ::2, :]
    out = cell(inputs, training=False)
    expected = (tf.nn.max_pool2d(inputs[1], 3, 2, "SAME")
                + tf.nn.avg_pool2d(inputs[2], 3, 1, "SAME"))
    np.testing.assert_allclose(out.numpy(), expected.numpy(), atol=1e-6)


def test_fixed_reduction_cell_reduces_unread_inputs_before_concatenating():
    # Reduction cell: node 0 reads input 1 only, node 1 node 0: inputs 0 and
    # node 1 are unread; normal cell: input 1 and node 1 unread.
    text = "0 4 0 4 2 4 2 4  1 2 1 3 2 4 2 4"
    m = built(fixed_child(text, num_layers=0, num_cells=2), x=images(1, 8))
    assert m.cfg.fixed_arc.outputs("reduction") == [0, 3]
    shapes = {v.path: tuple(v.shape) for v in m.weights}
    assert shapes["child/layer_0/final_combine/calibrate_0/path1_conv/w"] \
        == (1, 1, 2 * F, F)
    assert not any("calibrate_1" in p for p in shapes)
    assert layer_shapes(m, images(1, 8)) == [(1, 4, 4, 2 * 2 * F),
                                             (1, 2, 2, 2 * 4 * F)]


def test_fixed_variable_paths_mirror_the_reference():
    m = built(fixed_child(num_layers=0))
    paths = {v.path for v in m.weights}
    for expected in [
            "child/stem_conv/w", "child/stem_conv/bn/moving_mean_biased",
            "child/layer_0/calibrate/pool_x/w", "child/layer_0/layer_base/w",
            "child/layer_0/cell_0/x_conv/sep_conv_0/w_depth",
            "child/layer_0/cell_0/x_conv/sep_conv_1/bn/offset",
            "child/layer_1/calibrate/pool_x/path2_conv/w",
            "child/layer_1/cell_2/y_conv/sep_conv_1/w_point", "child/fc/w"]:
        assert expected in paths, expected


# ---------------------------------------------------------------- search

def test_search_node_runs_the_chosen_op_on_the_chosen_input():
    node = SearchNodeInput(2, F, name="x")
    node.build()
    inputs = maps(2, 6, count=4, seed=3)
    outs = {}
    for index in range(4):
        for op in range(5):
            gated = node(inputs, index=tf.constant(index),
                         op=tf.constant(op))
            direct = node.run_op(op, inputs[index], index)
            np.testing.assert_allclose(gated.numpy(), direct.numpy(),
                                       atol=1e-6)
            outs[index, op] = gated.numpy()
        np.testing.assert_array_equal(outs[index, 4], inputs[index].numpy())
        np.testing.assert_allclose(
            outs[index, 2],
            tf.nn.avg_pool2d(inputs[index], 3, 1, "SAME").numpy(), atol=1e-6)
        np.testing.assert_allclose(
            outs[index, 3],
            tf.nn.max_pool2d(inputs[index], 3, 1, "SAME").numpy())
    # The same input through another row's weights differs.
    a = node.run_op(0, inputs[0], 0).numpy()
    b = node.run_op(0, inputs[0], 1).numpy()
    assert np.abs(a - b).max() > 1e-3


@pytest.mark.parametrize("stride", [1, 2])
def test_max_pooling_in_a_branch_has_the_gradient_it_has_outside(stride):
    # In a tf.switch_case branch the pooling's gradient is recomputed
    # (image_ops._branch_max_pool): the same numbers, oneDNN's kernel.
    rng = np.random.default_rng(0)
    # After a ReLU: windows with tied maxima (zeros).
    x = tf.constant(np.maximum(rng.standard_normal((4, 8, 8, 6)), 0),
                    tf.float32)
    dy = tf.constant(rng.standard_normal((4, 8 // stride, 8 // stride, 6)),
                     tf.float32)

    @tf.function
    def gradient(op):
        with tf.GradientTape() as tape:
            tape.watch(x)
            if op is None:
                y = pool3x3(x, "max", stride)
            else:
                y = tf.switch_case(op, [
                    lambda: pool3x3(x, "max", stride),
                    lambda: x[:, ::stride, ::stride]])
        return tape.gradient(y, x, output_gradients=dy)

    np.testing.assert_array_equal(gradient(tf.constant(0)).numpy(),
                                  gradient(None).numpy())


def test_search_sep_conv_uses_its_input_row_and_batch_statistics():
    conv = RowSepConvBN(3, F, 3, name="stack_0")
    x = maps(4, 5, seed=4)[0]
    conv.build(x.shape)
    assert tuple(conv.w_depth.shape) == (3, 9 * F)
    assert tuple(conv.w_point.shape) == (3, F * F)
    assert tuple(conv.bn.offset.shape) == (3, F)
    conv.bn.scale.assign(tf.reshape(tf.range(1.0, 3 * F + 1), [3, F]))
    out = conv(x, row=2).numpy()
    y = tf.nn.separable_conv2d(
        tf.nn.relu(x), tf.reshape(conv.w_depth[2], [3, 3, F, 1]),
        tf.reshape(conv.w_point[2], [1, 1, F, F]), [1, 1, 1, 1],
        "SAME").numpy()
    mean, var = y.mean((0, 1, 2)), y.var((0, 1, 2))
    expected = (y - mean) / np.sqrt(var + 1e-5) * conv.bn.scale.numpy()[2]
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_final_conv_mixes_only_the_unread_nodes():
    n = 5
    conv = SearchFinalConv(n, F)
    conv.build()
    nodes = maps(2, 4, count=n, seed=5)
    unread = [1, 3, 4]
    gated = conv(nodes, indices=tf.constant(unread), training=False).numpy()
    listed = conv(nodes, indices=unread, training=False).numpy()
    np.testing.assert_allclose(gated, listed, atol=1e-5)
    # By hand: node i's channels meet the [F, F] block of row i.
    w = conv.w.numpy().reshape(n, F, F)
    mixed = sum(np.maximum(nodes[i].numpy(), 0) @ w[i] for i in unread)
    np.testing.assert_allclose(gated, mixed / np.sqrt(1 + 1e-5), atol=1e-4)
    # The rows of read nodes play no part.
    conv.w.assign(tf.tensor_scatter_nd_update(
        tf.convert_to_tensor(conv.w), [[0], [2]], tf.fill([2, F * F], 99.0)))
    again = conv(nodes, indices=tf.constant(unread),
                 training=False).numpy()
    np.testing.assert_allclose(again, gated, atol=1e-6)


def test_search_layers_keep_filters_and_reduce_at_reduction_layers():
    arc = random_arc(np.random.default_rng(1), 2)
    m = built(search_child(num_layers=1), arc, x=images(1, 16))
    assert layer_shapes(m, images(1, 16), arc=tf.constant(arc)) == [
        (1, 8, 8, 2 * F), (1, 4, 4, 4 * F), (1, 4, 4, 4 * F)]


def test_search_variable_paths_and_stacked_shapes():
    m = built(search_child(num_layers=0, num_cells=3),
              random_arc(np.random.default_rng(2), 3))
    shapes = {v.path: tuple(v.shape) for v in m.weights}
    c = 2 * F
    assert shapes["child/layer_0/path1_conv/w"] == (1, 1, 3 * F, F)
    assert shapes["child/layer_0/calibrate/pool_x/path2_conv/w"] == (
        1, 1, 3 * F, F)
    # Node k has k + 2 possible inputs, one weight row each.
    assert shapes["child/layer_0/cell_0/x/conv_3x3/stack_0/w_depth"] == (
        2, 9 * c)
    assert shapes["child/layer_0/cell_2/y/conv_5x5/stack_1/w_depth"] == (
        4, 25 * c)
    assert shapes["child/layer_0/cell_2/y/conv_5x5/stack_1/w_point"] == (
        4, c * c)
    assert shapes["child/layer_0/cell_1/x/conv_3x3/stack_0/bn/scale"] == (
        3, c)
    assert shapes["child/layer_1/final_conv/w"] == (5, 4 * c * c)
    assert "child/layer_1/final_conv/bn/moving_mean_biased" in shapes
    assert not any("pool_y" in p or "avg_pool" in p for p in shapes)


def test_search_mode_needs_an_arc_of_the_right_length():
    m = search_child()
    with pytest.raises(ValueError, match="needs an arc"):
        m(images(), training=False)
    with pytest.raises(ValueError, match="has 5 values"):
        m(images(), training=False, arc=tf.zeros([5], tf.int32))


def test_gated_search_child_equals_the_baked_arc():
    m = search_child(num_cells=3)
    rng = np.random.default_rng(3)
    built(m, random_arc(rng, 3))
    x = images(4)
    for _ in range(3):
        arc = random_arc(rng, 3)
        for training in (True, False):
            gated = m(x, training=training,
                      arc=tf.constant(arc)).logits.numpy()
            baked = m(x, training=training, arc=BakedArc(arc)).logits.numpy()
            np.testing.assert_allclose(gated, baked, atol=1e-5)


def test_different_ops_and_inputs_give_different_logits():
    # num_layers=0: both layers are reduction cells (arc positions 8..15).
    m = search_child(num_cells=2)
    base = [0, 0, 1, 0, 2, 0, 0, 0] * 2
    built(m, base)
    x = images(4)
    ref = m(x, training=True, arc=tf.constant(base)).logits.numpy()
    for position, value in [(9, 1), (9, 2), (9, 3), (9, 4), (12, 1),
                            (14, 2), (11, 1)]:
        arc = list(base)
        arc[position] = value
        out = m(x, training=True, arc=tf.constant(arc)).logits.numpy()
        assert np.abs(out - ref).max() > 1e-4, (position, value)


# ------------------------------------------------------- gradient routing

def _grads(m, x, arc):
    with tf.GradientTape() as tape:
        logits = m(x, training=True, arc=arc).logits
        loss = tf.reduce_sum(logits * tf.linspace(-1.0, 1.0, 10))
    grads = tape.gradient(loss, m.trainable_weights)
    return [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
            for g, v in zip(grads, m.trainable_weights)]


@pytest.mark.parametrize("traced", [False, True])
def test_gradients_reach_only_the_chosen_op_and_input_row(traced):
    m = search_child(num_cells=2)
    rng = np.random.default_rng(4)
    built(m, random_arc(rng, 2))
    x = images(4)
    fn = tf.function(lambda x, a: _grads(m, x, a)) if traced else \
        (lambda x, a: _grads(m, x, a))
    for arc in ([0, 0, 1, 1, 2, 1, 0, 3] * 2,
                [1, 1, 0, 0, 1, 4, 2, 0, 0, 2, 1, 3, 2, 0, 0, 1]):
        grads = fn(x, tf.constant(arc))
        by_path = {v.path: g.numpy() for v, g in zip(m.trainable_weights,
                                                     grads)}
        for layer_id, layer in enumerate(m.cell_layers):
            cell_arc = (arc[:8] if layer_id not in m.reduction_layers
                        else arc[8:])
            for cell_id, cell in enumerate(layer.cells):
                for j, node_input in enumerate((cell.x, cell.y)):
                    index, op = cell_arc[4 * cell_id + 2 * j:][:2]
                    for k, conv in enumerate(node_input.convs):
                        for v in conv.trainable_weights:
                            g = by_path[v.path]
                            if k == op:
                                assert np.abs(g[index]).max() > 0, v.path
                                others = np.delete(g, index, axis=0)
                                assert not np.any(others), v.path
                            else:
                                assert not np.any(g), v.path
            read = {cell_arc[i] for i in (0, 2, 4, 6)}
            g = by_path[layer.final_conv.w.path]
            for row in range(4):
                assert (np.abs(g[row]).max() > 0) == (row not in read)
    if traced:
        assert fn.experimental_get_tracing_count() == 1


# ---------------------------------------------------------------- tracing

def test_one_trace_serves_every_arc():
    m = search_child(num_cells=3)
    rng = np.random.default_rng(5)
    # Weights are created eagerly first (a tf.function that creates
    # variables traces twice by design).
    built(m, random_arc(rng, 3))
    fn = tf.function(lambda x, a: m(x, training=True, arc=a).logits)
    x = images(2)
    outs = [fn(x, tf.constant(random_arc(rng, 3))).numpy()
            for _ in range(10)]
    assert fn.experimental_get_tracing_count() == 1
    assert len({o.tobytes() for o in outs}) > 1


# ---------------------------------------------------------------- aux head

def test_aux_head_in_training_and_its_weights_left_to_the_optimiser():
    m = fixed_child(num_layers=1, use_aux_heads=True)
    x = images(2, 32)
    # An evaluation call builds every weight, the aux head's included.
    assert m(x, training=False).logits.shape == (2, 10)
    shapes = {v.path: tuple(v.shape) for v in m.weights}
    # Layer 2 (after the reductions at 0 and 1): 8x8, 5 nodes x 4F.
    assert shapes["child/aux_head/proj/w"] == (1, 1, 5 * 4 * F, 128)
    assert shapes["child/aux_head/avg_pool/w"] == (2, 2, 128, 768)
    assert shapes["child/aux_head/fc/w"] == (768, 10)
    logits, aux = m(x, training=True, step=tf.constant(0))
    assert logits.shape == aux.shape == (2, 10)
    out = m(x, training=True, step=tf.constant(0))
    assert isinstance(out, ChildOutput)
    assert out.logits.shape == out.aux_logits.shape == (2, 10)
    assert m(x, training=False).aux_logits is None
    assert m.takes_step is True
    aux_vars = {id(v) for v in m.aux_head.trainable_weights}
    assert len(aux_vars) == 7
    body = m.optimizer_variables()
    assert not any(id(v) in aux_vars for v in body)
    assert len(body) == len(m.trainable_weights) - 7
    assert len(m.optimizer_variables(train_aux_head=True)) == len(
        m.trainable_weights)
    # The aux loss still reaches the body.
    with tf.GradientTape() as tape:
        _, aux = m(x, training=True, step=tf.constant(0))
        aux_sum = tf.reduce_sum(aux)
    grads = tape.gradient(aux_sum, body)
    assert any(g is not None and np.any(tf.convert_to_tensor(g).numpy())
               for g in grads)


def test_aux_head_batch_norm_always_uses_batch_statistics():
    m = fixed_child(num_layers=1, use_aux_heads=True)
    x = images(2, 32)
    m(x, training=False)
    feats = m.layer_outputs(x)[m.aux_head_layer]
    bn = m.aux_head.proj.bn
    before = bn.moving_mean.numpy().copy()
    out = m.aux_head(feats, training=False).numpy()
    assert np.any(bn.moving_mean.numpy() != before)
    again = m.aux_head(feats, training=False).numpy()
    np.testing.assert_allclose(out, again, atol=1e-5)


def test_search_child_with_aux_head():
    m = search_child(num_layers=1, use_aux_heads=True)
    arc = tf.constant(random_arc(np.random.default_rng(6), 2))
    logits, aux = m(images(2, 32), training=True, arc=arc)
    assert logits.shape == aux.shape == (2, 10)
    out = m(images(2, 32), training=False, arc=arc)
    assert out.logits.shape == (2, 10) and out.aux_logits is None
    # The search child's call takes no step (drop-path is fixed-arc only).
    assert m.takes_step is False


# ---------------------------------------------------------------- NCHW

@pytest.mark.parametrize("searching", [False, True])
def test_nchw_gives_the_same_logits_as_nhwc_where_a_gpu_is_present(
        searching):
    if not tf.config.list_physical_devices("GPU"):
        pytest.skip("NCHW convolutions need a GPU; none is visible")
    arc = random_arc(np.random.default_rng(7), 2)
    make = search_child if searching else (
        lambda **kw: fixed_child(" ".join(map(str, arc)), num_cells=2, **kw))
    a, b = make(data_format="NHWC"), make(data_format="NCHW")
    kw = {"arc": tf.constant(arc)} if searching else {}
    x = images(2, 16)
    a(x, **kw), b(x, **kw)
    for va, vb in zip(a.weights, b.weights):
        vb.assign(va)
    for training in (False, True):
        np.testing.assert_allclose(
            a(x, training=training, **kw).logits.numpy(),
            b(x, training=training, **kw).logits.numpy(), atol=1e-4)


# ---------------------------------------------------------------- golden

# The reference's step-0 gradient norms recomputed without its race: its own
# `_build_train` graph in tf.compat.v1, forward and backward only, from
# ckpt_init on the recorded batch (tests/golden_tools/race_free_grad_norm.py
# redoes it). The recorded `train_step_grad_norm` was fetched in the session
# run that also applied the update and is off by ~1.5e-3.
#
# The float32 gradient norm is not a property of the model alone: it moves
# with the CPU's kernels and summation order. Measured with that tool, the
# reference and our port agree to every printed digit (norms to 2e-7,
# per-variable gradients to 6e-6 of their largest entry) on each machine,
# but the value differs between machines by 1.0e-4 (fixed) and 1.5e-4
# (search) relative, and by up to 1.1e-5 between intra-op thread counts on
# one machine (changing every weight by one float unit moves it by up to
# 2.2e-5). So the table lists every race-free value the reference gave, not
# one machine's:
#   - the earlier CI machine: 6.059109 / 4.502917;
#   - AMD EPYC without AVX-512 (2 cores), default threads: 6.058494 /
#     4.502234; one intra-op thread: 6.058559 / 4.502233.
# On a new CPU whose value falls outside, rerun the tool: if the reference
# there agrees with our port, add its value here; if it does not, the port
# is wrong (compare the per-variable gradients the tool prints).
RACE_FREE_GRAD_NORMS = {"micro_fixed": (6.059109, 6.058494, 6.058559),
                        "micro_search": (4.502917, 4.502234, 4.502233)}
# Three times the largest spread measured across CPUs: ten times tighter than
# the recorded value's racy tolerance below, and wider than any rounding
# effect measured on one CPU.
RACE_FREE_RTOL = 3e-4


@pytest.fixture(scope="module", params=["micro_fixed", "micro_search"])
def golden(request):
    case = golden_case(request.param)
    cfg = json.loads((case / "config.json").read_text())["child_attributes"]
    fixed = None
    if cfg["fixed_arc"]:
        fixed = arcs.MicroArc.parse(cfg["fixed_arc"], cfg["num_cells"])
    child_class = SearchMicroChild if fixed is None else FixedMicroChild
    m = child_class(MicroConfig(
        num_layers=cfg["num_layers"], num_cells=cfg["num_cells"],
        out_filters=cfg["out_filters"], keep_prob=cfg["keep_prob"],
        drop_path_keep_prob=cfg["drop_path_keep_prob"],
        use_aux_heads=cfg["use_aux_heads"], fixed_arc=fixed,
        num_train_steps=cfg["num_train_steps"], seed=1))
    inputs = np.load(case / "inputs.npz")
    outputs = np.load(case / "outputs.npz")
    kw = {}
    if fixed is None:
        kw["arc"] = tf.constant(np.concatenate(
            [inputs["normal_arcs"][0], inputs["reduce_arcs"][0]]))
    m(tf.zeros([1, 32, 32, 3]), training=False, **kw)
    return request.param, case, cfg, m, inputs, outputs


def test_golden_variable_names_shapes_and_parameter_count(golden):
    name, case, cfg, m, _, _ = golden
    ref = {}
    for line in (case / "vars.txt").read_text().splitlines()[1:]:
        path, shape = line.split("\t")[:2]
        if path.startswith("child/") and not path.endswith("/Momentum"):
            ref[path] = tuple(json.loads(shape))
    ours = {reference_name(v.path): tuple(v.shape) for v in m.weights}
    assert ours == ref
    # No two variables share a path (checkpoints are keyed by path).
    assert len(ours) == len(m.weights)
    # num_vars: the optimiser's variables (the aux head's left out).
    assert sum(int(tf.size(v)) for v in m.optimizer_variables()) \
        == cfg["num_vars"]
    assert count_params(m) > cfg["num_vars"]
    names = [v.name.split(":")[0] for v in m.optimizer_variables()]
    recorded = json.loads((case / "config.json").read_text())[
        "optimizer_var_list_in_order"]
    assert sorted(reference_name(v.path) for v in m.optimizer_variables()) \
        == sorted(r.split(":")[0] for r in recorded)
    assert len(names) == len(recorded)


def test_golden_logits_equal_the_reference(golden):
    name, case, cfg, m, inputs, outputs = golden
    load_reference_weights(m.weights, str(case / "ckpt" / "model.ckpt-3"))
    if name == "micro_fixed":
        # The test graph: batch norm on the moving statistics.
        logits = m(tf.constant(inputs["test_x"]),
                   training=False).logits.numpy()
        np.testing.assert_allclose(logits, outputs["test_logits"], atol=1e-4)
        return
    # The valid graph of the search child runs in training mode (batch
    # statistics of these 16 images), as the reference's.
    x = tf.constant(inputs["valid_x"])
    for i, (normal, reduce) in enumerate(zip(inputs["normal_arcs"],
                                             inputs["reduce_arcs"])):
        arc = tf.constant(np.concatenate([normal, reduce]))
        logits, _ = m(x, training=True, arc=arc)
        np.testing.assert_allclose(logits.numpy(), outputs["valid_logits"][i],
                                   atol=1e-4)
    assert np.abs(outputs["valid_logits"][0]
                  - outputs["valid_logits"][1]).max() > 0.01


def test_golden_first_training_step(golden):
    name, case, cfg, m, inputs, outputs = golden
    load_reference_weights(m.weights, str(case / "ckpt_init" / "model.ckpt-0"))
    variables = m.optimizer_variables()
    np.testing.assert_allclose(float(l2_loss(variables)),
                               outputs["train_step_l2_sum_before_step"][0],
                               rtol=1e-5)
    kw = {"step": tf.constant(0, tf.int64)}
    if name == "micro_search":
        kw = {"arc": tf.constant(np.concatenate(
            [outputs["train_step_normal_arc"][0],
             outputs["train_step_reduce_arc"][0]]))}
    x = tf.constant(inputs["train_step_x_train"][0])
    y = tf.constant(inputs["train_step_y_train"][0])

    def xent(logits):
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=y, logits=logits))

    with tf.GradientTape() as tape:
        logits, aux_logits = m(x, training=True, **kw)
        loss, aux_loss = xent(logits), xent(aux_logits)
        total = loss + 0.4 * aux_loss + cfg["l2_reg"] * l2_loss(variables)
    grad_norm = float(tf.linalg.global_norm(tape.gradient(total, variables)))
    np.testing.assert_allclose(float(loss), outputs["train_step_loss"][0],
                               rtol=1e-5)
    np.testing.assert_allclose(float(aux_loss),
                               outputs["train_step_aux_loss"][0], rtol=1e-5)
    correct = int(tf.reduce_sum(tf.cast(tf.equal(
        tf.argmax(logits, 1, output_type=tf.int32), y), tf.int32)))
    assert correct == int(outputs["train_step_train_acc"][0])
    # What pins the step to the reference, CPU-independently: the loss, the
    # aux loss and the accuracy above (1e-5: the forward pass, unaffected by
    # the CPU's summation order at that level), the L2 sum (1e-5), and the
    # gradient norm within RACE_FREE_RTOL of the reference's race-free
    # values. The last is the only gradient check, so it is not an exact
    # pin: agreement to 2e-7 with the reference on the same CPU is what
    # tests/golden_tools/race_free_grad_norm.py measures, and it must be
    # rerun when the CPU changes (see RACE_FREE_GRAD_NORMS).
    race_free = RACE_FREE_GRAD_NORMS[name]
    low = min(race_free) * (1 - RACE_FREE_RTOL)
    high = max(race_free) * (1 + RACE_FREE_RTOL)
    assert low <= grad_norm <= high, (
        "step-0 gradient norm {:.6f} is outside [{:.6f}, {:.6f}], the "
        "reference's race-free values {} widened by {} relative; run "
        "tests/golden_tools/race_free_grad_norm.py on this machine".format(
            grad_norm, low, high, race_free, RACE_FREE_RTOL))
    # The recorded (racy) value: within the README's "about 1e-3" (1.7e-3
    # and 1.3e-3 measured from the race-free values).
    np.testing.assert_allclose(grad_norm, outputs["train_step_grad_norm"][0],
                               rtol=3e-3)
