"""The CIFAR-10 entry point end to end on tiny data: log lines, outputs,
resume, and one-line errors for bad input."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from src import run_loop, schedules
from src.cifar10.session import CifarRunConfig
from src.macro import arcs
from src.macro.child import MacroConfig
from src.train_ops import TrainConfig
from tests.conftest import REPO_ROOT
from tests.in_process import call_main

ARC3 = "0 5 1 4 0 1"  # 3 layers: conv 3x3, max pool, avg pool


def tiny_config(data_path, output_dir, num_epochs, keep_prob=0.5):
    arc = arcs.MacroArc.parse(ARC3, 3, 4, True)
    lr = schedules.LrConfig(lr_cosine=True, lr_max=0.05, lr_min=0.001,
                            lr_T_0=1, lr_T_mul=2)
    return CifarRunConfig(
        search_for="macro", data_path=data_path, output_dir=output_dir,
        reset_output_dir=False, num_valids=20, batch_size=32,
        num_epochs=num_epochs, log_every=2, eval_every_epochs=1, seed=7,
        cutout_size=8, download=False,
        child=MacroConfig(num_layers=3, out_filters=4, num_branches=4,
                          fixed_arc=arc, keep_prob=keep_prob, seed=7),
        train=TrainConfig(l2_reg=1e-4, clip_mode="norm", grad_bound=5.0,
                          lr=lr),
        lr_dec_every_epochs=100)


def final_weights(output_dir):
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(output_dir))
    return {name: reader.get_tensor(name)
            for name in reader.get_variable_to_shape_map()
            if name.startswith(("child/", "optimizer/"))}


def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_run(
        fake_cifar, tmp_path):
    straight, resumed = str(tmp_path / "a"), str(tmp_path / "b")
    for d in (straight, resumed):
        os.makedirs(d)
    assert run_loop.train(tiny_config(fake_cifar, straight, 3)) == 0
    assert run_loop.train(tiny_config(fake_cifar, resumed, 1)) == 0
    assert run_loop.train(tiny_config(fake_cifar, resumed, 3)) == 0
    a, b = final_weights(straight), final_weights(resumed)
    # Every child variable (BN statistics and dropout seeds included).
    assert a.keys() == b.keys() and len(a) > 115 + 40
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def run_main(*args, cwd=REPO_ROOT):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "src.cifar10.main", *args],
                          capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)


def base_args(data_path, output_dir):
    return ["--search_for=macro", "--data_path=" + data_path,
            "--output_dir=" + output_dir, "--child_fixed_arc=" + ARC3,
            "--child_num_layers=3", "--child_out_filters=4",
            "--batch_size=32", "--log_every=1", "--nocontroller_training",
            "--controller_search_whole_channels", "--child_lr_cosine",
            "--child_lr_max=0.05", "--child_lr_min=0.001", "--child_lr_T_0=1",
            "--child_lr_T_mul=2"]


def test_cli_prints_the_reference_lines_writes_its_outputs_and_resumes(
        fake_cifar, tmp_path):
    out_dir = str(tmp_path / "run")
    first = run_main(*base_args(fake_cifar, out_dir), "--num_epochs=1")
    assert first.returncode == 0, first.stderr[-3000:]
    log = first.stdout
    assert "child_fixed_arc" + "." * 54 + ARC3 in log  # 80-wide flag line
    assert "Reading data" in log and "Model has" in log
    assert "epoch=0     ch_step=1      loss=" in log
    assert " |g|=" in log and " tr_acc=" in log and " mins=" in log
    assert "Epoch 1: Eval" in log and "test_accuracy: " in log
    assert "valid_accuracy" not in log  # fixed arc: no validation split
    for name in ("stdout", "flags.txt", "checkpoint"):
        assert os.path.exists(os.path.join(out_dir, name)), name
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(out_dir))
    saved = open(os.path.join(out_dir, "stdout")).read()
    assert "test_accuracy: " in saved
    assert "--child_fixed_arc=" + ARC3 in open(
        os.path.join(out_dir, "flags.txt")).read()

    second = run_main(*base_args(fake_cifar, out_dir), "--num_epochs=2")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Resuming from" in second.stdout
    assert "Epoch 2: Eval" in second.stdout
    assert "Epoch 1: Eval" not in second.stdout
    # The stdout copy is appended to, not truncated.
    saved = open(os.path.join(out_dir, "stdout")).read()
    assert "Epoch 1: Eval" in saved and "Epoch 2: Eval" in saved


@pytest.mark.parametrize("extra, message", [
    (["--child_fixed_arc=0 5 1"], "has 3 integers but --child_num_layers=3 "
     "needs 6"),
    (["--child_fixed_arc=0 5 1 9 0 1"], "layer 2, position 3: op 9"),
    (["--search_for=nas"], "--search_for='nas' is unknown"),
    (["--controller_training"], "add --nocontroller_training"),
    (["--child_out_filters=5"], "--child_out_filters=5 is odd"),
])
def test_bad_input_is_one_line_and_exit_status_2(fake_cifar, tmp_path, extra,
                                                  message, capfd):
    out_dir = str(tmp_path / "run")
    # In this process (the missing data's test below takes `python -m`).
    result = call_main("src.cifar10.main", base_args(fake_cifar, out_dir)
                       + extra + ["--num_epochs=1"], capfd)
    assert result.returncode == 2
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert lines[-1].startswith("error: ") and message in lines[-1]
    assert "Traceback" not in result.stderr


def test_missing_data_is_one_line_and_exit_status_2(tmp_path):
    result = run_main(*base_args(str(tmp_path / "nowhere"),
                                 str(tmp_path / "run")),
                      "--num_epochs=1", "--nodownload")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
