"""Nothing lost on a crash, the same numbers from the same seed, NaN
handling: tiny PTB runs in subprocesses, deterministic ops on."""

import json
import os
import signal

import numpy as np
import pytest
import tensorflow as tf

from tests.ptb_fixtures import run_ptb_main, tiny_args, write_tiny_ptb
from tests.reliability_helpers import checkpoint_tensors, numbers, run_until

SEARCH = ["--controller_training", "--controller_train_every=1",
          "--controller_train_steps=3", "--controller_num_aggregate=2",
          "--controller_sync_replicas", "--controller_tanh_constant=2.5",
          "--controller_temperature=5.0", "--controller_entropy_weight=0.001",
          "--deterministic", "--log_every=1"]


@pytest.fixture(scope="module")
def tiny_ptb(tmp_path_factory):
    return write_tiny_ptb(tmp_path_factory.mktemp("ptb"))


def test_search_killed_at_several_points_resumes_to_the_uninterrupted_run(
        tiny_ptb, tmp_path):
    straight_dir = str(tmp_path / "straight")
    args = tiny_args(tiny_ptb, straight_dir) + SEARCH + ["--num_epochs=3"]
    straight = run_ptb_main(*args)
    assert straight.returncode == 0, straight.stderr[-3000:]

    out_dir = str(tmp_path / "killed")
    args = tiny_args(tiny_ptb, out_dir) + SEARCH + ["--num_epochs=3"]
    # Killed during a child epoch, during the controller phase, during the
    # architecture printout.
    for trigger in ("ch_step=25 ", "Epoch 2: Training controller",
                    "Here are 10 architectures"):
        status, log = run_until("src.ptb.main", args, trigger,
                                signal.SIGKILL)
        assert status == -signal.SIGKILL, log[-2000:]
    last = run_ptb_main(*args)
    assert last.returncode == 0, last.stderr[-3000:]
    assert "Resuming from" in last.stdout

    ours, theirs = checkpoint_tensors(out_dir), checkpoint_tensors(
        straight_dir)
    assert sorted(ours) == sorted(theirs)
    for name in theirs:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
    # The final epoch's architectures and the final evaluation agree.
    def records(d):
        return [json.loads(l) for l in open(os.path.join(d, "arcs.jsonl"))]
    assert records(out_dir)[-10:] == records(straight_dir)[-10:]
    tail = numbers(straight.stdout)[-12:]
    assert numbers(last.stdout)[-12:] == tail
    # The stdout copy keeps every attempt's lines (appended, not truncated).
    kept = open(os.path.join(out_dir, "stdout")).read()
    assert kept.count("Starting session") == 4


def test_sigterm_saves_mid_epoch_and_the_resumed_run_matches(tiny_ptb,
                                                            tmp_path):
    fixed = ["--child_fixed_arc=0 0 1 1 2", "--nocontroller_training",
             "--deterministic", "--num_epochs=2", "--log_every=1"]
    straight_dir = str(tmp_path / "straight")
    straight = run_ptb_main(*tiny_args(tiny_ptb, straight_dir), *fixed)
    assert straight.returncode == 0, straight.stderr[-3000:]

    out_dir = str(tmp_path / "stopped")
    args = tiny_args(tiny_ptb, out_dir) + fixed
    status, log = run_until("src.ptb.main", args, "ch_step=7 ",
                            signal.SIGTERM)
    assert status == 128 + signal.SIGTERM, log[-2000:]
    assert "SIGTERM: saved " in log and "run again" in log
    resumed = run_ptb_main(*args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "(epoch 0, step " in resumed.stdout  # a mid-epoch checkpoint
    ours, theirs = checkpoint_tensors(out_dir), checkpoint_tensors(
        straight_dir)
    for name in theirs:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
    assert numbers(resumed.stdout)[-4:] == numbers(straight.stdout)[-4:]


def test_the_same_seed_gives_the_same_numbers(tiny_ptb, tmp_path):
    logs = []
    for name in ("a", "b"):
        result = run_ptb_main(*tiny_args(tiny_ptb, str(tmp_path / name)),
                              *SEARCH, "--num_epochs=1")
        assert result.returncode == 0, result.stderr[-3000:]
        logs.append([l for l in numbers(result.stdout)
                     if "output_dir" not in l and "Logging to" not in l
                     and "Path " not in l])
    assert logs[0] == logs[1]


@pytest.mark.parametrize("policy", ["stop", "skip_arc"])
def test_a_nan_loss_stops_or_skips_as_the_policy_says(tiny_ptb, tmp_path,
                                                      policy):
    out_dir = str(tmp_path / policy)
    result = run_ptb_main(*tiny_args(tiny_ptb, out_dir),
                          "--child_fixed_arc=0 0 1 1 2",
                          "--nocontroller_training", "--num_epochs=1",
                          "--child_lr=1e30", "--child_grad_bound=1e30",
                          "--nan_policy=" + policy)
    if policy == "stop":
        assert result.returncode == 1
        assert "error: the child's loss is " in result.stdout
        assert "at step " in result.stdout
        assert "The last good checkpoint is none" in result.stdout
        assert not os.path.exists(os.path.join(out_dir, "checkpoint"))
    else:
        assert result.returncode == 0, result.stderr[-3000:]
        assert "nan_policy=skip_arc: the child's loss is " in result.stdout
        assert "that update was skipped" in result.stdout
        for value in checkpoint_tensors(out_dir).values():
            if np.issubdtype(np.asarray(value).dtype, np.floating):
                assert np.all(np.isfinite(value))


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path):
    import glob

    from src.checkpoints import RunCheckpoint
    from src.errors import UserError

    v = tf.Variable(1.0)
    ckpt = RunCheckpoint(str(tmp_path), state={"v": v})
    ckpt.save(1, 10)
    v.assign(2.0)
    ckpt.save(2, 20)
    # A write cut short after TensorFlow named it the latest (it renames
    # the files and updates the index last, so only later damage does this).
    data = glob.glob(str(tmp_path / "model.ckpt-20.data*"))[0]
    with open(data, "wb") as f:
        f.write(b"xx")
    v.assign(0.0)
    restored = RunCheckpoint(str(tmp_path), state={"v": v}).restore_latest()
    assert restored.endswith("model.ckpt-10") and float(v.numpy()) == 1.0
    for path in glob.glob(str(tmp_path / "model.ckpt-10.data*")):
        with open(path, "wb") as f:
            f.write(b"")
    with pytest.raises(UserError, match="no readable checkpoint"):
        RunCheckpoint(str(tmp_path), state={"v": v}).restore_latest()
