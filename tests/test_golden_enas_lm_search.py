"""The enas_lm search child and controller against outputs recorded from
enas_lm itself (../shared/reference/enas_lm/goldens/lm_search and
lm_controller; skipped when absent): 9 nodes, hidden 32, batch 20, bptt 35,
dropout off, imported from the recorded TF1 checkpoints.

Tolerances are the goldens README's: forward values rtol/atol 1e-5,
gradient norms rtol 1e-4, child weights after 3 steps atol 1e-6,
controller weights after 3 updates atol 1e-7; learning rates, baselines,
accepted/dropped gradients and update counts exactly.
"""

import numpy as np
import tensorflow as tf

from src.enas_lm.checkpoint import import_enas_lm_checkpoint
from src.enas_lm.child import EnasLmChildConfig, EnasLmSearchChild
from src.enas_lm.controller import (REWARD_CONSTANT, EnasLmController,
                                    EnasLmControllerConfig,
                                    SyncReplicasReinforce)
from src.enas_lm.trainer import EnasLmSearchTrainer, EnasLmTrainConfig
from src.reinforce import ReinforceConfig
from tests.conftest import ENAS_LM_WEIGHTS as WEIGHTS
from tests.conftest import enas_lm_golden as load

FORWARD = dict(rtol=1e-5, atol=1e-5)


def build_child():
    child = EnasLmSearchChild(EnasLmChildConfig(
        fixed_arc=None, search_layers=9, hidden_size=32, batch_size=20,
        bptt_steps=35, init_range=0.04, drop_e=0, drop_i=0, drop_l=0,
        drop_o=0, drop_w=0, drop_x=0, seed=1))
    trainer = EnasLmSearchTrainer(child, EnasLmTrainConfig(
        learning_rate=20.0, bptt_steps=35, grad_bound=0.1,
        weight_decay=8e-7, alpha=0.0, beta=1.0))
    return child, trainer


def test_every_arc_evaluates_as_recorded_from_both_checkpoints():
    case, inputs, outputs = load("lm_search")
    child, trainer = build_child()
    arcs = inputs["arcs"].astype(np.int32)
    for prefix, ckpt in (("init", "ckpt_init/model.ckpt-0"),
                         ("ckpt", "ckpt/model.ckpt-3")):
        import_enas_lm_checkpoint(case / ckpt, child)
        for a, arc in enumerate(arcs):
            for w in (0, 1):
                x, y = inputs["valid_x%d" % w], inputs["valid_y%d" % w]
                key = "%s_arc%d_%%s_w%d" % (prefix, a, w)
                nll, _ = trainer.eval_window(x, y, tf.zeros([20, 32]), arc)
                np.testing.assert_allclose(nll, outputs[key % "valid_xent"],
                                           **FORWARD)
                loss = trainer.reward_nll(x, y, arc)
                np.testing.assert_allclose(loss, outputs[key % "valid_loss"],
                                           **FORWARD)
                np.testing.assert_allclose(
                    REWARD_CONSTANT / np.exp(loss),
                    outputs[key % "reward_no_entropy"], **FORWARD)


def test_three_steps_on_three_arcs_replay_the_recorded_ones():
    case, inputs, outputs = load("lm_search")
    child, trainer = build_child()
    import_enas_lm_checkpoint(case / "ckpt_init/model.ckpt-0", child)
    arcs = inputs["arcs"].astype(np.int32)
    for k in range(3):
        np.testing.assert_allclose(child.batch_state, outputs[
            "train_step_state_before_%d" % k], **FORWARD)
        out = trainer.train_step(inputs["train_step_x_%d" % k],
                                 inputs["train_step_y_%d" % k], arcs[k])
        for name in ("loss", "reg_loss", "l2_reg_loss"):
            np.testing.assert_allclose(out[name], outputs[
                "train_step_" + name][k], **FORWARD)
        np.testing.assert_allclose(out["grad_norm"], outputs[
            "train_step_grad_norm"][k], rtol=1e-4)
        assert float(out["lr"]) == float(outputs["train_step_lr"][k])
        np.testing.assert_allclose(child.batch_state, outputs[
            "train_step_state_after_%d" % k], **FORWARD)
    reader = tf.train.load_checkpoint(str(case / "ckpt/model.ckpt-3"))
    for v in child.optimizer_variables():
        np.testing.assert_allclose(v, reader.get_tensor(v.path), **WEIGHTS,
                                   err_msg=v.path)


class ForcedArcs:
    """The controller with its draws replaced by the arc in `arc` (a
    variable set before each REINFORCE run)."""

    def __init__(self, controller):
        self.controller = controller
        self.arc = tf.Variable(tf.zeros([controller.config.arc_length],
                                        tf.int32))
        self.trainable_variables = controller.trainable_variables

    def sample(self):
        return self.controller._decide_all(tf.convert_to_tensor(self.arc))


def test_31_controller_calls_replay_rewards_baselines_and_3_adam_updates():
    case, inputs, outputs = load("lm_controller")
    child, trainer = build_child()
    controller = EnasLmController(EnasLmControllerConfig(seed=1))
    forced = ForcedArcs(controller)
    reinforce = SyncReplicasReinforce(
        forced, lambda arc, x, y: REWARD_CONSTANT / tf.exp(
            trainer.reward_nll(x, y, arc)),
        ReinforceConfig(lr=5e-5, bl_dec=0.999, entropy_weight=1e-5,
                        num_aggregate=10))
    import_enas_lm_checkpoint(case / "ckpt_init/model.ckpt-0", child,
                              controller=controller, reinforce=reinforce)
    for k in range(31):
        assert int(reinforce.local_step.numpy()) == \
            outputs["update_local_step"][k]
        assert int(reinforce.train_step.numpy()) == \
            outputs["update_train_step"][k]
        forced.arc.assign(outputs["update_arc"][k])
        out = reinforce.run(tf.constant(inputs["update_valid_x"][k]),
                            tf.constant(inputs["update_valid_y"][k]))
        np.testing.assert_allclose(-out["log_prob"], outputs[
            "update_log_prob"][k], **FORWARD)
        for name in ("entropy", "reward", "loss"):
            np.testing.assert_allclose(out[name], outputs["update_" + name][
                k], **FORWARD)
        # Exact without op determinism; the test suite turns it on, which
        # moves the reward's last bits (its reductions run in another order).
        np.testing.assert_allclose(out["baseline"], outputs[
            "update_baseline"][k], rtol=1e-6, atol=0)
        np.testing.assert_allclose(out["grad_norm"], outputs[
            "update_grad_norm"][k], rtol=1e-4)
        assert bool(reinforce.accepted.numpy()) == \
            bool(outputs["update_grad_accepted"][k])
        assert bool(reinforce.applied.numpy()) == \
            bool(outputs["update_update_applied"][k])
    # The 11th call's gradient was stale: updates after calls 10, 21, 31.
    assert list(np.flatnonzero(outputs["update_update_applied"])) == [9, 20,
                                                                       30]
    reader = tf.train.load_checkpoint(str(case / "ckpt/model.ckpt-3"))
    for v in controller.trainable_variables:
        np.testing.assert_allclose(v, reader.get_tensor(v.path), rtol=0,
                                   atol=1e-7, err_msg=v.path)
    assert int(reinforce.train_step.numpy()) == 3
    np.testing.assert_allclose(reinforce.baseline.numpy(),
                               reader.get_tensor("Variable"), rtol=1e-6)


def test_the_trained_controller_scores_its_20_samples_as_recorded():
    case, _, outputs = load("lm_controller")
    controller = EnasLmController(EnasLmControllerConfig(seed=1))
    # The recorded checkpoint after the updates holds the controller only.
    import_enas_lm_checkpoint(case / "ckpt/model.ckpt-3",
                              controller=controller)
    for s, arc in enumerate(outputs["sample_arc"]):
        out = controller.log_prob(arc)
        np.testing.assert_allclose(out["nll"], outputs[
            "sample_log_prob_vec"][s], **FORWARD)
        np.testing.assert_allclose(-out["log_prob"], outputs[
            "sample_log_prob"][s], **FORWARD)
        np.testing.assert_allclose(out["entropy"], outputs[
            "sample_entropy"][s], **FORWARD)
        np.testing.assert_allclose(out["ppl"], outputs["sample_ppl"][s],
                                   **FORWARD)


def test_sampled_arcs_are_valid_and_score_as_they_were_drawn():
    controller = EnasLmController(EnasLmControllerConfig(num_layers=4,
                                                         seed=3))
    for _ in range(5):
        out = controller.sample()
        arc = out["arc"].numpy()
        assert arc.shape == (8,)
        for k in range(4):
            assert 0 <= arc[2 * k] <= k and 0 <= arc[2 * k + 1] < 4
        again = controller.log_prob(arc)
        np.testing.assert_allclose(again["log_prob"], out["log_prob"],
                                   rtol=1e-6)
