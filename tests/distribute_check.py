"""Runs in a subprocess of tests/test_distribute.py (TensorFlow's CPU must be
split into logical devices before anything else runs): trains tiny children
on one device and under a strategy from the same weights and batches, and
prints one JSON object of what it measured.

python -m tests.distribute_check FOLDER CASE..., cases among macro_fixed,
micro_fixed, macro_search, checkpoint, multi_worker (FOLDER: for the
checkpoint case's files).
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from src import distribute  # noqa: E402

distribute.split_cpu(2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from src import schedules  # noqa: E402
from src.checkpoints import variables_by_path  # noqa: E402
from src.macro import arcs as macro_arcs  # noqa: E402
from src.micro import arcs as micro_arcs  # noqa: E402
from src.cifar10.child_trainer import ChildTrainer  # noqa: E402
from src.macro.child import MacroConfig  # noqa: E402
from src.macro.space import SPACE as MACRO  # noqa: E402
from src.micro.child import FixedMicroChild, MicroConfig  # noqa: E402
from src.train_ops import TrainConfig  # noqa: E402

MICRO_ARC = ("0 2 0 0 1 4 0 1 "   # normal cell, 2 nodes
             "1 1 0 3 0 0 2 4")   # reduction cell
STEPS = 3


def macro_child(searching=False):
    arc = None if searching else macro_arcs.MacroArc.parse("0 3 0 0 1 0", 3, 4,
                                                     True)
    return MACRO.build_child(MacroConfig(
        num_layers=3, out_filters=8, num_branches=4, whole_channels=True,
        fixed_arc=arc, keep_prob=0.5, seed=1))


def micro_child():
    return FixedMicroChild(MicroConfig(
        num_layers=1, num_cells=2, out_filters=4, keep_prob=0.8,
        drop_path_keep_prob=0.6, use_aux_heads=True,
        fixed_arc=micro_arcs.MicroArc.parse(MICRO_ARC, 2), num_train_steps=10,
        seed=1))


def trainer(build, strategy, arc_fn=None):
    keras.utils.set_random_seed(1)
    child = build()
    cfg = TrainConfig(l2_reg=2e-4, clip_mode="norm", grad_bound=5.0,
                      lr=schedules.LrConfig(lr_init=0.05))
    return child, ChildTrainer(child, cfg, strategy=strategy, arc_fn=arc_fn,
                               train_aux_head=True)


def batch(step, n=16):
    images = tf.random.stateless_normal([n, 32, 32, 3], [step, 7])
    labels = tf.random.stateless_uniform([n], [step, 8], 0, 10, tf.int32)
    return images, labels


def compare(build, strategy, keep_as=None):
    """Steps of the same child on one device and under `strategy`, the
    weights copied before the first; returns what to check."""
    child1, t1 = trainer(build, None)
    with strategy.scope():
        child2, t2 = trainer(build, strategy)
    for a, b in zip(child1.weights, child2.weights):
        b.assign(a)
    out = {"replicas": strategy.num_replicas_in_sync, "steps": []}
    for step in range(STEPS):
        # The last batch is odd-sized: replicas get 8 and 7 rows.
        images, labels = batch(step, 16 if step < STEPS - 1 else 15)
        o1, o2 = t1.train_step(images, labels), t2.train_step(images, labels)
        out["steps"].append({k: [float(o1[k]), float(o2[k])]
                             for k in ("loss", "grad_norm", "train_acc",
                                       "lr")})
    out["max_weight_diff"] = max(
        float(np.max(np.abs(a.numpy() - b.numpy())))
        for a, b in zip(child1.weights, child2.weights))
    images, _ = batch(99)
    out["eval_logits_diff"] = float(np.max(np.abs(
        t1.logits(images).numpy() - t2.logits(images).numpy())))
    out["global_steps"] = [int(t1.global_step.numpy()),
                           int(t2.global_step.numpy())]
    if keep_as:
        TRAINED[keep_as] = (child2, t2)
    return out


def macro_search(strategy):
    """A search child under `strategy`: arcs from a counter (the same arc on
    every replica), one trace for all of them, finite results."""
    arcs_seen = []
    counter = tf.Variable(0, dtype=tf.int64)
    rng = np.random.default_rng(0)
    table = tf.constant(np.array([
        [int(rng.integers(4)) if i in (0, 1, 3) else int(rng.integers(2))
         for i in range(6)] for _ in range(4)], np.int32))

    def arc_fn():
        counter.assign_add(1)
        return table[counter % 4]

    with strategy.scope():
        child, t = trainer(lambda: macro_child(searching=True), strategy,
                           arc_fn)
    for step in range(4):
        images, labels = batch(step)
        out = t.train_step(images, labels)
        arcs_seen.append(float(out["loss"]))
    return {"losses": arcs_seen,
            "traces": t.train_step.experimental_get_tracing_count(),
            "finite": all(np.all(np.isfinite(w.numpy()))
                          for w in child.weights)}


def checkpoint(strategy, folder):
    """A checkpoint written under `strategy` restores into a one-device
    child with the same values: the mirrored child the macro_fixed case
    trained (3 steps), or a fresh one trained 2 steps."""
    if "macro_fixed" in TRAINED:
        child2, t2 = TRAINED["macro_fixed"]
    else:
        with strategy.scope():
            child2, t2 = trainer(macro_child, strategy)
        for step in range(2):
            t2.train_step(*batch(step))
    path = tf.train.Checkpoint(
        child=variables_by_path(child2), optimizer=t2.optimizer).save(
            os.path.join(folder, "ckpt"))
    child1, t1 = trainer(macro_child, None)
    tf.train.Checkpoint(
        child=variables_by_path(child1), optimizer=t1.optimizer).restore(
            path).assert_consumed()
    diffs = sorted((float(np.max(np.abs(a.numpy() - b.numpy()))), a.path)
                   for a, b in zip(child1.weights, child2.weights))
    return {"max_diff": diffs[-1][0], "worst": diffs[-3:],
            "global_steps": [int(t1.global_step.numpy()),
                             int(t2.global_step.numpy())]}


TRAINED = {}  # case -> (mirrored child, trainer) that later cases reuse


def ptb_trainer(strategy, searching=False):
    from src.ptb.arcs import PtbArc
    from src.ptb.ptb_child import PtbChildConfig
    from src.ptb.space import SPACE as PTB
    from src.ptb.ptb_trainer import PtbTrainConfig, PtbTrainer
    keras.utils.set_random_seed(1)
    arc_fn = None
    fixed = PtbArc.parse("0 0 1 1 3", 3)
    if searching:
        fixed = None
        table = tf.constant([PtbArc.parse(t, 3).to_list()
                             for t in ("0 0 1 1 3", "3 0 2 0 0",
                                       "1 0 0 1 2")], tf.int32)
        counter = tf.Variable(0, dtype=tf.int32, trainable=False)

        def arc_fn():
            return table[(counter.assign_add(1) - 1) % 3]

    # Dropout everywhere (the masks are drawn per row of the global batch)
    # and the slowness regulariser; batch 4 (2 rows a replica).
    child = PTB.build_child(PtbChildConfig(
        vocab_size=17, hidden_size=8, rhn_depth=3, batch_size=4,
        bptt_steps=5, fixed_arc=fixed, e_keep=0.8, x_keep=0.7, h_keep=0.6,
        o_keep=0.75, seed=1))
    cfg = PtbTrainConfig(l2_reg=1e-4, grad_bound=1.0, rnn_slowness_reg=1e-3,
                         lr=schedules.LrConfig(lr_init=0.5))
    # (One device without XLA: XLA draws other dropout masks.)
    return child, PtbTrainer(child, cfg, arc_fn=arc_fn, strategy=strategy,
                             jit_compile=False)


def ptb_window(step):
    x = tf.random.stateless_uniform([4, 5], [step, 1], 0, 17, tf.int32)
    y = tf.random.stateless_uniform([4, 5], [step, 2], 0, 17, tf.int32)
    return x, y


def ptb_compare(strategy, searching=False):
    """PTB steps with the state carried, on one device and under
    `strategy`, from the same weights."""
    child1, t1 = ptb_trainer(None, searching)
    with strategy.scope():
        child2, t2 = ptb_trainer(strategy, searching)
    x, y = ptb_window(0)
    arc = tf.constant([0, 0, 1, 1, 3]) if searching else None
    child1(x, child1.zero_state(4), arc=arc)  # built: copy the weights
    for a, b in zip(child1.weights, child2.weights):
        b.assign(a)
    out = {"replicas": strategy.num_replicas_in_sync, "steps": []}
    for step in range(STEPS):
        x, y = ptb_window(step)
        o1, o2 = t1.train_step(x, y), t2.train_step(x, y)
        out["steps"].append({k: [float(o1[k]), float(o2[k])]
                             for k in ("loss", "grad_norm", "train_ppl",
                                       "lr")})
    out["max_weight_diff"] = max(
        float(np.max(np.abs(a.numpy() - b.numpy())))
        for a, b in zip(child1.weights, child2.weights))
    out["state_diff"] = max(
        float(np.max(np.abs(a.numpy() - b.numpy())))
        for a, b in zip(child1.train_states, child2.train_states))
    out["traces"] = t2.train_step.experimental_get_tracing_count()
    return out


def main(folder, *cases):
    """Prints `RESULT <case> <json>` for each case."""
    mirrored = distribute.make_strategy("mirrored")
    runs = {
        "macro_fixed": lambda: compare(macro_child, mirrored,
                                       keep_as="macro_fixed"),
        "micro_fixed": lambda: compare(micro_child, mirrored),
        "macro_search": lambda: macro_search(mirrored),
        "checkpoint": lambda: checkpoint(mirrored, folder),
        "ptb_fixed": lambda: ptb_compare(mirrored),
        "ptb_search": lambda: ptb_compare(mirrored, searching=True),
        "multi_worker": lambda: compare(
            macro_child, distribute.make_strategy("multi_worker_mirrored")),
    }
    for case in cases:
        print("RESULT {} {}".format(case, json.dumps(runs[case]())),
              flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
