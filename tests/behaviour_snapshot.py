"""Proof that a refactor changed no behaviour: record, then compare.

    python tests/behaviour_snapshot.py record OUT [--repo DIR] [--only NAME]
    python tests/behaviour_snapshot.py compare BEFORE AFTER

`record` runs every CPU flagfile (macro, micro, PTB and enas_lm; search
and final) of the checkout at DIR (default: this one) at a tiny size with
`--deterministic`, one process each, and keeps in OUT/NAME/ the run's
stdout (wall-clock `mins=` values and the run folder's path masked),
`arcs.jsonl` and `best_arc.txt` when the run writes them, and every tensor
of its last checkpoint (`tensors.npz`). `compare` says, run by run, whether
two recordings are identical: stdout byte for byte, the same variable paths,
shapes and values. Record before a change (from a worktree of the old
commit: `git worktree add /tmp/old HEAD`) and after it, then compare.
"""

import argparse
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"

CIFAR_TINY = ["--child_out_filters=8", "--num_epochs=1", "--log_every=2",
              "--controller_train_steps=2"]
MICRO_TINY = CIFAR_TINY + ["--child_num_cells=2", "--child_num_layers=1"]
PTB_TINY = ["--child_lstm_hidden_size=16", "--num_epochs=1",
            "--log_every=5", "--controller_train_steps=2"]
ENAS_LM_TINY = ["--child_hidden_size=16", "--child_num_train_epochs=2",
                "--log_every=20"]
PTB_DATA = "--data_path={}".format(SHARED / "ptb")
CIFAR_DATA = "--data_path={}".format(SHARED / "cifar10-partial")

# name -> (module, flagfile, overrides)
RUNS = {
    "macro_search": ("src.cifar10.main", "cifar10_macro_search_cpu",
                     CIFAR_TINY + [CIFAR_DATA, "--child_num_layers=3"]),
    "macro_final": ("src.cifar10.main", "cifar10_macro_final_cpu",
                    CIFAR_TINY + [CIFAR_DATA]),
    "micro_search": ("src.cifar10.main", "cifar10_micro_search_cpu",
                     MICRO_TINY + [CIFAR_DATA]),
    "micro_final": ("src.cifar10.main", "cifar10_micro_final_cpu",
                    CIFAR_TINY + [CIFAR_DATA, "--child_num_layers=1",
                                  "--child_num_cells=2",
                                  "--child_fixed_arc=0 2 0 0 1 4 0 1 "
                                  "0 4 1 1 1 0 0 1"]),
    "ptb_search": ("src.ptb.main", "ptb_search_cpu",
                   PTB_TINY + [PTB_DATA, "--child_rhn_depth=4"]),
    "ptb_final": ("src.ptb.main", "ptb_final_cpu",
                  PTB_TINY + [PTB_DATA]),
    "enas_lm_fixed": ("src.enas_lm.fixed", "enas_lm_fixed_cpu",
                      ENAS_LM_TINY + [PTB_DATA]),
    "enas_lm_search": ("src.enas_lm.search", "enas_lm_search_cpu",
                       ENAS_LM_TINY + [PTB_DATA,
                                       "--controller_num_train_steps=2"]),
}


def mask(text, run_dir):
    """The stdout with the run folder's path and wall-clock times masked."""
    text = text.replace(str(run_dir), "RUN_DIR")
    return re.sub(r"mins=\s*[0-9.]+", "mins=*", text)


def record(out, repo, only=None):
    out = pathlib.Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    for name, (module, flagfile, overrides) in RUNS.items():
        if only and name not in only:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = pathlib.Path(tmp) / "run"
            cmd = [sys.executable, "-m", module,
                   "--flagfile=flags/{}.flags".format(flagfile),
                   *overrides, "--deterministic",
                   "--output_dir={}".format(run_dir)]
            proc = subprocess.run(cmd, cwd=repo, env=env, text=True,
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
            dest = out / name
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir()
            (dest / "stdout").write_text(mask(proc.stdout, run_dir))
            (dest / "status").write_text("{}\n".format(proc.returncode))
            if proc.returncode != 0:
                (dest / "stderr").write_text(proc.stderr)
            for extra in ("arcs.jsonl", "best_arc.txt"):
                if (run_dir / extra).exists():
                    shutil.copy(run_dir / extra, dest / extra)
            np.savez(dest / "tensors.npz", **checkpoint_tensors(run_dir))
            print("{}: exit {}".format(name, proc.returncode), flush=True)


def checkpoint_tensors(run_dir):
    import tensorflow as tf
    path = tf.train.latest_checkpoint(str(run_dir))
    if path is None:
        return {}
    reader = tf.train.load_checkpoint(path)
    return {name: reader.get_tensor(name)
            for name in reader.get_variable_to_shape_map()}


def compare(before, after):
    before, after = pathlib.Path(before), pathlib.Path(after)
    same = True
    for name in RUNS:
        a, b = before / name, after / name
        if not a.is_dir() or not b.is_dir():
            print("{}: missing in one recording".format(name))
            same = False
            continue
        problems = []
        for f in ("status", "stdout", "arcs.jsonl", "best_arc.txt"):
            fa, fb = a / f, b / f
            if fa.exists() != fb.exists():
                problems.append("{} in one only".format(f))
            elif fa.exists() and fa.read_bytes() != fb.read_bytes():
                problems.append("{} differs".format(f))
        ta, tb = np.load(a / "tensors.npz"), np.load(b / "tensors.npz")
        if set(ta.files) != set(tb.files):
            problems.append("variable paths differ: {} only before, {} only "
                            "after".format(sorted(set(ta.files) -
                                                  set(tb.files))[:5],
                                           sorted(set(tb.files) -
                                                  set(ta.files))[:5]))
        else:
            for k in ta.files:
                if ta[k].shape != tb[k].shape or not np.array_equal(
                        ta[k], tb[k]):
                    problems.append("tensor {} differs".format(k))
        if ta.files == []:
            problems.append("no checkpoint")
        print("{}: {} ({} tensors)".format(
            name, "; ".join(problems[:6]) or "identical", len(ta.files)))
        same = same and not problems
    return 0 if same else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("record")
    r.add_argument("out")
    r.add_argument("--repo", default=str(REPO))
    r.add_argument("--only", nargs="*")
    c = sub.add_parser("compare")
    c.add_argument("before")
    c.add_argument("after")
    args = parser.parse_args()
    if args.command == "record":
        record(args.out, args.repo, args.only)
        return 0
    return compare(args.before, args.after)


if __name__ == "__main__":
    sys.exit(main())
