"""The fixed PTB child against outputs recorded from the reference itself
(../shared/reference/goldens/ptb_fixed; skipped when absent): hidden 64,
bptt 35, batch 20, depth 12, the arc of ptb_final.sh, dropout off.

The recorded valid losses come from the checkpoint after the 3 training
steps (`ckpt/`), not from `ckpt_init/` (they differ by 3.6 there). Unlike
the CIFAR children, the PTB steps replay closely: our 3 steps from
`ckpt_init/` land on `ckpt/`'s weights within 1.2e-7 and report the
recorded losses and gradient norms to float32 precision.
"""

import json

import numpy as np
import pytest
import tensorflow as tf

from src import schedules
from src.ptb.arcs import PtbArc
from src.ptb.ptb_child import FixedPtbChild, PtbChildConfig, count_params
from src.ptb.ptb_trainer import PtbTrainConfig, PtbTrainer
from src.reference_checkpoint import load_reference_weights, reference_name
from tests.conftest import golden_case


@pytest.fixture(scope="module")
def case():
    return golden_case("ptb_fixed")


def build(case):
    cfg = json.loads((case / "config.json").read_text())["child_attributes"]
    arc = PtbArc.parse(cfg["fixed_arc"], cfg["rhn_depth"], cfg["num_funcs"])
    child = FixedPtbChild(PtbChildConfig(
        vocab_size=cfg["vocab_size"], hidden_size=cfg["lstm_hidden_size"],
        num_layers=cfg["lstm_num_layers"], rhn_depth=cfg["rhn_depth"],
        num_funcs=cfg["num_funcs"], fixed_arc=arc,
        batch_size=cfg["batch_size"], bptt_steps=cfg["bptt_steps"],
        e_keep=cfg["lstm_e_keep"], x_keep=cfg["lstm_x_keep"],
        h_keep=cfg["lstm_h_keep"], o_keep=cfg["lstm_o_keep"],
        l_skip=cfg["lstm_l_skip"]))
    # lr_dec_start / lr_dec_every are recorded already in steps.
    lr = schedules.LrConfig(
        lr_init=cfg["lr_init"], lr_dec_start=cfg["lr_dec_start"],
        lr_dec_every=cfg["lr_dec_every"], lr_dec_rate=cfg["lr_dec_rate"],
        lr_dec_min=cfg["lr_dec_min"], lr_warmup_val=cfg["lr_warmup_val"],
        lr_warmup_steps=cfg["lr_warmup_steps"])
    trainer = PtbTrainer(child, PtbTrainConfig(
        l2_reg=cfg["l2_reg"], clip_mode=cfg["clip_mode"],
        grad_bound=cfg["grad_bound"], optim_algo=cfg["optim_algo"], lr=lr,
        rnn_l2_reg=cfg["rnn_l2_reg"],
        rnn_slowness_reg=cfg["rnn_slowness_reg"],
        moving_average=cfg["optim_moving_average"]))
    return cfg, child, trainer


def load(child, case, which):
    path = {"init": "ckpt_init/model.ckpt-0", "final": "ckpt/model.ckpt-3"}
    load_reference_weights(child.weights, str(case / path[which]))


def data(case):
    return np.load(case / "inputs.npz"), np.load(case / "outputs.npz")


def test_variable_names_and_parameter_count(case):
    cfg, child, trainer = build(case)
    names = {line.split("\t")[0] for line in
             (case / "vars.txt").read_text().splitlines()[1:]}
    ours = {reference_name(v.path) for v in child.weights}
    assert names - ours == {"global_step"} and ours <= names
    assert count_params(child.trainable_weights) == cfg["num_vars"] == 746496
    order = json.loads((case / "config.json").read_text())[
        "optimizer_var_list_in_order"]
    assert [v.path + ":0" for v in trainer.variables] == order


def test_valid_losses_and_carried_state(case):
    _, child, trainer = build(case)
    inputs, outputs = data(case)
    x0, x1 = inputs["valid_x_batch0"], inputs["valid_x_batch1"]
    y0 = inputs["valid_y_batch0"].reshape(x0.shape)
    y1 = inputs["valid_y_batch1"].reshape(x1.shape)
    load(child, case, "final")
    nll0, _, state = child.token_nll(x0, y0, child.zero_state(20))
    nll1, _, state = child.token_nll(x1, y1, state)
    np.testing.assert_allclose(float(tf.reduce_sum(nll0)),
                               outputs["valid_loss_batch0_from_zero_state"],
                               rtol=1e-6)
    np.testing.assert_allclose(float(tf.reduce_sum(nll1)),
                               outputs["valid_loss_batch1_carried_state"],
                               rtol=1e-6)
    np.testing.assert_allclose(state,
                               outputs["start_h_after_two_valid_batches"],
                               atol=1e-6)
    # The same two windows through evaluate(): a stream whose 20 rows are
    # batch 0, batch 1 and the last label.
    rows = np.concatenate([x0, x1, y1[:, -1:]], axis=1)
    got = trainer.evaluate(rows.reshape(-1), 20, 35, window_losses=True)
    np.testing.assert_allclose(
        got["window_losses"],
        [outputs["valid_loss_batch0_from_zero_state"],
         outputs["valid_loss_batch1_carried_state"]], rtol=1e-6)
    # Recorded after the training steps: ckpt_init gives other losses.
    load(child, case, "init")
    nll0, _, _ = child.token_nll(x0, y0, child.zero_state(20))
    assert abs(float(tf.reduce_sum(nll0))
               - outputs["valid_loss_batch0_from_zero_state"]) > 1.0


def test_training_steps_from_ckpt_init(case):
    _, child, trainer = build(case)
    inputs, outputs = data(case)
    load(child, case, "init")
    for i in range(3):
        l2_sum = float(tf.add_n([tf.reduce_sum(tf.square(v))
                                 for v in trainer.variables]))
        got = trainer.train_step(
            tf.constant(inputs["train_step_x_train"][i]),
            tf.constant(inputs["train_step_y_train"][i].reshape(20, 35)))
        # Step 0 within the README's tolerances; steps 1-2 are
        # timing-dependent samples there, yet replay as closely here.
        rtol = 1e-5 if i == 0 else 1e-4
        np.testing.assert_allclose(
            l2_sum, outputs["train_step_l2_sum_before_step"][i], rtol=1e-6)
        np.testing.assert_allclose(float(got["loss"]),
                                   outputs["train_step_loss"][i], rtol=rtol)
        np.testing.assert_allclose(float(got["lr"]),
                                   outputs["train_step_lr"][i], rtol=1e-7)
        np.testing.assert_allclose(float(got["grad_norm"]),
                                   outputs["train_step_grad_norm"][i],
                                   rtol=1e-3)
        np.testing.assert_allclose(float(got["train_ppl"]),
                                   outputs["train_step_train_ppl"][i],
                                   rtol=rtol)
    # After the 3 updates: the reference's weights and carried state.
    reader = tf.train.load_checkpoint(str(case / "ckpt" / "model.ckpt-3"))
    for v in child.weights:
        np.testing.assert_allclose(v.numpy(), reader.get_tensor(v.path),
                                   atol=1e-5, err_msg=v.path)
    assert int(trainer.global_step) == int(reader.get_tensor("global_step"))
