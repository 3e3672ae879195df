"""A tiny PTB corpus and a runner for the PTB entry point's subprocess
tests."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent


def write_tiny_ptb(folder, seed=0):
    """A 30-word corpus in the reference's layout (train, valid, test)."""
    rng = np.random.default_rng(seed)
    words = ["w{:02d}".format(i) for i in range(30)]
    for split, lines in (("train", 80), ("valid", 30), ("test", 20)):
        text = "".join(
            " " + " ".join(rng.choice(words, rng.integers(3, 9))) + " \n"
            for _ in range(lines))
        (Path(folder) / split).write_text(text)
    return str(folder)


def main_env():
    return dict(os.environ, PYTHONPATH=str(REPO_ROOT),
                TF_CPP_MIN_LOG_LEVEL="2")


def run_ptb_main(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "src.ptb.main", *args],
                          capture_output=True, text=True, cwd=REPO_ROOT,
                          env=main_env(), timeout=timeout)


def tiny_args(data_path, output_dir):
    return ["--search_for=enas", "--data_path=" + data_path,
            "--output_dir=" + output_dir, "--batch_size=4",
            "--child_bptt_steps=5", "--child_rhn_depth=3",
            "--child_num_layers=1", "--child_lstm_hidden_size=8",
            "--child_lstm_e_keep=0.8", "--child_lstm_x_keep=0.8",
            "--child_lstm_h_keep=0.8", "--child_lstm_o_keep=0.8",
            "--child_lr=0.5", "--child_l2_reg=1e-7", "--log_every=5",
            "--nodownload"]
