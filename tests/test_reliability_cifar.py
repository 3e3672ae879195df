"""CIFAR-10 runs lose nothing on a crash and repeat themselves from a seed:
a tiny macro search killed (SIGKILL) in a child epoch, in the controller
phase and in the architecture printout, then run again, ends exactly as the
uninterrupted run; a fixed-arc run stopped by SIGTERM mid-epoch saves,
exits 143 and resumes to the straight run's weights; tiny macro and micro
searches run twice with the same --seed and --deterministic print and
record the same architectures, losses and accuracies.

The entry point runs in subprocesses. The uninterrupted runs go in the
background, two at a time and at a lower priority (`straight_runs`), while
the killed and stopped runs go in the foreground: start-up, mostly tracing,
is most of a run's time here, and with deterministic ops running side by
side changes none of the numbers.
"""

import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

from tests.cifar_fixtures import write_fake_cifar
from tests.reliability_helpers import (REPO_ROOT, checkpoint_tensors,
                                       main_env, numbers, run_until)

MAIN = "src.cifar10.main"

# 100 training images, 20 held out: 5 steps of 16 per epoch.
SEARCH = ["--num_valids=20", "--batch_size=16", "--log_every=1",
          "--controller_training", "--controller_train_every=1",
          "--controller_train_steps=2", "--controller_num_aggregate=2",
          "--controller_sync_replicas", "--controller_entropy_weight=1e-4",
          "--child_out_filters=4", "--child_lr_cosine", "--child_lr_max=0.05",
          "--child_lr_min=0.0005", "--child_lr_T_0=1", "--child_lr_T_mul=2",
          "--deterministic", "--nodownload"]
MACRO = SEARCH + ["--search_for=macro", "--child_num_layers=3",
                  "--child_num_branches=4",
                  "--controller_search_whole_channels",
                  "--controller_tanh_constant=1.5",
                  "--controller_skip_target=0.4",
                  "--controller_skip_weight=0.8", "--seed=3",
                  "--num_epochs=3"]
MICRO = SEARCH + ["--search_for=micro", "--child_num_layers=0",
                  "--child_num_cells=2", "--controller_tanh_constant=1.1",
                  "--controller_op_tanh_reduce=2.5", "--seed=5",
                  "--num_epochs=2"]
# Fixed arc, no validation split: 25 steps of 4 images per epoch.
FIXED_STEPS_PER_EPOCH = 25
FIXED = ["--search_for=macro", "--child_fixed_arc=0 5 1 4 0 1",
         "--child_num_layers=3", "--child_out_filters=4",
         "--controller_search_whole_channels", "--nocontroller_training",
         "--batch_size=4", "--child_cutout_size=8", "--log_every=1",
         "--child_lr_cosine", "--child_lr_max=0.05", "--child_lr_min=0.001",
         "--child_lr_T_0=1", "--child_lr_T_mul=2", "--num_epochs=2",
         "--seed=7", "--deterministic", "--nodownload"]

# Where the macro search is killed (trigger line, and the checkpoint that
# attempt resumed from): the first attempt in epoch 1's child steps (epoch
# 1's checkpoint written), the second in epoch 2's controller phase, the
# third in epoch 2's architecture printout. After each trigger line that
# attempt still has work to do before its next checkpoint (the rest of
# epoch 1, or tracing the controller step, the scoring and the evaluation),
# so the kill lands before it.
KILL_POINTS = [("ch_step=6 ", None),
               ("Epoch 2: Training controller", "(epoch 1, step 5)"),
               ("Here are 10 architectures", "(epoch 1, step 5)")]


def run_main(args, nice=False):
    command = [sys.executable, "-m", MAIN, *args]
    if nice:
        command = ["nice", "-n", "10"] + command
    return subprocess.run(command, capture_output=True, text=True,
                          cwd=REPO_ROOT, env=main_env(), timeout=900)


def comparable(log):
    """The log's lines without wall-clock parts and the lines naming the
    run's own folder."""
    return [line for line in numbers(log)
            if "output_dir" not in line and "Logging to" not in line
            and "Path " not in line]


def after_start(log):
    """The lines a run printed once it started training."""
    lines = numbers(log)
    return lines[lines.index("Starting session") + 1:]


def records(output_dir):
    with open(os.path.join(output_dir, "arcs.jsonl")) as f:
        return [json.loads(line) for line in f]


def read(output_dir, name):
    with open(os.path.join(output_dir, name)) as f:
        return f.read()


def assert_same_tensors(dir_a, dir_b, which=lambda name: True):
    a, b = checkpoint_tensors(dir_a), checkpoint_tensors(dir_b)
    assert sorted(a) == sorted(b)
    names = [name for name in a if which(name)]
    assert names
    for name in names:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def is_controller(name):
    return name.startswith("controller")


def finished(run):
    """The stdout of a background run, which must have succeeded."""
    result = run.result()
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def cifar_data(tmp_path_factory):
    """5 x 20 training and 20 test images."""
    return write_fake_cifar(str(tmp_path_factory.mktemp("cifar")),
                            num_per_batch=20, num_test=20)


@pytest.fixture(scope="module")
def straight_runs(cifar_data, tmp_path_factory):
    """Uninterrupted runs in the background: two macro searches and two
    micro searches (each pair with the same seed) and a fixed-arc run.
    name -> (future of the CompletedProcess, output_dir)."""
    root = tmp_path_factory.mktemp("straight")
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    runs = {}
    # Roughly in the order the tests need them.
    for name, flags in (("macro_a", MACRO), ("micro_a", MICRO),
                        ("micro_b", MICRO), ("fixed", FIXED),
                        ("macro_b", MACRO)):
        out_dir = str(root / name)
        runs[name] = (pool.submit(run_main, ["--data_path=" + cifar_data,
                                             "--output_dir=" + out_dir]
                                  + flags, nice=True), out_dir)
    yield runs
    pool.shutdown(wait=True, cancel_futures=True)


def test_macro_search_killed_at_three_points_ends_as_the_uninterrupted_run(
        cifar_data, straight_runs, tmp_path):
    killed = str(tmp_path / "killed")
    args = ["--data_path=" + cifar_data, "--output_dir=" + killed] + MACRO
    for trigger, resumed_from in KILL_POINTS:
        status, log = run_until(MAIN, args, trigger, signal.SIGKILL)
        assert status == -signal.SIGKILL, log[-2000:]
        if resumed_from is None:
            assert "Resuming from" not in log
        else:
            assert "Resuming from" in log and resumed_from in log, \
                log[-2000:]
    last = run_main(args)
    assert last.returncode == 0, last.stderr[-3000:]
    assert "(epoch 1, step 5)" in last.stdout

    run, straight = straight_runs["macro_a"]
    straight_log = finished(run)
    # Child, controller, baseline, both optimisers, step counters and the
    # random generators' states.
    assert_same_tensors(straight, killed)
    # Every line the last attempt printed (epochs 2 and 3: child steps,
    # controller, architectures, evaluations) is the uninterrupted run's.
    tail = after_start(last.stdout)
    assert "Epoch 2: Training controller" in tail
    assert "Epoch 3: Training controller" in tail
    assert numbers(straight_log)[-len(tail):] == tail
    # arcs.jsonl: epoch 1, the architectures the killed printout got to
    # (epoch 2's first ones), then epochs 2 and 3 in full.
    ours, theirs = records(killed), records(straight)
    assert len(theirs) == 30
    assert ours[:10] == theirs[:10] and ours[-20:] == theirs[-20:]
    interrupted = ours[10:-20]
    assert interrupted == theirs[10:10 + len(interrupted)]
    assert read(killed, "best_arc.txt") == read(straight, "best_arc.txt")
    # The stdout copy keeps every attempt's lines (appended).
    kept = read(killed, "stdout")
    assert kept.count("Starting session") == 4
    assert kept.count("Resuming from") == 3
    for trigger, _ in KILL_POINTS:
        assert trigger in kept


def test_fixed_arc_sigterm_mid_epoch_saves_and_resumes_to_the_straight_run(
        cifar_data, straight_runs, tmp_path):
    out_dir = str(tmp_path / "stopped")
    args = ["--data_path=" + cifar_data, "--output_dir=" + out_dir] + FIXED
    # Step 27 is the second of epoch 1, 23 steps before its end.
    status, log = run_until(MAIN, args, "ch_step=27 ", signal.SIGTERM)
    assert status == 128 + signal.SIGTERM, log[-2000:]
    saved = re.search(r"SIGTERM: saved (\S+); run again with the same "
                      r"--output_dir to resume", log)
    assert saved, log[-2000:]

    resumed = run_main(args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    at = re.search(r"Resuming from (\S+) \(epoch (\d+), step (\d+)\)",
                   resumed.stdout)
    assert at and at.group(1) == saved.group(1), resumed.stdout[-2000:]
    step = int(at.group(3))
    assert int(at.group(2)) == 1
    assert FIXED_STEPS_PER_EPOCH < step < 2 * FIXED_STEPS_PER_EPOCH  # mid

    run, straight = straight_runs["fixed"]
    straight_log = finished(run)
    assert_same_tensors(straight, out_dir)
    # From the step after the stop on, the same lines as the straight run.
    tail = after_start(resumed.stdout)
    assert "ch_step={} ".format(step + 1) in tail[0]
    assert numbers(straight_log)[-len(tail):] == tail
    assert read(out_dir, "stdout").count("Starting session") == 2


def test_macro_search_with_the_same_seed_prints_and_records_the_same(
        straight_runs):
    (run_a, a), (run_b, b) = straight_runs["macro_a"], straight_runs["macro_b"]
    log_a, log_b = finished(run_a), finished(run_b)
    # Child losses, controller lines, the 10 architectures with their
    # accuracies, the evaluations: every printed digit.
    assert comparable(log_a) == comparable(log_b)
    assert log_a.count("ctrl_step=") == 3 * 4
    assert log_a.count("val_acc=") == 3 * 10
    assert "valid_accuracy: " in log_a and "test_accuracy: " in log_a
    assert len(records(a)) == 30 and records(a) == records(b)
    assert read(a, "best_arc.txt") == read(b, "best_arc.txt")
    assert_same_tensors(a, b)


def test_micro_search_with_the_same_seed_prints_and_records_the_same(
        straight_runs):
    (run_a, a), (run_b, b) = straight_runs["micro_a"], straight_runs["micro_b"]
    log_a, log_b = finished(run_a), finished(run_b)
    assert comparable(log_a) == comparable(log_b)
    assert log_a.count("ctrl_step=") == 2 * 4
    assert log_a.count("val_acc=") == 2 * 10
    assert len(records(a)) == 20 and records(a) == records(b)
    assert_same_tensors(a, b, which=lambda name: not is_controller(name))


def test_micro_search_with_the_same_seed_trains_the_same_controller(
        straight_runs):
    (run_a, a), (run_b, b) = straight_runs["micro_a"], straight_runs["micro_b"]
    finished(run_a), finished(run_b)
    assert_same_tensors(a, b, which=is_controller)
