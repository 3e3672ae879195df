"""The reference's recorded outputs reproduced THROUGH exported SavedModels
(../shared/reference/goldens; every test skips when absent).

Each case: the model built as the reference's config.json describes it,
initialised from the reference's own TF1 checkpoint by
`import_reference_checkpoint`, exported by `src.export.save_export`,
reloaded with tf.saved_model.load, and its signatures compared with the
recorded outputs: child logits to 1e-4 absolute, log-probabilities and
entropies to 1e-5, losses to 1e-5 relative. Two cases also go through
`python -m src.export` with the reference's own flags (config.json argv)
and `--reference_checkpoint`. (The training-step replays are in the golden
tests of the children and controllers.)
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from src import export, registry
from src.macro import arcs as macro_arcs
from src.micro import arcs as micro_arcs
from src.macro.child import MacroConfig
from src.macro.controller import MacroController, MacroControllerConfig
from src.micro.child import MicroConfig
from src.micro.controller import MicroController, MicroControllerConfig
from src.ptb.arcs import PtbArc
from src.ptb.ptb_child import FixedPtbChild, PtbChildConfig
from src.reference_checkpoint import import_reference_checkpoint
from tests.conftest import REPO_ROOT, golden_case
from tests.test_reference_checkpoint import _golden_controller

LOGITS_ATOL = 1e-4
SCORE_ATOL = 1e-5
LOSS_RTOL = 1e-5


def recorded(case):
    return np.load(case / "inputs.npz"), np.load(case / "outputs.npz")


def attributes(case):
    return json.loads((case / "config.json").read_text())["child_attributes"]


def kwargs_of(case):
    return json.loads((case / "config.json").read_text())[
        "controller_constructor_kwargs"]


def exported(tmp_path, case, child=None, controller=None, **kwargs):
    """Imports the reference's final checkpoint into the models, exports
    them and returns (the reloaded SavedModel, the import's report)."""
    info = import_reference_checkpoint(case / "ckpt", child=child,
                                       controller=controller)
    export.save_export(str(tmp_path / "exported"), child=child,
                       controller=controller, **kwargs)
    return tf.saved_model.load(str(tmp_path / "exported")), info


# -- CIFAR-10 children --------------------------------------------------------

def macro_child(case, fixed):
    cfg = attributes(case)
    arc = None
    if fixed:
        arc = macro_arcs.MacroArc.parse(cfg["fixed_arc"], cfg["num_layers"],
                                  cfg["num_branches"], True)
    child = registry.space("macro").build_child(MacroConfig(
        num_layers=cfg["num_layers"], out_filters=cfg["out_filters"],
        num_branches=cfg["num_branches"],
        whole_channels=cfg.get("whole_channels", True), fixed_arc=arc,
        keep_prob=cfg["keep_prob"]))
    return _built(child)


def micro_child(case):
    cfg = attributes(case)
    arc = None
    if cfg["fixed_arc"]:
        arc = micro_arcs.MicroArc.parse(cfg["fixed_arc"], cfg["num_cells"])
    return _built(registry.space("micro").build_child(MicroConfig(
        num_layers=cfg["num_layers"], num_cells=cfg["num_cells"],
        out_filters=cfg["out_filters"], keep_prob=cfg["keep_prob"],
        drop_path_keep_prob=cfg["drop_path_keep_prob"],
        use_aux_heads=cfg["use_aux_heads"], fixed_arc=arc,
        num_train_steps=cfg["num_train_steps"])))


def _built(child):
    kwargs = {}
    if child.searching:
        kwargs["arc"] = tf.zeros([child.cfg.arc_length], tf.int32)
    child(tf.zeros([1, 32, 32, 3]), training=False, **kwargs)
    return child


@pytest.mark.parametrize("name", ["macro_fixed", "micro_fixed"])
def test_fixed_children_test_logits_through_the_export(name, tmp_path):
    case = golden_case(name)
    child = (macro_child(case, fixed=True) if name == "macro_fixed"
             else micro_child(case))
    loaded, info = exported(tmp_path, case, child=child)
    assert info["global_step"] == 3
    assert info["loaded"] == len(child.weights)
    assert sorted(info["ignored"]) == ["T_i", "last_reset"]
    inputs, outputs = recorded(case)
    logits = loaded.signatures["predict_normalized"](
        images=tf.constant(inputs["test_x"]))["logits"]
    np.testing.assert_allclose(logits, outputs["test_logits"],
                               atol=LOGITS_ATOL)


def test_micro_search_valid_logits_of_the_three_arcs_through_the_export(
        tmp_path):
    case = golden_case("micro_search")
    child = micro_child(case)
    controller = MicroController(MicroControllerConfig(
        num_cells=kwargs_of(case)["num_cells"],
        num_branches=kwargs_of(case)["num_branches"],
        lstm_size=kwargs_of(case)["lstm_size"],
        tanh_constant=kwargs_of(case)["tanh_constant"],
        op_tanh_reduce=kwargs_of(case)["op_tanh_reduce"]))
    # Its valid graph runs in training mode: batch statistics.
    loaded, info = exported(tmp_path, case, child=child,
                            controller=controller, batch_statistics=True)
    assert info["global_step"] == 3
    inputs, outputs = recorded(case)
    fn = loaded.signatures["predict_normalized_with_arc"]
    x = tf.constant(inputs["valid_x"])
    for i, (normal, reduce_) in enumerate(zip(inputs["normal_arcs"],
                                              inputs["reduce_arcs"])):
        arc = tf.constant(np.concatenate([normal, reduce_]), tf.int32)
        np.testing.assert_allclose(fn(images=x, arc=arc)["logits"],
                                   outputs["valid_logits"][i],
                                   atol=LOGITS_ATOL)
    assert sorted(loaded.signatures) == [
        "log_prob", "predict_normalized_with_arc", "sample"]


def test_macro_search_valid_logits_need_op_5_everywhere(tmp_path):
    # The reference's search child always runs its max-pool branch (its
    # late-binding closure); ours runs the op the arc names. Given op 5 at
    # every layer and the recorded skips, the exported child reproduces the
    # recorded logits; the recorded ops change them.
    case = golden_case("macro_search")
    child = macro_child(case, fixed=False)
    kw = kwargs_of(case)
    controller = MacroController(MacroControllerConfig(
        num_layers=kw["num_layers"], num_branches=kw["num_branches"],
        out_filters=kw["out_filters"], lstm_size=kw["lstm_size"],
        tanh_constant=kw["tanh_constant"], skip_target=kw["skip_target"],
        skip_weight=kw["skip_weight"]))
    loaded, info = exported(tmp_path, case, child=child,
                            controller=controller)
    assert info["global_step"] == 3
    inputs, outputs = recorded(case)
    fn = loaded.signatures["predict_normalized_with_arc"]
    x = tf.constant(inputs["valid_x"])
    num_layers = kw["num_layers"]
    op_positions = [l + l * (l - 1) // 2 for l in range(num_layers)]
    for i, arc in enumerate(inputs["arcs"]):
        max_pool = np.array(arc, np.int32)
        max_pool[op_positions] = 5
        np.testing.assert_allclose(
            fn(images=x, arc=tf.constant(max_pool))["logits"],
            outputs["valid_logits"][i], atol=LOGITS_ATOL)
        sampled = fn(images=x, arc=tf.constant(arc, tf.int32))["logits"]
        assert np.abs(sampled - outputs["valid_logits"][i]).max() > 0.1
        if i > 0:
            continue
        for op in range(5):
            other = max_pool.copy()
            other[op_positions] = op
            got = fn(images=x, arc=tf.constant(other))["logits"]
            assert np.abs(got - outputs["valid_logits"][i]).max() > 0.1, op
    # The controller came along from the same checkpoint.
    assert "sample" in loaded.signatures


# -- controllers ------------------------------------------------------------

@pytest.mark.parametrize("name", ["macro", "micro", "ptb"])
def test_controllers_score_the_twenty_recorded_samples_through_the_export(
        name, tmp_path):
    case, controller = _golden_controller(name)
    loaded, info = exported(tmp_path, case, controller=controller)
    assert info["train_step"] == 3 and info["global_step"] is None
    _, outputs = recorded(case)
    if name == "micro":
        samples = np.concatenate([outputs["sample_normal_arc"],
                                  outputs["sample_reduce_arc"]], axis=1)
    else:
        samples = outputs["sample_arc"]
    fn = loaded.signatures["log_prob"]
    for i, arc in enumerate(samples):
        got = fn(arc=tf.constant(arc, tf.int32))
        # Ours is the log-probability; the reference's sample_log_prob is
        # its negation (a sum of cross-entropies).
        np.testing.assert_allclose(-got["log_prob"],
                                   outputs["sample_log_prob"][i],
                                   atol=SCORE_ATOL, rtol=1e-6)
        np.testing.assert_allclose(got["entropy"],
                                   outputs["sample_entropy"][i],
                                   atol=SCORE_ATOL, rtol=1e-6)
        if name == "macro":
            assert float(got["skip_count"]) == \
                outputs["sample_skip_count"][i]
            np.testing.assert_allclose(got["skip_penalty"],
                                       outputs["sample_skip_penaltys"][i],
                                       atol=SCORE_ATOL)


# -- PTB ---------------------------------------------------------------------

def ptb_fixed_child(case):
    cfg = attributes(case)
    return FixedPtbChild(PtbChildConfig(
        vocab_size=cfg["vocab_size"], hidden_size=cfg["lstm_hidden_size"],
        num_layers=cfg["lstm_num_layers"], rhn_depth=cfg["rhn_depth"],
        num_funcs=cfg["num_funcs"],
        fixed_arc=PtbArc.parse(cfg["fixed_arc"], cfg["rhn_depth"],
                               cfg["num_funcs"]),
        batch_size=cfg["batch_size"], bptt_steps=cfg["bptt_steps"]))


def window_loss(logits, labels):
    """The reference's window loss: the sum of the tokens' NLL."""
    return float(tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.constant(labels), logits=logits)))


def test_ptb_fixed_valid_losses_and_carried_state_through_the_export(
        tmp_path):
    case = golden_case("ptb_fixed")
    child = ptb_fixed_child(case)
    loaded, info = exported(tmp_path, case, child=child)
    assert info["global_step"] == 3 and info["loaded"] == len(child.weights)
    inputs, outputs = recorded(case)
    fn = loaded.signatures["serving_default"]
    state = tf.zeros([1, 20, attributes(case)["lstm_hidden_size"]])
    for batch, key in ((0, "valid_loss_batch0_from_zero_state"),
                       (1, "valid_loss_batch1_carried_state")):
        x = inputs["valid_x_batch{}".format(batch)]
        y = inputs["valid_y_batch{}".format(batch)].reshape(x.shape)
        got = fn(tokens=tf.constant(x), state=state)
        assert got["logits"].shape == (20, 35, 10000)
        np.testing.assert_allclose(window_loss(got["logits"], y),
                                   outputs[key], rtol=LOSS_RTOL)
        state = got["state"]
    np.testing.assert_allclose(state,
                               outputs["start_h_after_two_valid_batches"],
                               atol=1e-5)


# -- python -m src.export with the reference's own flags ----------------------

def run_export(case, *extra, tmp_path):
    argv = json.loads((case / "config.json").read_text())["argv"][1:]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    out = tmp_path / "cli"
    result = subprocess.run(
        [sys.executable, "-m", "src.export", *argv,
         "--reference_checkpoint=" + str(case / "ckpt"),
         "--export_dir=" + str(out), *extra],
        capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return tf.saved_model.load(str(out)), result


def test_the_reference_flags_export_the_macro_final_child(tmp_path):
    case = golden_case("macro_fixed")
    loaded, result = run_export(case, tmp_path=tmp_path)
    # No --data_path among the reference's flags: no uint8 signature.
    assert "serving_default" not in loaded.signatures
    assert "warning: serving_default" in result.stdout
    assert "no --data_path is given" in result.stdout
    inputs, outputs = recorded(case)
    logits = loaded.signatures["predict_normalized"](
        images=tf.constant(inputs["test_x"]))["logits"]
    np.testing.assert_allclose(logits, outputs["test_logits"],
                               atol=LOGITS_ATOL)


def test_a_controller_only_reference_checkpoint_exports_the_controller(
        tmp_path):
    case = golden_case("ptb_controller")
    loaded, result = run_export(case, "--export_what=controller",
                                tmp_path=tmp_path)
    assert "(controller step 3)" in result.stdout
    assert sorted(loaded.signatures) == ["log_prob", "sample"]
    _, outputs = recorded(case)
    for i, arc in enumerate(outputs["sample_arc"]):
        got = loaded.signatures["log_prob"](arc=tf.constant(arc, tf.int32))
        np.testing.assert_allclose(-got["log_prob"],
                                   outputs["sample_log_prob"][i],
                                   atol=SCORE_ATOL, rtol=1e-6)
        np.testing.assert_allclose(got["entropy"],
                                   outputs["sample_entropy"][i],
                                   atol=SCORE_ATOL, rtol=1e-6)
