"""The enas_lm fixed model against outputs recorded from enas_lm itself
(../shared/reference/enas_lm/goldens/lm_fixed; skipped when absent): the
README's arc, hidden 64, batch 20, bptt 35, dropout off, imported from the
recorded TF1 checkpoints with the port's `--reference_checkpoint` reader.

Tolerances are the goldens README's: forward values rtol/atol 1e-5,
gradient norms rtol 1e-4, weights after 3 steps atol 1e-6; window lengths,
learning rates and the averaging step exactly.
"""

import json

import numpy as np
import pytest
import tensorflow as tf

from src.enas_lm.arcs import EnasLmArc
from src.enas_lm.checkpoint import import_enas_lm_checkpoint
from src.enas_lm.child import EnasLmChildConfig, EnasLmFixedChild
from src.enas_lm.trainer import EnasLmFixedTrainer, EnasLmTrainConfig
from src.errors import UserError
from tests.conftest import ENAS_LM_WEIGHTS as WEIGHTS, SHARED

CASE = SHARED / "reference" / "enas_lm" / "goldens" / "lm_fixed"

FORWARD = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def case():
    if not CASE.is_dir():
        pytest.skip("enas_lm goldens not found at {}".format(CASE))
    config = json.loads((CASE / "config.json").read_text())
    return (config, dict(np.load(CASE / "inputs.npz")),
            dict(np.load(CASE / "outputs.npz")))


def build(config, checkpoint):
    hp = config["hparams"]
    child = EnasLmFixedChild(EnasLmChildConfig(
        fixed_arc=EnasLmArc.parse(hp["fixed_arc"], len(hp["fixed_arc"]) // 2),
        vocab_size=hp["vocab_size"], hidden_size=hp["hidden_size"],
        batch_size=hp["batch_size"], bptt_steps=hp["bptt_steps"],
        init_range=hp["init_range"], drop_e=hp["drop_e"],
        drop_i=hp["drop_i"], drop_l=hp["drop_l"], drop_o=hp["drop_o"],
        drop_w=hp["drop_w"], drop_x=hp["drop_x"], seed=1))
    trainer = EnasLmFixedTrainer(child, EnasLmTrainConfig(
        learning_rate=hp["learning_rate"], bptt_steps=hp["bptt_steps"],
        grad_bound=hp["grad_bound"], weight_decay=hp["weight_decay"],
        alpha=hp["alpha"], num_warmup_steps=hp["num_warmup_steps"]))
    info = import_enas_lm_checkpoint(CASE / checkpoint, child, trainer)
    return child, trainer, info


def check_evaluation(trainer, inputs, outputs, prefix):
    state = tf.zeros([20, trainer.child.cfg.hidden_size])
    for w in (0, 1):
        nll, state = trainer.eval_window(inputs["valid_x%d" % w],
                                         inputs["valid_y%d" % w], state)
        np.testing.assert_allclose(nll, outputs["%s_valid_xent_w%d" % (
            prefix, w)], **FORWARD)
        np.testing.assert_allclose(np.mean(nll), outputs[
            "%s_valid_loss_w%d" % (prefix, w)], **FORWARD)
        np.testing.assert_allclose(state, outputs[
            "%s_valid_state_after_w%d" % (prefix, w)], **FORWARD)
    # The batch-1 test pass, one traced while loop, from a zero state.
    losses, state = trainer.test_pass(inputs["test_tokens"],
                                      tf.zeros([1, state.shape[1]]))
    np.testing.assert_allclose(losses, outputs[prefix + "_test_losses"],
                               **FORWARD)
    np.testing.assert_allclose(state, outputs[prefix + "_test_state_final"],
                               **FORWARD)


def test_the_reference_checkpoint_imports_every_variable_by_its_name(case):
    config, _, outputs = case
    child, trainer, info = build(config, "ckpt_init/model.ckpt-0")
    assert [v.path for v in child.optimizer_variables()] == \
        config["optimizer_var_list"]
    assert info == {"loaded": 14, "global_step": 0, "start_idx": 0,
                    "train_step": None}
    np.testing.assert_array_equal(child.batch_state,
                                  outputs["init_batch_state"])
    np.testing.assert_array_equal(child.test_state,
                                  outputs["init_test_state"])
    assert float(trainer.avg_step.numpy()) == float(outputs["avg_step_init"])


def test_evaluation_from_both_checkpoints_matches_the_recorded_losses(case):
    config, inputs, outputs = case
    _, trainer, _ = build(config, "ckpt_init/model.ckpt-0")
    check_evaluation(trainer, inputs, outputs, "init")
    # What fixed.py's final test sees when averaging never started: the
    # test state as initialised, not reset.
    losses, _ = trainer.test_pass(inputs["test_tokens"][:2],
                                  trainer.child.test_state)
    np.testing.assert_allclose(
        losses[0], outputs["init_test_loss_token0_unreset_state"], **FORWARD)
    _, trainer, info = build(config, "ckpt/model.ckpt-3")
    assert info["global_step"] == 3
    check_evaluation(trainer, inputs, outputs, "ckpt")


def check_step(out, outputs, prefix, k):
    for name in ("loss", "reg_loss", "l2_sum"):
        np.testing.assert_allclose(out[name], outputs[prefix + name][k],
                                   **FORWARD)
    np.testing.assert_allclose(out["grad_norm"], outputs[prefix + "grad_norm"]
                               [k], rtol=1e-4)
    assert float(out["lr"]) == float(outputs[prefix + "lr"][k])


def test_three_sgd_steps_replay_losses_norms_rates_states_and_weights(case):
    config, inputs, outputs = case
    child, trainer, _ = build(config, "ckpt_init/model.ckpt-0")
    for k in range(3):
        np.testing.assert_allclose(child.batch_state, outputs[
            "train_step_state_before_%d" % k], **FORWARD)
        x = inputs["train_step_x_%d" % k]
        assert x.shape[1] == outputs["train_step_seq_len"][k]
        out = trainer.train_step(x, inputs["train_step_y_%d" % k])
        check_step(out, outputs, "train_step_", k)
        assert int(out["moving_avg_started"]) == 0
        np.testing.assert_allclose(child.batch_state, outputs[
            "train_step_state_after_%d" % k], **FORWARD)
    assert int(trainer.global_step.numpy()) == 3
    reader = tf.train.load_checkpoint(str(CASE / "ckpt/model.ckpt-3"))
    for v in child.optimizer_variables():
        np.testing.assert_allclose(v, reader.get_tensor(v.path), **WEIGHTS,
                                   err_msg=v.path)


def test_averaging_replays_its_steps_and_evaluates_on_the_averages(case):
    config, inputs, outputs = case
    child, trainer, _ = build(config, "ckpt/model.ckpt-3")
    trainer.start_average()
    for k in range(3):
        out = trainer.train_step(inputs["avg_train_step_x_%d" % k],
                                 inputs["avg_train_step_y_%d" % k])
        check_step(out, outputs, "avg_train_step_", k)
        assert int(out["moving_avg_started"]) == 1
        trainer.update_average()
    # enas_lm's avg_step starts at its random initial value (bug 2): the
    # averages are the sum of the weights over (a0 + 3).
    assert float(trainer.avg_step.numpy()) == float(outputs["avg_step_final"])
    np.testing.assert_allclose(
        [float(tf.reduce_sum(tf.cast(a, tf.float64)))
         for a in trainer.averages], outputs["avg_var_sum"], rtol=1e-5,
        atol=1e-4)
    weights = [v.numpy() for v in child.optimizer_variables()]
    with trainer.averaged_weights():
        losses, _ = trainer.evaluate_windows(
            [(inputs["valid_x0"], inputs["valid_y0"]),
             (inputs["valid_x1"], inputs["valid_y1"])],
            tf.zeros([20, child.cfg.hidden_size]))
        nll, _ = trainer.eval_window(inputs["valid_x0"], inputs["valid_y0"],
                                     tf.zeros([20, child.cfg.hidden_size]))
        np.testing.assert_allclose(nll, outputs["avg_valid_xent_w0"],
                                   **FORWARD)
    np.testing.assert_allclose(losses, [outputs["avg_valid_loss_w0"],
                                        outputs["avg_valid_loss_w1"]],
                               **FORWARD)
    for v, w in zip(child.optimizer_variables(), weights):
        np.testing.assert_array_equal(v, w)  # restored after the block


def test_a_checkpoint_of_another_size_is_a_one_line_error(case, tmp_path):
    config, _, _ = case
    child = EnasLmFixedChild(EnasLmChildConfig(
        fixed_arc=EnasLmArc.parse("0 0 1 1", 2), hidden_size=8,
        batch_size=20))
    with pytest.raises(UserError) as e:
        import_enas_lm_checkpoint(CASE / "ckpt/model.ckpt-3", child)
    message = str(e.value)
    assert "\n" not in message
    assert "language_model/embedding/w (here [10000, 8], checkpoint " \
        "[10000, 64])" in message
    assert "unexpected: language_model/rnn_cell/layer_2/w" in message


def test_the_xla_step_replays_the_first_recorded_step(case):
    config, inputs, outputs = case
    _, trainer, _ = build(config, "ckpt_init/model.ckpt-0")
    xla = EnasLmFixedTrainer(trainer.child, trainer.cfg, jit_compile=True)
    out = xla.train_step(inputs["train_step_x_0"], inputs["train_step_y_0"])
    check_step(out, outputs, "train_step_", 0)
