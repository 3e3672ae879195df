"""Recomputes the micro children's race-free step-0 gradient norms.

A developer tool, not a test (pytest does not collect this folder). It
answers: on THIS machine, what is the global norm of the gradient of the
full training objective (cross-entropy + 0.4 x aux cross-entropy + l2_reg x
sum of squares of the optimiser's variables) at ckpt_init on the recorded
first training batch,
- as the reference computes it: its own `MicroChild._build_train` graph
  (../shared/reference/runner/enas_ref, tf.compat.v1), forward and backward
  only: `grad_norm` is fetched, `train_op` never runs, so no update can race
  the backward pass (the recorded `train_step_grad_norm` came from the
  session run that also applied the update, see the reference README);
- as our port computes it (tests/test_micro_child.py's
  test_golden_first_training_step);
for each intra-op thread count asked for. Each computation runs in its own
subprocess (tf.compat.v1 with v2 behaviour disabled and Keras 3 cannot share
one process, and thread counts must be set before the first op).

    .venv/bin/python tests/golden_tools/race_free_grad_norm.py \
        [--cases micro_fixed micro_search] [--threads 0 1 2] [--impl both]
        [--per-variable]

`--threads 0` is TensorFlow's default (one thread per core). With
`--per-variable` the per-variable gradients of both computations are
compared (max relative difference of each variable's gradient, worst ten
listed) for the first thread setting. Exits 0 without doing anything when
../shared is absent.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
SHARED = REPO_ROOT.parent / "shared"
GOLDENS = SHARED / "reference" / "goldens"
ENAS_REF = SHARED / "reference" / "runner" / "enas_ref"
CASES = ("micro_fixed", "micro_search")


def _set_threads(tf, intra):
    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)


# ------------------------------------------------------------- reference

def reference_worker(case, intra, dump):
    """The reference's own train graph; fetches loss, aux loss, accuracy and
    grad_norm (and the per-variable gradients when dumping)."""
    import numpy as np
    sys.path.insert(0, str(ENAS_REF))
    import tensorflow.compat.v1 as tf
    tf.disable_v2_behavior()
    from src.micro.child import MicroChild

    folder = GOLDENS / case
    config = json.loads((folder / "config.json").read_text())
    kwargs = dict(config["child_constructor_kwargs"])
    attrs = config["child_attributes"]
    inputs = np.load(folder / "inputs.npz")
    outputs = np.load(folder / "outputs.npz")
    tf.set_random_seed(config["graph_seed_tf_set_random_seed"])
    # Model.__init__ builds input queues from these arrays; they are never
    # run (x_train / y_train are replaced by placeholders below). Only their
    # count matters: num_train_batches enters num_train_steps (drop-path
    # schedule; keep_prob 1.0 here) and the learning rate.
    n = attrs["num_train_examples"]
    images = {"train": np.zeros([n, 32, 32, 3], np.float32), "valid": None,
              "test": np.zeros([1, 32, 32, 3], np.float32)}
    labels = {"train": np.zeros([n], np.int32), "valid": None,
              "test": np.zeros([1], np.int32)}
    child = MicroChild(images, labels, **kwargs)
    child.x_train = tf.placeholder(tf.float32, [32, 32, 32, 3])
    child.y_train = tf.placeholder(tf.int32, [32])
    feed = {child.x_train: inputs["train_step_x_train"][0],
            child.y_train: inputs["train_step_y_train"][0]}
    if kwargs["fixed_arc"] is None:
        child.normal_arc = tf.placeholder(tf.int32, [4 * child.num_cells])
        child.reduce_arc = tf.placeholder(tf.int32, [4 * child.num_cells])
        feed[child.normal_arc] = outputs["train_step_normal_arc"][0]
        feed[child.reduce_arc] = outputs["train_step_reduce_arc"][0]
    else:
        arc = np.array([int(a) for a in kwargs["fixed_arc"].split()])
        child.normal_arc = arc[:4 * child.num_cells]
        child.reduce_arc = arc[4 * child.num_cells:]
    child._build_train()  # loss, aux_loss, train_acc, grad_norm, train_op

    variables = [v for v in tf.trainable_variables()
                 if v.name.startswith(child.name)
                 and "aux_head" not in v.name]
    ckpt = str(folder / "ckpt_init" / "model.ckpt-0")
    stored = tf.train.NewCheckpointReader(ckpt).get_variable_to_shape_map()
    restore = {v.op.name: v for v in tf.global_variables()
               if v.op.name in stored}
    fetch = {"loss": child.loss, "aux_loss": child.aux_loss,
             "train_acc": child.train_acc, "grad_norm": child.grad_norm}
    if dump:
        objective = (child.loss + 0.4 * child.aux_loss + child.l2_reg
                     * tf.add_n([tf.reduce_sum(v ** 2) for v in variables]))
        grads = tf.gradients(objective, variables)
        fetch["grads"] = {v.op.name: g for v, g in zip(variables, grads)}
    session_config = tf.ConfigProto(intra_op_parallelism_threads=intra)
    with tf.Session(config=session_config) as sess:
        # Optimiser slots are not in the checkpoint (zero at ckpt_init).
        sess.run(tf.global_variables_initializer())
        tf.train.Saver(restore).restore(sess, ckpt)
        values = sess.run(fetch, feed)
        # The update was never run: the weights are still ckpt_init's.
        reader = tf.train.NewCheckpointReader(ckpt)
        for v, w in zip(variables, sess.run(variables)):
            assert np.array_equal(w, reader.get_tensor(v.op.name)), v.op.name
    if dump:
        np.savez(dump, **values.pop("grads"))
    return {k: float(v) for k, v in values.items()}


# ------------------------------------------------------------------ port

def port_worker(case, intra, dump):
    """tests/test_micro_child.py's golden fixture and first training step."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(REPO_ROOT))
    import numpy as np
    import tensorflow as tf
    _set_threads(tf, intra)
    tf.config.experimental.enable_op_determinism()  # as tests/conftest.py
    from src.micro import arcs
    from src.micro.child import MicroConfig
    from src.micro.space import SPACE
    from src.reference_checkpoint import (load_reference_weights,
                                          reference_name)
    from src.train_ops import l2_loss

    folder = GOLDENS / case
    cfg = json.loads((folder / "config.json").read_text())[
        "child_attributes"]
    fixed = None
    if cfg["fixed_arc"]:
        fixed = arcs.MicroArc.parse(cfg["fixed_arc"], cfg["num_cells"])
    m = SPACE.build_child(MicroConfig(
        num_layers=cfg["num_layers"], num_cells=cfg["num_cells"],
        out_filters=cfg["out_filters"], keep_prob=cfg["keep_prob"],
        drop_path_keep_prob=cfg["drop_path_keep_prob"],
        use_aux_heads=cfg["use_aux_heads"], fixed_arc=fixed,
        num_train_steps=cfg["num_train_steps"], seed=1))
    inputs = np.load(folder / "inputs.npz")
    outputs = np.load(folder / "outputs.npz")
    kw = {"step": tf.constant(0, tf.int64)}
    if fixed is None:
        kw = {"arc": tf.constant(np.concatenate(
            [outputs["train_step_normal_arc"][0],
             outputs["train_step_reduce_arc"][0]]))}
    m(tf.zeros([1, 32, 32, 3]), training=False,
      **({k: v for k, v in kw.items() if k == "arc"}))
    load_reference_weights(m.weights,
                           str(folder / "ckpt_init" / "model.ckpt-0"))
    variables = m.optimizer_variables()
    x = tf.constant(inputs["train_step_x_train"][0])
    y = tf.constant(inputs["train_step_y_train"][0])

    def xent(logits):
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=y, logits=logits))

    with tf.GradientTape() as tape:
        logits, aux_logits = m(x, training=True, **kw)
        loss, aux_loss = xent(logits), xent(aux_logits)
        total = loss + 0.4 * aux_loss + cfg["l2_reg"] * l2_loss(variables)
    grads = tape.gradient(total, variables)
    correct = int(tf.reduce_sum(tf.cast(tf.equal(
        tf.argmax(logits, 1, output_type=tf.int32), y), tf.int32)))
    if dump:
        np.savez(dump, **{reference_name(v.path): g.numpy()
                          for v, g in zip(variables, grads)})
    return {"loss": float(loss), "aux_loss": float(aux_loss),
            "train_acc": float(correct),
            "grad_norm": float(tf.linalg.global_norm(grads))}


# ---------------------------------------------------------------- driver

def run_worker(impl, case, intra, dump=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH="")
    cmd = [sys.executable, str(pathlib.Path(__file__).resolve()),
           "--worker", impl, "--cases", case, "--threads", str(intra)]
    if dump:
        cmd += ["--dump", dump]
    # The reference's `src` and ours share a name: each worker starts in a
    # neutral directory and puts only its own tree on sys.path.
    done = subprocess.run(cmd, env=env, cwd=tempfile.gettempdir(),
                          capture_output=True, text=True)
    if done.returncode:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise SystemExit("{} worker failed on {}".format(impl, case))
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare_per_variable(ref_npz, port_npz):
    import numpy as np
    ref, port = np.load(ref_npz), np.load(port_npz)
    assert sorted(ref.files) == sorted(port.files), "variable sets differ"
    rows = []
    for name in ref.files:
        a, b = ref[name], port[name]
        scale = max(float(np.abs(a).max()), 1e-30)
        rows.append((float(np.abs(a - b).max()) / scale,
                     float(np.linalg.norm(a - b)
                           / max(np.linalg.norm(a), 1e-30)), name))
    rows.sort(reverse=True)
    print("  per-variable gradients, {} variables: max |ref - port| / max "
          "|ref| and ||ref - port|| / ||ref||, worst ten:".format(len(rows)))
    for worst, rel, name in rows[:10]:
        print("    {:.2e}  {:.2e}  {}".format(worst, rel, name))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES),
                        choices=CASES)
    parser.add_argument("--threads", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--impl", choices=["reference", "port", "both"],
                        default="both")
    parser.add_argument("--per-variable", action="store_true")
    parser.add_argument("--worker", choices=["reference", "port"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--dump", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not (GOLDENS.is_dir() and ENAS_REF.is_dir()):
        print("skipped: ../shared/reference (goldens and runner) not found "
              "at {}".format(SHARED))
        return
    if args.worker:
        worker = reference_worker if args.worker == "reference" \
            else port_worker
        print(json.dumps(worker(args.cases[0], args.threads[0], args.dump)))
        return
    import numpy as np
    impls = ["reference", "port"] if args.impl == "both" else [args.impl]
    for case in args.cases:
        recorded = float(np.load(GOLDENS / case / "outputs.npz")[
            "train_step_grad_norm"][0])
        print("{}: recorded (racy) train_step_grad_norm[0] = {:.6f}"
              .format(case, recorded))
        with tempfile.TemporaryDirectory() as tmp:
            for i, intra in enumerate(args.threads):
                for impl in impls:
                    dump = None
                    if args.per_variable and i == 0:
                        dump = os.path.join(tmp, impl + ".npz")
                    r = run_worker(impl, case, intra, dump)
                    print("  {:9s} intra_op_threads={:<7s} grad_norm={:.6f} "
                          "loss={:.7f} aux_loss={:.7f} acc={:d}".format(
                              impl, str(intra or "default"), r["grad_norm"],
                              r["loss"], r["aux_loss"], int(r["train_acc"])))
            if args.per_variable and len(impls) == 2:
                compare_per_variable(os.path.join(tmp, "reference.npz"),
                                     os.path.join(tmp, "port.npz"))


if __name__ == "__main__":
    main()
