"""The fixed macro child against outputs recorded from the reference itself
(../shared/reference/goldens/macro_fixed; skipped when absent)."""

import json

import numpy as np
import pytest
import tensorflow as tf

from src import schedules
from src.macro import arcs
from src.cifar10.child_trainer import ChildTrainer
from src.macro.child import FixedMacroChild, MacroConfig
from src.reference_checkpoint import load_reference_weights, reference_name
from src.train_ops import TrainConfig
from tests.conftest import golden_case


def build(case):
    cfg = json.loads((case / "config.json").read_text())["child_attributes"]
    arc = arcs.MacroArc.parse(cfg["fixed_arc"], cfg["num_layers"],
                              cfg["num_branches"], True)
    child = FixedMacroChild(MacroConfig(
        num_layers=cfg["num_layers"], out_filters=cfg["out_filters"],
        num_branches=cfg["num_branches"], fixed_arc=arc,
        keep_prob=cfg["keep_prob"]))
    lr = schedules.LrConfig(
        lr_cosine=cfg["lr_cosine"], lr_max=cfg["lr_max"],
        lr_min=cfg["lr_min"], lr_T_0=cfg["lr_T_0"], lr_T_mul=cfg["lr_T_mul"],
        num_train_batches=cfg["num_train_batches"])
    trainer = ChildTrainer(child, TrainConfig(
        l2_reg=cfg["l2_reg"], clip_mode=cfg["clip_mode"],
        grad_bound=cfg["grad_bound"], optim_algo=cfg["optim_algo"], lr=lr))
    return child, trainer


def test_every_variable_has_a_reference_name_in_the_checkpoint():
    case = golden_case("macro_fixed")
    child, _ = build(case)
    names = {line.split("\t")[0] for line in
             (case / "vars.txt").read_text().splitlines()[1:]}
    ours = {reference_name(v.path) for v in child.weights}
    assert ours <= names
    # What is left are the reference's step counters and cosine state.
    assert names - ours == {"global_step", "T_i", "last_reset"}


def test_test_logits_equal_the_reference():
    case = golden_case("macro_fixed")
    child, _ = build(case)
    load_reference_weights(child.weights, str(case / "ckpt" / "model.ckpt-3"))
    inputs, outputs = np.load(case / "inputs.npz"), np.load(case / "outputs.npz")
    logits = child(tf.constant(inputs["test_x"]),
                   training=False).logits.numpy()
    np.testing.assert_allclose(logits, outputs["test_logits"], atol=1e-4)


def test_first_training_step_reports_the_reference_loss_lr_and_grad_norm():
    case = golden_case("macro_fixed")
    child, trainer = build(case)
    load_reference_weights(child.weights,
                           str(case / "ckpt_init" / "model.ckpt-0"))
    inputs, outputs = np.load(case / "inputs.npz"), np.load(case / "outputs.npz")
    l2_sum = sum(float(tf.reduce_sum(tf.square(v)))
                 for v in child.trainable_weights)
    np.testing.assert_allclose(
        l2_sum, outputs["train_step_l2_sum_before_step"][0], rtol=1e-5)
    out = trainer.train_step(tf.constant(inputs["train_step_x_train"][0]),
                             tf.constant(inputs["train_step_y_train"][0]))
    np.testing.assert_allclose(float(out["loss"]),
                               outputs["train_step_loss"][0], rtol=1e-5)
    np.testing.assert_allclose(float(out["lr"]), outputs["train_step_lr"][0],
                               rtol=1e-6)
    np.testing.assert_allclose(float(out["grad_norm"]),
                               outputs["train_step_grad_norm"][0], rtol=1e-3)
    assert int(out["train_acc"]) == int(outputs["train_step_train_acc"][0])
