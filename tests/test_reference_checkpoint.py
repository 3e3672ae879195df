"""The reference-checkpoint importer on its own: our weights written under
the reference's TF1 names come back exactly, into every kind of model; the
importer's checks (missing, unexpected, mismatched names; optimiser slots,
step counters, baseline); and the recorded controller checkpoints
(../shared/reference/goldens; those tests skip when absent)."""

import json

import numpy as np
import pytest
import tensorflow as tf

from src import registry
from src.macro import arcs as macro_arcs
from src.micro import arcs as micro_arcs
from src.macro.child import MacroConfig
from src.macro.controller import MacroController, MacroControllerConfig
from src.micro.child import MicroConfig
from src.micro.controller import MicroController, MicroControllerConfig
from src.errors import UserError
from src.ptb.arcs import PtbArc
from src.ptb.ptb_child import PtbChildConfig
from src.ptb.ptb_controller import PtbController, PtbControllerConfig
from src.reference_checkpoint import (import_reference_checkpoint,
                                      load_reference_weights,
                                      reference_checkpoint_tensors,
                                      reference_name, resolve_checkpoint,
                                      write_reference_checkpoint)
from tests.conftest import golden_case

MACRO_ARC = "0 5 1 4 0 1"                       # 3 layers, whole channels
MICRO_ARC = "0 0 1 2 1 3 2 4  0 1 1 2 2 0 1 3"  # 2 cells: normal, reduction
PTB_ARC = "0 0 1 1 2"                           # depth 3


# -- tiny models of every kind (shared with tests/test_export.py) ------------

def tiny_child(kind, seed=1):
    """A built child of `kind`: macro_fixed, macro_search,
    macro_search_channels (per-channel), micro_fixed (aux head),
    micro_search (aux head), ptb_fixed, ptb_search."""
    if kind.startswith("macro"):
        fixed = kind == "macro_fixed"
        cfg = MacroConfig(
            num_layers=3, out_filters=4, num_branches=4 if fixed else 6,
            whole_channels=kind != "macro_search_channels",
            fixed_arc=macro_arcs.MacroArc.parse(MACRO_ARC, 3, 4, True)
            if fixed else None, seed=seed)
        child = registry.space("macro").build_child(cfg)
    elif kind.startswith("micro"):
        cfg = MicroConfig(
            num_layers=1, num_cells=2, out_filters=4, use_aux_heads=True,
            fixed_arc=micro_arcs.MicroArc.parse(MICRO_ARC, 2)
            if kind == "micro_fixed" else None, seed=seed)
        child = registry.space("micro").build_child(cfg)
    else:
        return registry.space("ptb").build_child(PtbChildConfig(
            vocab_size=30, hidden_size=8, num_layers=1, rhn_depth=3,
            fixed_arc=PtbArc.parse(PTB_ARC, 3)
            if kind == "ptb_fixed" else None,
            batch_size=4, bptt_steps=5, seed=seed))
    kwargs = {}
    if child.searching:
        kwargs["arc"] = tf.zeros([cfg.arc_length], tf.int32)
    child(tf.zeros([1, 32, 32, 3]), training=False, **kwargs)
    return child


def tiny_controller(kind, seed=1):
    """A controller of `kind`: macro, micro or ptb."""
    if kind == "macro":
        return MacroController(MacroControllerConfig(
            num_layers=3, num_branches=6, out_filters=4, lstm_size=8,
            tanh_constant=1.5, skip_target=0.4, seed=seed))
    if kind == "micro":
        return MicroController(MicroControllerConfig(
            num_cells=2, num_branches=5, lstm_size=8, tanh_constant=1.1,
            op_tanh_reduce=2.5, seed=seed))
    return PtbController(PtbControllerConfig(
        rhn_depth=3, num_funcs=2, lstm_size=8, tanh_constant=2.5,
        temperature=5.0, seed=seed))


def scramble(model, seed):
    """Gives every variable of `model` (batch-norm statistics, debias steps
    and carried states included) distinct random values."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        v.assign(rng.standard_normal(v.shape).astype(np.dtype(v.dtype)))


def values(model):
    return {v.path: v.numpy() for v in model.weights}


CHILDREN = ["macro_fixed", "macro_search", "macro_search_channels",
            "micro_fixed", "micro_search", "ptb_fixed", "ptb_search"]


# -- round trips --------------------------------------------------------------

@pytest.mark.parametrize("kind", CHILDREN)
def test_our_weights_written_with_reference_names_round_trip_exactly(
        kind, tmp_path):
    space = kind.split("_")[0]
    searching = "search" in kind
    source = tiny_child(kind, seed=1)
    scramble(source, 10)
    source_ctrl = tiny_controller(space, seed=1) if searching else None
    if source_ctrl is not None:
        scramble(source_ctrl, 11)
    tensors = reference_checkpoint_tensors(
        child=source, controller=source_ctrl,
        baseline=tf.constant(0.625) if searching else None,
        global_step=12, train_step=5 if searching else None)
    # Every name is the reference's form (debias state under the doubled
    # scope), and what the reference's saver adds is left aside.
    assert all(not n.endswith(("_biased", "_local_step")) for n in tensors)
    extras = {"T_i": np.int32(3), "last_reset": np.int32(0),
              "beta1_power": np.float32(0.9)}
    for name in list(tensors)[:5]:
        extras[name + "/Momentum"] = np.zeros_like(tensors[name])
    prefix = write_reference_checkpoint(tmp_path / "model.ckpt-12",
                                        {**tensors, **extras})

    target = tiny_child(kind, seed=2)
    target_ctrl = tiny_controller(space, seed=2) if searching else None
    baseline = tf.Variable(0.0)
    info = import_reference_checkpoint(tmp_path, child=target,
                                       controller=target_ctrl,
                                       baseline=baseline)
    want = values(source)
    got = values(target)
    assert want.keys() == got.keys()
    for path in want:
        np.testing.assert_array_equal(got[path], want[path], err_msg=path)
    if searching:
        for a, b in zip(source_ctrl.weights, target_ctrl.weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        assert float(baseline.numpy()) == 0.625
        assert info["baseline"] == 0.625 and info["train_step"] == 5
    assert info["global_step"] == 12
    n_ctrl = len(target_ctrl.weights) if searching else 0
    assert info["loaded"] == len(target.weights) + n_ctrl + int(searching)
    assert sorted(info["ignored"]) == sorted(extras)
    assert resolve_checkpoint(tmp_path) == str(prefix)


def test_a_controller_only_checkpoint_is_enough_for_the_controller(tmp_path):
    source = tiny_controller("macro", seed=1)
    scramble(source, 3)
    write_reference_checkpoint(
        tmp_path / "model.ckpt-7",
        reference_checkpoint_tensors(controller=source, baseline=0.5,
                                     train_step=7))
    target = tiny_controller("macro", seed=2)
    info = import_reference_checkpoint(tmp_path, controller=target)
    for a, b in zip(source.weights, target.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # No baseline variable given: the baseline is ignored.
    assert info == {"global_step": None, "train_step": 7, "baseline": None,
                    "loaded": len(target.weights), "ignored": ["Variable"]}
    # Asking for a child from it names the problem in one line.
    with pytest.raises(UserError) as e:
        import_reference_checkpoint(tmp_path, child=tiny_child("macro_search"),
                                    controller=target)
    message = str(e.value)
    assert "\n" not in message
    assert "holds none of the child's variables" in message


def test_a_child_checkpoint_leaves_the_controller_scope_aside(tmp_path):
    child = tiny_child("micro_search", seed=1)
    ctrl = tiny_controller("micro", seed=1)
    write_reference_checkpoint(
        tmp_path / "model.ckpt-1",
        reference_checkpoint_tensors(child=child, controller=ctrl,
                                     global_step=1))
    info = import_reference_checkpoint(tmp_path,
                                       child=tiny_child("micro_search", 2))
    assert set(info["ignored"]) == {reference_name(v.path)
                                    for v in ctrl.weights}


def test_missing_unexpected_and_misshapen_names_are_listed_in_one_line(
        tmp_path):
    source = tiny_child("macro_fixed", seed=1)
    tensors = reference_checkpoint_tensors(child=source, global_step=3)
    names = sorted(n for n in tensors if n.startswith("child/layer_2/"))
    for name in names:
        del tensors[name]
    tensors["child/layer_9/conv_3x3/w"] = np.zeros([3, 3, 4, 4], np.float32)
    tensors["optimizer_state"] = np.zeros([2], np.float32)
    tensors["child/fc/w"] = np.zeros([5, 10], np.float32)
    write_reference_checkpoint(tmp_path / "model.ckpt-3", tensors)

    target = tiny_child("macro_fixed", seed=2)
    before = values(target)
    with pytest.raises(UserError) as e:
        import_reference_checkpoint(tmp_path / "model.ckpt-3", child=target)
    message = str(e.value)
    assert "\n" not in message
    assert "{} missing: {}".format(len(names), names[0]) in message
    assert "and {} more".format(len(names) - 10) in message
    assert "2 unexpected: child/layer_9/conv_3x3/w, optimizer_state" \
        in message
    assert ("1 with another shape or dtype: child/fc/w (here [16, 10], "
            "checkpoint [5, 10])") in message
    # Nothing was assigned.
    for path, value in values(target).items():
        np.testing.assert_array_equal(value, before[path])


def test_a_wrong_dtype_is_a_mismatch(tmp_path):
    source = tiny_controller("ptb", seed=1)
    tensors = reference_checkpoint_tensors(controller=source)
    tensors["controller/softmax/w"] = tensors["controller/softmax/w"].astype(
        np.float64)
    write_reference_checkpoint(tmp_path / "model.ckpt-0", tensors)
    with pytest.raises(UserError, match=r"controller/softmax/w \(here "
                                        r"float32, checkpoint float64\)"):
        import_reference_checkpoint(tmp_path, controller=source)


def test_missing_checkpoints_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="holds no checkpoint"):
        resolve_checkpoint(tmp_path)
    with pytest.raises(UserError, match=r"model.ckpt-5.index does not exist"):
        import_reference_checkpoint(tmp_path / "model.ckpt-5",
                                    controller=tiny_controller("ptb"))


def test_load_reference_weights_reads_a_folder_too(tmp_path):
    source = tiny_child("ptb_search", seed=1)
    scramble(source, 4)
    write_reference_checkpoint(tmp_path / "model.ckpt-0",
                               reference_checkpoint_tensors(child=source))
    target = tiny_child("ptb_search", seed=2)
    load_reference_weights(target.weights, str(tmp_path))
    for a, b in zip(source.weights, target.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


# -- the reference's own checkpoints ------------------------------------------

def _golden_controller(name):
    case = golden_case(name + "_controller")
    cfg = json.loads((case / "config.json").read_text())
    kw = cfg["controller_constructor_kwargs"]
    if name == "macro":
        ctrl = MacroController(MacroControllerConfig(
            num_layers=kw["num_layers"], num_branches=kw["num_branches"],
            out_filters=kw["out_filters"], lstm_size=kw["lstm_size"],
            lstm_num_layers=kw["lstm_num_layers"],
            tanh_constant=kw["tanh_constant"],
            op_tanh_reduce=kw["op_tanh_reduce"],
            temperature=kw["temperature"],
            search_whole_channels=kw["search_whole_channels"],
            skip_target=kw["skip_target"], skip_weight=kw["skip_weight"]))
    elif name == "micro":
        ctrl = MicroController(MicroControllerConfig(
            num_cells=kw["num_cells"], num_branches=kw["num_branches"],
            lstm_size=kw["lstm_size"], lstm_num_layers=kw["lstm_num_layers"],
            tanh_constant=kw["tanh_constant"],
            op_tanh_reduce=kw["op_tanh_reduce"],
            temperature=kw["temperature"]))
    else:
        kw = cfg["controller_attributes"]
        ctrl = PtbController(PtbControllerConfig(
            rhn_depth=kw["rhn_depth"], num_funcs=kw["num_funcs"],
            lstm_size=kw["lstm_size"], lstm_num_layers=kw["lstm_num_layers"],
            tanh_constant=kw["tanh_constant"],
            temperature=kw["temperature"]))
    return case, ctrl


@pytest.mark.parametrize("name", ["macro", "micro", "ptb"])
def test_recorded_controller_checkpoints_import_with_step_and_baseline(name):
    case, ctrl = _golden_controller(name)
    baseline = tf.Variable(0.0)
    for folder, step in (("ckpt_init", 0), ("ckpt", 3)):
        info = import_reference_checkpoint(case / folder, controller=ctrl,
                                           baseline=baseline)
        reader = tf.train.load_checkpoint(resolve_checkpoint(case / folder))
        assert info["train_step"] == step and info["global_step"] is None
        assert info["baseline"] == float(reader.get_tensor("Variable"))
        assert float(baseline.numpy()) == info["baseline"]
        assert info["loaded"] == len(ctrl.weights) + 1
        for v in ctrl.weights:
            np.testing.assert_array_equal(v.numpy(),
                                          reader.get_tensor(v.path))
    assert info["baseline"] != 0.0
