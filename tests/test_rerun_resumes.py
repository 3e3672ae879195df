"""Running a full flagfile's command again resumes the run, and only an
explicit --reset_output_dir throws it away.

Each full flagfile (`flags/cifar10_{macro,micro}_{final,search}.flags`,
`flags/ptb_{final,search}.flags`) runs as its README command, shrunk by
overrides after the flagfile (a tiny child, two epochs, one controller
update of 2 arcs (CIFAR: after epoch 2 only), the tiny data of tests/cifar_fixtures.py and
tests/ptb_fixtures.py, --deterministic; the micro children at
--child_num_layers=0 without the aux head, which needs a layer more), is
killed with SIGKILL early in epoch 2 (after epoch 1's checkpoint), and the
identical command is run again. Every flagfile: the second run says
"Resuming from ... (epoch 1, step N)", logs epoch 1 first, exits 0 and ends
with epoch 2's checkpoint. `cifar10_macro_final` and `ptb_final` also: the
killed run's folder, copied before the second run, run once more with
--reset_output_dir added prints the reference's "Remove and remake." line
and the line naming the removed checkpoint, starts at epoch 0, and so is
the uninterrupted run, which the resumed run must equal tensor for tensor.
(tests/test_reliability_cifar.py and tests/test_reliability.py check the
searches' exact resumption.)

The runs go in subprocesses, two flagfiles at a time (start-up, mostly
tracing, is most of a run's time here).
"""

import concurrent.futures
import os
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.cifar_fixtures import write_fake_cifar
from tests.ptb_fixtures import REPO_ROOT, main_env, write_tiny_ptb
from tests.reliability_helpers import checkpoint_tensors, run_until

CIFAR = "src.cifar10.main"
PTB = "src.ptb.main"

COMMON = ["--num_epochs=2", "--log_every=1", "--deterministic",
          "--nodownload"]
# 100 training images; a search holds 20 out for the reward, and trains
# its controller after epoch 2 only (so the killed run does not trace it).
CIFAR_SEARCH = ["--num_valids=20", "--batch_size=16",
                "--child_out_filters=4", "--controller_train_steps=1",
                "--controller_num_aggregate=2", "--controller_train_every=2"]
MICRO = ["--child_num_layers=0", "--child_num_cells=2",
         "--nochild_use_aux_heads"]
# The tiny corpus in windows of 4 x 5 words.
PTB_TINY = ["--batch_size=4", "--child_bptt_steps=5",
            "--child_lstm_hidden_size=8", "--child_rhn_depth=3"]
# name -> (entry point, overrides after the flagfile, steps per epoch),
# the slowest first.
FLAGFILES = {
    # One node per cell: the micro search child's tracing is most of its
    # time.
    "cifar10_micro_search": (CIFAR, CIFAR_SEARCH + MICRO
                             + ["--child_num_cells=1"], 5),
    "cifar10_macro_search": (CIFAR, CIFAR_SEARCH + [
        "--child_num_layers=3"], 5),
    "cifar10_macro_final": (CIFAR, [
        "--child_num_layers=3", "--child_fixed_arc=0 3 0 0 1 0",
        "--child_out_filters=4", "--batch_size=4"], 25),
    "cifar10_micro_final": (CIFAR, MICRO + [
        "--child_fixed_arc=0 2 0 0 1 4 0 1 0 4 1 1 1 0 0 1",
        "--child_out_filters=4", "--batch_size=4"], 25),
    "ptb_final": (PTB, PTB_TINY + ["--child_fixed_arc=0 0 1 1 2"], 27),
    "ptb_search": (PTB, PTB_TINY + ["--controller_train_steps=1",
                                    "--controller_num_aggregate=2"], 27),
}
# Also run afresh with --reset_output_dir and compared with the resumed run.
EXACT = ("cifar10_macro_final", "ptb_final")


def command(name, data, output_dir, *extra):
    """(entry point, arguments) of the flagfile's command at test size."""
    module, overrides, _ = FLAGFILES[name]
    return module, ["--flagfile=flags/{}.flags".format(name),
                    "--data_path=" + data[module],
                    "--output_dir=" + output_dir,
                    *overrides, *COMMON, *extra]


def run_main(module, args):
    return subprocess.run([sys.executable, "-m", module, *args],
                          capture_output=True, text=True, cwd=REPO_ROOT,
                          env=main_env(), timeout=600)


def train_lines(log):
    return [line for line in log.splitlines()
            if line.startswith("epoch=") and "ch_step=" in line]


def kill_and_run_again(name, data, root):
    """The flagfile's command killed at the first step of epoch 2 (epoch
    1's checkpoint written, the rest of epoch 2 and its evaluation still to
    come), then run again; for EXACT, a copy of the killed run's folder run
    with --reset_output_dir. Returns a dict of what happened."""
    _, _, steps = FLAGFILES[name]
    out = dict(output_dir=os.path.join(root, name, "run"))
    module, args = command(name, data, out["output_dir"])
    out["killed"] = run_until(module, args, "ch_step={} ".format(steps + 1),
                              signal.SIGKILL, timeout=600)
    if name in EXACT:
        out["reset_dir"] = os.path.join(root, name, "reset")
        shutil.copytree(out["output_dir"], out["reset_dir"])
    out["again"] = run_main(module, args)
    if name in EXACT:
        out["reset"] = run_main(*command(name, data, out["reset_dir"],
                                         "--reset_output_dir"))
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """entry point -> its --data_path. The PTB pickle is built here once,
    so that runs side by side never write it at the same time."""
    from src.ptb import data as ptb_data
    cifar = write_fake_cifar(str(tmp_path_factory.mktemp("cifar")),
                             num_per_batch=20, num_test=20)
    ptb = write_tiny_ptb(tmp_path_factory.mktemp("ptb"))
    ptb_data.read_data(ptb, log=lambda *a: None)
    return {CIFAR: cifar, PTB: ptb}


@pytest.fixture(scope="module")
def reruns(data, tmp_path_factory):
    """name -> future of `kill_and_run_again`, two flagfiles at a time."""
    root = str(tmp_path_factory.mktemp("reruns"))
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    yield {name: pool.submit(kill_and_run_again, name, data, root)
           for name in FLAGFILES}
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("name", list(FLAGFILES))
def test_the_same_command_again_resumes_the_killed_run(name, reruns):
    _, _, steps = FLAGFILES[name]
    run = reruns[name].result()
    status, log = run["killed"]
    assert status == -signal.SIGKILL, log[-2000:]
    assert "Resuming from" not in log

    again = run["again"]
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Remove and remake" not in again.stdout
    resumed = re.search(r"Resuming from (\S+) \(epoch (\d+), step (\d+)\)",
                        again.stdout)
    assert resumed, again.stdout[-2000:]
    assert resumed.group(1).endswith("model.ckpt-{}".format(steps))
    assert (resumed.group(2), resumed.group(3)) == ("1", str(steps))
    first = train_lines(again.stdout)[0]
    assert first.startswith("epoch=1 ") and \
        "ch_step={} ".format(steps + 1) in first, first
    assert tf.train.latest_checkpoint(run["output_dir"]).endswith(
        "model.ckpt-{}".format(2 * steps))
    # The stdout copy kept the killed run's lines.
    with open(os.path.join(run["output_dir"], "stdout")) as f:
        assert f.read().count("Starting session") == 2


@pytest.mark.parametrize("name", EXACT)
def test_reset_output_dir_names_the_removed_checkpoint_and_starts_afresh(
        name, reruns):
    _, _, steps = FLAGFILES[name]
    run = reruns[name].result()
    reset, reset_dir = run["reset"], run["reset_dir"]
    assert reset.returncode == 0, reset.stderr[-3000:]
    lines = reset.stdout.splitlines()
    at = lines.index("Path {} exists. Remove and remake.".format(reset_dir))
    assert lines[at + 1] == ("Removed the checkpoint model.ckpt-{0} (step {0})"
                             " of the earlier run.".format(steps))
    assert "Resuming from" not in reset.stdout
    assert train_lines(reset.stdout)[0].startswith("epoch=0 ")
    # The killed run's files went: the stdout copy holds this run alone.
    with open(os.path.join(reset_dir, "stdout")) as f:
        assert f.read().count("Starting session") == 1


@pytest.mark.parametrize("name", EXACT)
def test_the_resumed_run_ends_as_the_uninterrupted_run(name, reruns):
    run = reruns[name].result()
    assert run["again"].returncode == 0, run["again"].stderr[-3000:]
    assert run["reset"].returncode == 0, run["reset"].stderr[-3000:]
    ours = checkpoint_tensors(run["output_dir"])
    theirs = checkpoint_tensors(run["reset_dir"])
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
