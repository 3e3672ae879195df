"""Helpers of the reliability tests (PTB and CIFAR-10): entry points run as
subprocesses, stopped by a signal at a chosen log line, and their
checkpoints and logs compared."""

import subprocess
import sys

import tensorflow as tf

from tests.ptb_fixtures import REPO_ROOT, main_env


def checkpoint_tensors(output_dir):
    """name -> value of every tensor in the run's newest checkpoint (but
    `save_counter`, which counts the saves)."""
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(output_dir))
    return {name: reader.get_tensor(name)
            for name in reader.get_variable_to_shape_map()
            if not name.startswith("save_counter")}


def numbers(log):
    """The log's lines without the wall-clock parts (mins=...)."""
    out = []
    for line in log.splitlines():
        if "mins=" in line:
            line = line[:line.index("mins=")]
        out.append(line.rstrip())
    return out


def run_until(module, args, trigger, sig, timeout=300):
    """Starts `python -m module args`, sends `sig` once a stdout line
    contains `trigger`, waits for it to end; returns (exit status,
    stdout)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args], cwd=REPO_ROOT,
        env=main_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if trigger in line:
                proc.send_signal(sig)
                break
        rest = proc.stdout.read()
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, "".join(seen) + rest
