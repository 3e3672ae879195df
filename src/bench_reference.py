"""Times a reference's own training step, for `src.bench --against_reference`.

A standalone script, run as a file by `src.bench` in a subprocess whose
working directory and PYTHONPATH are a runnable copy of the reference:

    python /abs/path/src/bench_reference.py --entry=cifar10 --timed=child \
        --warmup=5 --steps=20 --data_sizes=2000,164,100 --json=OUT \
        -- <the configuration's flags, flagfile expanded>

It never imports this project's `src` package: it imports the reference's
modules (melodyguan/enas's `src.cifar10.main` / `src.ptb.main`, or
google-research enas_lm's `enas_lm.src.fixed` / `enas_lm.src.search`) and
builds the run with their own `get_ops`, from their own flags:

- the flags after `--` that the reference defines are parsed into its
  flags; the others (this port's, such as --jit_compile, and those the
  reference's scripts pass but never define) are dropped, except that for
  enas_lm a `--child_<name>` / `--controller_<name>` naming a hyperparameter
  its `_set_default_params` hard-codes sets that hyperparameter (its
  `set_hparam`, after the reference's function ran);
- the data are synthetic, the same values as `src.bench`'s (`--data_sizes`,
  `--vocab_size`, `--seed`): CIFAR images normalised as the reference's
  `read_data` does (its reader is bypassed), PTB word ids as numpy arrays;
- the session is the reference's `SingularMonitoredSession` with the hooks
  its train loop adds (the SyncReplicas hook where it syncs), without the
  checkpoint hook; it starts the reference's queue runners.

Timed, like `src.bench`: `build_s` from before the synthetic data to the
end of the first step (graph construction, session creation with
initialisation, the first `sess.run` of the step); then a wait until every
bounded input queue of the graph is full (`queue_fill_s`; the reference's
CIFAR queues are filled by 16 threads each, which compete with the step for
the cores until the queues are full); then `--warmup` untimed steps and
`--steps` timed ones: one `sess.run` of the run ops the reference's own
train loop runs for that step. Writes a JSON dict to `--json`.
"""

import os
import sys

# Run as a file, Python puts this file's folder (this project's src/) first
# on sys.path: its modules (errors.py, logs.py, search.py, ...) would shadow
# top-level modules of the same names for the reference and its libraries.
# Only the reference, found through PYTHONPATH, may be imported here.
_HERE = os.path.dirname(os.path.realpath(__file__))
sys.path[:] = [p for p in sys.path
               if os.path.realpath(p or os.curdir) != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

# Which reference each entry point of the port is compared with, and what
# the reference prints as its name.
REFERENCE_OF_ENTRY = {"cifar10": "melodyguan/enas", "ptb": "melodyguan/enas",
                      "enas_lm_fixed": "google-research enas_lm",
                      "enas_lm_search": "google-research enas_lm"}

# The reference's module whose import defines the flags and `get_ops`.
ENTRY_MODULE = {"cifar10": "src.cifar10.main", "ptb": "src.ptb.main",
                "enas_lm_fixed": "enas_lm.src.fixed",
                "enas_lm_search": "enas_lm.src.search"}

# The run ops of each timed step: the keys of the reference's `get_ops`
# dicts its own train loop runs, in its order.
RUN_OPS = {
    ("cifar10", "child"): ("child", ["loss", "lr", "grad_norm", "train_acc",
                                     "train_op"]),
    ("cifar10", "controller"): ("controller", [
        "loss", "entropy", "lr", "grad_norm", "valid_acc", "baseline",
        "skip_rate", "train_op"]),
    ("ptb", "child"): ("child", ["loss", "lr", "grad_norm", "train_ppl",
                                 "train_op"]),
    ("ptb", "controller"): ("controller", [
        "loss", "entropy", "lr", "grad_norm", "reward", "baseline",
        "train_op"]),
    ("enas_lm_fixed", "child"): (None, [
        "train_loss", "grad_norm", "learning_rate", "should_reset",
        "moving_avg_started", "train_op"]),
    ("enas_lm_search", "child"): (None, [
        "train_loss", "l2_reg_loss", "grad_norm", "learning_rate",
        "should_reset", "train_op"]),
    ("enas_lm_search", "controller"): (None, [
        "controller_sample_arc", "controller_entropy", "controller_reward",
        "controller_baseline", "controller_train_op"]),
}

# enas_lm's graph seed in fixed.py's train (search.py sets none).
ENAS_LM_FIXED_SEED = 2126

# The normalisation of src.bench.synthetic_cifar's CifarData.
CIFAR_MEAN, CIFAR_STD = 0.47, 0.25

_FLAG = re.compile(r"^--?(?P<name>[A-Za-z0-9_]+)(?:=(?P<value>.*))?$",
                   re.DOTALL)


class DriverError(Exception):
    """A problem with the reference or the arguments: one line."""


# ------------------------------------------------------------------ flags

def flag_name(arg):
    """(name, value): `--name=value` -> (name, value), `--name` -> (name,
    None); (None, None) for an argument that is not a flag."""
    m = _FLAG.match(arg)
    if not m:
        return None, None
    return m["name"], m["value"]


def filter_flags(args, defined, booleans):
    """(kept, rest): the arguments of `args` naming a flag in `defined` (a
    `--noname` counts when `name` is in `booleans`), in order, and the
    others, in order."""
    kept, rest = [], []
    for arg in args:
        name, value = flag_name(arg)
        known = name in defined or (
            value is None and name is not None and name.startswith("no")
            and name[2:] in booleans)
        (kept if known else rest).append(arg)
    return kept, rest


def hparam_candidates(args):
    """{hparam name: value} that flags `args` of the port would set in
    enas_lm's hard-coded hyperparameters: `--child_<name>` sets `<name>`,
    `--controller_<name>` sets `controller_<name>` (the names enas_lm's
    `_set_default_params` use); a boolean `--x` is True, `--nox` False.
    Values stay text (see `hparam_value`); the last one wins."""
    out = {}
    for arg in args:
        name, value = flag_name(arg)
        if name is None:
            continue
        if value is None:
            value = not name.startswith("no")
            if not value:
                name = name[2:]
        if name.startswith("child_"):
            out[name[len("child_"):]] = value
        elif name.startswith("controller_"):
            out[name] = value
    return out


def hparam_value(current, value):
    """`value` (text from a flag, or a bool) as the type of the hparam's
    `current` value."""
    if isinstance(current, bool) or isinstance(value, bool):
        if isinstance(value, bool):
            return value
        return value.lower() in ("1", "true", "t", "yes")
    if isinstance(current, int):
        return int(value)
    if isinstance(current, float):
        return float(value)
    return value


# ------------------------------------------------------------------- data

def synthetic_cifar(sizes, seed=0):
    """(images, labels) dicts as the reference's `read_data` returns them:
    float32 NHWC images (x / 255 - mean) / std and int32 labels (None for an
    empty split), from the same draws as `src.bench.synthetic_cifar`
    (uint8 images and labels drawn split by split, train, valid, test)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    images, labels = {}, {}
    for split, n in zip(("train", "valid", "test"), sizes):
        x = (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
             if n else None)
        y = rng.integers(0, 10, n).astype(np.int32) if n else None
        if x is not None:
            x = ((x.astype(np.float32) / np.float32(255.0)
                  - np.float32(CIFAR_MEAN)) / np.float32(CIFAR_STD))
        images[split], labels[split] = x, y
    return images, labels


def synthetic_ptb(sizes, vocab_size=10000, seed=0):
    """(train, valid, test) int32 word ids, the same as
    `src.bench.synthetic_ptb`'s splits."""
    import numpy as np
    rng = np.random.default_rng(seed)
    train, valid = (rng.integers(0, vocab_size, n).astype(np.int32)
                    for n in sizes[:2])
    test = np.random.default_rng(seed + 1).integers(
        0, vocab_size, sizes[2]).astype(np.int32)
    return train, valid, test


# ---------------------------------------------------------------- building

def import_reference(entry):
    """The reference's entry module, and the names and boolean names of the
    flags its import defined (those absl knew before are not its own)."""
    import importlib

    import tensorflow.compat.v1  # noqa: F401  (defines absl's own flags)
    from absl import flags
    before = set(flags.FLAGS)
    module = importlib.import_module(ENTRY_MODULE[entry])
    top = sys.modules[ENTRY_MODULE[entry].split(".")[0]]
    where = os.path.realpath(os.path.dirname(os.path.dirname(top.__file__)))
    if where != os.path.realpath(os.getcwd()):
        raise DriverError("imported {} from {}, not from the reference in "
                          "{}".format(ENTRY_MODULE[entry], where,
                                      os.getcwd()))
    defined = set(flags.FLAGS) - before
    booleans = {n for n in defined if flags.FLAGS[n].boolean}
    return module, defined, booleans


def wrap_default_params(module, overrides, applied):
    """Makes `module._set_default_params` (which enas_lm's models call by
    name) set, after the reference's own defaults, each hyperparameter of
    `overrides` it defines; records them in `applied`."""
    original = module._set_default_params

    def set_default_params(params):
        before = set(params.values())
        params = original(params)
        for name in sorted(set(params.values()) - before):
            if name in overrides:
                value = hparam_value(getattr(params, name), overrides[name])
                params.set_hparam(name, value)
                applied[name] = value
        return params

    module._set_default_params = set_default_params


def build_ops(entry, module, args, overrides, applied):
    """(ops dict of the reference's get_ops, hooks its train loop adds
    (no checkpoint hook), session config)."""
    import tensorflow.compat.v1 as tf
    from absl import flags
    FLAGS = flags.FLAGS
    sizes = [int(n) for n in args.data_sizes.split(",")]
    if entry == "cifar10":
        images, labels = synthetic_cifar(sizes, args.seed)
        ops = module.get_ops(images, labels)
        hooks = []
        if FLAGS.controller_training and FLAGS.controller_sync_replicas:
            hooks.append(
                ops["controller"]["optimizer"].make_session_run_hook(True))
        return ops, hooks, tf.ConfigProto(allow_soft_placement=True)
    train, valid, test = synthetic_ptb(sizes, args.vocab_size, args.seed)
    if entry == "ptb":
        ops = module.get_ops(train, valid, test)
        hooks = []
        if FLAGS.controller_training and FLAGS.controller_sync_replicas:
            hooks.append(
                ops["controller"]["optimizer"].make_session_run_hook(True))
        return ops, hooks, None
    from enas_lm.src import tf1_compat
    params = tf1_compat.HParams(data_path="", log_every=FLAGS.log_every,
                                output_dir="")
    if entry == "enas_lm_fixed":
        from enas_lm.src import fixed_lib
        wrap_default_params(fixed_lib, overrides, applied)
        tf.set_random_seed(ENAS_LM_FIXED_SEED)
        return module.get_ops(params, train, valid, test), [], None
    from enas_lm.src import child, controller
    wrap_default_params(controller, overrides, applied)
    wrap_default_params(child, overrides, applied)
    ops = module.get_ops(params, train, valid)
    return ops, [ops["controller_optimizer"].make_session_run_hook(True)], \
        None


def bounded_queues():
    """[(name, size tensor, capacity)] of the queue runners' queues that
    have a capacity (made before the session finalises the graph)."""
    import tensorflow.compat.v1 as tf
    out = []
    for qr in tf.get_collection(tf.GraphKeys.QUEUE_RUNNERS):
        capacity = qr.queue.queue_ref.op.get_attr("capacity")
        if capacity > 0:
            out.append((qr.queue.name, qr.queue.size(), capacity))
    return out


def wait_for_queues(sess, queues, timeout):
    """Waits until every queue of `queues` holds its capacity or `timeout`
    seconds passed; returns (seconds waited, all full, {name: size})."""
    start = time.perf_counter()
    while True:
        sizes = sess.run([q[1] for q in queues]) if queues else []
        full = all(s >= q[2] for s, q in zip(sizes, queues))
        waited = time.perf_counter() - start
        if full or waited >= timeout:
            return waited, full, {q[0]: int(s) for q, s in zip(queues, sizes)}
        time.sleep(0.2)


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ------------------------------------------------------------------ timing

def run(args, flags_args):
    """Builds the reference's run and times its step; returns the result
    dict."""
    entry, timed = args.entry, args.timed
    if (entry, timed) not in RUN_OPS:
        raise DriverError("nothing to time for --entry={} --timed={}".format(
            entry, timed))
    module, defined, booleans = import_reference(entry)
    kept, rest = filter_flags(flags_args, defined, booleans)
    from absl import flags
    flags.FLAGS(["bench_reference"] + kept)
    overrides = (hparam_candidates(rest) if entry.startswith("enas_lm")
                 else {})
    applied = {}

    import tensorflow.compat.v1 as tf
    t0 = time.perf_counter()
    graph = tf.Graph()
    with graph.as_default():
        ops, hooks, config = build_ops(entry, module, args, overrides,
                                       applied)
        group, names = RUN_OPS[entry, timed]
        source = ops[group] if group else ops
        run_ops = [source[n] for n in names]
        after = None
        if entry.startswith("enas_lm"):
            # Between steps, untimed, as the reference's loops do: a
            # controller call resets the carried state
            # (`controller.train`); a child step at the end of the data
            # resets the state and the window start (fixed.py, search.py).
            if timed == "controller":
                after = (lambda out: ops["reset_batch_states"])
            else:
                should_reset = names.index("should_reset")
                after = (lambda out: [ops["reset_batch_states"],
                                      ops["reset_start_idx"]]
                         if out[should_reset] else None)
        queues = bounded_queues()
        sess = tf.train.SingularMonitoredSession(hooks=hooks, config=config)

        def step():
            out = sess.run(run_ops)
            return out

        def between(out):
            extra = after(out) if after else None
            if extra is not None:
                sess.run(extra)

        between(step())
        build_s = time.perf_counter() - t0
        queue_fill_s, queues_full, queue_sizes = wait_for_queues(
            sess, queues, args.queue_timeout)
        if not queues_full:
            print("warning: the reference's input queues were not full "
                  "after {:.0f} s: {}".format(queue_fill_s, queue_sizes),
                  file=sys.stderr)
        for _ in range(args.warmup):
            between(step())
        times = []
        for _ in range(args.steps):
            t = time.perf_counter()
            out = step()
            times.append(time.perf_counter() - t)
            between(out)
    return {
        "reference": REFERENCE_OF_ENTRY[entry],
        "path": os.getcwd(),
        "description": "{}'s {} get_ops, {} step: sess.run([{}])".format(
            REFERENCE_OF_ENTRY[entry], ENTRY_MODULE[entry], timed,
            ", ".join(names)),
        "step_s_median": statistics.median(times),
        "step_s_min": min(times),
        "step_s_max": max(times),
        "step_times": times,
        "build_s": build_s,
        "queue_fill_s": queue_fill_s,
        "queues_full": queues_full,
        "queue_sizes": queue_sizes,
        "peak_rss_mb": peak_rss_mb(),
        "steps": args.steps,
        "warmup": args.warmup,
        "flags_kept": kept,
        "flags_dropped": [a for a in rest
                          if not _lands(a, applied)],
        "hparams_set": applied,
        "env": {k: v for k, v in os.environ.items()
                if k.startswith("ENAS_REF_")},
    }


def _lands(arg, applied):
    """Whether flag `arg` became one of the `applied` hyperparameters."""
    return bool(set(hparam_candidates([arg])) & set(applied))


def parse_args(argv):
    """(driver options, the configuration's flags after `--`)."""
    if "--" in argv:
        i = argv.index("--")
        own, rest = argv[:i], argv[i + 1:]
    else:
        own, rest = argv, []
    p = argparse.ArgumentParser(
        prog="bench_reference.py",
        description="Times a reference's own training step (see the "
        "module doc).")
    p.add_argument("--entry", required=True, choices=sorted(ENTRY_MODULE))
    p.add_argument("--timed", required=True, choices=["child", "controller"])
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--data_sizes", required=True,
                   help="train,valid,test: images (cifar10) or words")
    p.add_argument("--vocab_size", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--queue_timeout", type=float, default=600.0,
                   help="Seconds to wait for the input queues to fill.")
    p.add_argument("--json", required=True, help="Write the result here.")
    return p.parse_args(own), rest


def main(argv):
    args, flags_args = parse_args(argv)
    try:
        result = run(args, flags_args)
    except DriverError as e:
        print("error: {}".format(e), file=sys.stderr)
        return 2
    with open(args.json, "w") as f:
        f.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    status = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    # No session close: enas_lm's SyncReplicas chief thread stays blocked in
    # its accumulator and the session's close waits 120 s for it; the
    # queue-runner threads end with the process.
    os._exit(status)
