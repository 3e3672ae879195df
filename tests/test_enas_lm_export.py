"""SavedModel export of the enas_lm space: `python -m src.export
--space=enas_lm_fixed|enas_lm_search` followed by that entry point's flags.

The golden cases (../shared/reference/enas_lm/goldens; skipped when absent)
go through the export from enas_lm's own flags and TF1 checkpoints and
give the recorded losses, states and controller scores within the goldens
README's tolerances (forward values rtol/atol 1e-5). A run of ours that
started averaging exports its averaged weights.
"""

import json
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

from src import entry_point, export, registry
from src.checkpoints import RunCheckpoint
from src.enas_lm.arcs import EnasLmArc
from src.enas_lm.child import EnasLmChildConfig, EnasLmFixedChild
from src.enas_lm.trainer import EnasLmFixedTrainer, EnasLmTrainConfig
from tests.conftest import enas_lm_golden
from tests.ptb_fixtures import REPO_ROOT

FORWARD = dict(rtol=1e-5, atol=1e-5)


def load(name):
    """An enas_lm golden case with its config.json."""
    case, inputs, outputs = enas_lm_golden(name)
    config = json.loads((case / "config.json").read_text())
    return case, config, inputs, outputs


def nll_of(logits, labels):
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=labels, logits=logits).numpy()


def export_in_process(entry, argv, tmp_path, **kwargs):
    """export_from_config for entry point `entry`'s flags `argv`; returns
    (the loaded SavedModel, the export's record)."""
    fv, _ = entry_point.parse_flags(entry, ["export", *argv])
    space = registry.space("enas_lm")
    out = str(tmp_path / "exported")
    info = export.export_from_config(space.config_from_flags(fv), space, out,
                                     log=lambda *_: None, **kwargs)
    return tf.saved_model.load(out), info


def test_enas_lm_flags_export_the_fixed_model_which_serves_the_recorded_losses(
        tmp_path):
    case, config, inputs, outputs = load("lm_fixed")
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT),
               TF_CPP_MIN_LOG_LEVEL="2")
    out = tmp_path / "cli"
    result = subprocess.run(
        # The goldens ran fixed_lib's hard-coded batch 64 as 20.
        [sys.executable, "-m", "src.export", "--space=enas_lm_fixed",
         *config["argv"][1:], "--child_batch_size=20",
         "--reference_checkpoint=" + str(case / "ckpt/model.ckpt-3"),
         "--export_dir=" + str(out)],
        capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Exported child from" in result.stdout
    assert "(step 3)" in result.stdout
    loaded = tf.saved_model.load(str(out))
    assert sorted(loaded.signatures) == ["serving_default"]
    serve = loaded.signatures["serving_default"]
    state = tf.zeros([20, 64])
    for w in (0, 1):
        got = serve(tokens=tf.constant(inputs["valid_x%d" % w]), state=state)
        np.testing.assert_allclose(
            nll_of(got["logits"], inputs["valid_y%d" % w]),
            outputs["ckpt_valid_xent_w%d" % w], **FORWARD)
        np.testing.assert_allclose(
            got["state"], outputs["ckpt_valid_state_after_w%d" % w],
            **FORWARD)
        state = got["state"]
    record = json.loads((out / export.INFO_FILE).read_text())
    assert record["reference_checkpoint"] and record["global_step"] == 3
    assert record["space"] == "enas_lm_fixed"
    assert record["moving_average"] is False  # averaging never started


def test_the_search_child_and_controller_export_and_score_the_recorded_arcs(
        tmp_path):
    case, config, inputs, outputs = load("lm_search")
    argv = [*config["argv"][1:], "--child_hidden_size=32"]
    loaded, info = export_in_process(
        "enas_lm_search", argv, tmp_path,
        reference_checkpoint=str(case / "ckpt/model.ckpt-3"))
    assert info["signatures"] == ["log_prob", "predict_with_arc", "sample"]
    assert info["global_step"] == 3
    predict = loaded.signatures["predict_with_arc"]
    for a, arc in enumerate(inputs["arcs"].astype(np.int32)):
        for w in (0, 1):
            got = predict(tokens=tf.constant(inputs["valid_x%d" % w]),
                          state=tf.zeros([20, 32]), arc=tf.constant(arc))
            np.testing.assert_allclose(
                nll_of(got["logits"], inputs["valid_y%d" % w]),
                outputs["ckpt_arc%d_valid_xent_w%d" % (a, w)], **FORWARD)

    case, config, _, outputs = load("lm_controller")
    # The recorded trained checkpoint holds the controller only.
    loaded, info = export_in_process(
        "enas_lm_search", config["argv"][1:], tmp_path / "controller",
        what="controller",
        reference_checkpoint=str(case / "ckpt/model.ckpt-3"))
    assert info["signatures"] == ["log_prob", "sample"]
    log_prob = loaded.signatures["log_prob"]
    for s, arc in enumerate(outputs["sample_arc"]):
        got = log_prob(arc=tf.constant(arc, tf.int32))
        np.testing.assert_allclose(-got["log_prob"],
                                   outputs["sample_log_prob"][s], **FORWARD)
        np.testing.assert_allclose(got["entropy"],
                                   outputs["sample_entropy"][s], **FORWARD)
    sampled = loaded.signatures["sample"]()
    EnasLmArc.parse([int(v) for v in sampled["arc"].numpy()], 9)


def test_a_fixed_run_that_started_averaging_exports_its_averaged_weights(
        tmp_path):
    arc = "0 0 0 1 1 2"
    child = EnasLmFixedChild(EnasLmChildConfig(
        fixed_arc=EnasLmArc.parse(arc, 3), vocab_size=50, hidden_size=8,
        batch_size=4, bptt_steps=5, drop_e=0, drop_i=0, drop_l=0, drop_o=0,
        drop_w=0, drop_x=0, seed=2))
    trainer = EnasLmFixedTrainer(child, EnasLmTrainConfig(
        learning_rate=1.0, bptt_steps=5))
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.integers(0, 50, (4, 6)).astype(np.int32)
        trainer.train_step(x[:, :-1], x[:, 1:])
        trainer.start_average()
        trainer.update_average()
    run_dir = str(tmp_path / "run")
    RunCheckpoint(run_dir, models={"child": child},
                  **trainer.checkpoint_objects()).save(1, 3)
    tokens = tf.constant(rng.integers(0, 50, (2, 7)).astype(np.int32))
    state = tf.zeros([2, 8])
    with trainer.averaged_weights():
        want = child.logits(child(tokens, state)[0]).numpy()
    raw = child.logits(child(tokens, state)[0]).numpy()
    assert not np.allclose(want, raw)

    loaded, info = export_in_process(
        "enas_lm_fixed", ["--fixed_arc=" + arc, "--child_vocab_size=50",
                          "--child_hidden_size=8", "--child_batch_size=4",
                          "--child_bptt_steps=5", "--output_dir=" + run_dir,
                          "--data_path=unused"],
        tmp_path, checkpoint=run_dir)
    assert info["moving_average"] is True and info["global_step"] == 3
    got = loaded.signatures["serving_default"](tokens=tokens, state=state)
    np.testing.assert_allclose(got["logits"], want, rtol=1e-5, atol=1e-5)
