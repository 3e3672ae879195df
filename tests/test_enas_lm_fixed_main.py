"""`python -m src.enas_lm.fixed`: enas_lm's lines on a tiny corpus, resume,
the averaging trigger, the random-length windows, and bad input."""

import re
import subprocess
import sys

import numpy as np
import pytest

from src.enas_lm import fixed as fixed_main
from src.enas_lm.data import RandomLengthStream, window_length
from src.enas_lm.log_lines import train_line
from src.enas_lm.space import averaging_starts
from tests.in_process import call_main
from tests.ptb_fixtures import REPO_ROOT, main_env, write_tiny_ptb

ARC = "0 2 1 0 2 1 2 2 4 0 5 0 3 2 6 2"
STDOUT = REPO_ROOT.parent / "shared" / "reference" / "enas_lm" / "stdout"


@pytest.fixture(scope="module")
def tiny_ptb(tmp_path_factory):
    return write_tiny_ptb(tmp_path_factory.mktemp("ptb"))


def run_fixed(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "src.enas_lm.fixed", *args],
                          capture_output=True, text=True, cwd=REPO_ROOT,
                          env=main_env(), timeout=timeout)


def tiny_args(data_path, output_dir):
    return ["--fixed_arc=" + ARC, "--data_path=" + data_path,
            "--output_dir=" + output_dir, "--child_batch_size=4",
            "--child_bptt_steps=5", "--child_hidden_size=8",
            "--child_vocab_size=40", "--log_every=1", "--nodownload",
            "--child_best_valid_ppl_threshold=1", "--noreset_output_dir"]


def test_a_run_prints_enas_lms_lines_then_resumes_for_more_epochs(tiny_ptb,
                                                                  tmp_path):
    out_dir = str(tmp_path / "run")
    result = run_fixed(*tiny_args(tiny_ptb, out_dir),
                       "--child_num_train_epochs=3")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert "train_size: 552" in lines and " test_size: 137" in lines
    # 40 x 8 embedding, 16 x 16 w_prev, 8 nodes of 8 x 16.
    assert "Model has 1600 params" in lines
    assert '  "num_train_batches": 27,' in lines
    steps = [line for line in lines if line.startswith("epoch=")]
    assert len(steps) == 81  # --log_every=1: every step of 3 x 27
    assert re.fullmatch(r"epoch=0     step=1       ppl=\S+ +lr=\S+ +"
                        r"\|g\|=\S+ +avg=0  mins=\d+\.\d\d", steps[0])
    evals = [line for line in lines if line.startswith("valid_ppl=")]
    assert len(evals) >= 1
    assert lines[-1].startswith("step=136    test_ppl=")
    # The trigger (threshold 1: a perplexity worse than all but the last)
    # either fired, and averaging then shows in the lines, or not.
    if "Starting moving_avg" in lines:
        after = lines[lines.index("Starting moving_avg") + 1]
        assert "avg=1" in after
    # Again with more epochs: resumes at the last step.
    result = run_fixed(*tiny_args(tiny_ptb, out_dir),
                       "--child_num_train_epochs=4")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resuming from " in result.stdout
    steps = [line for line in result.stdout.splitlines()
             if line.startswith("epoch=")]
    assert steps[0].startswith("epoch=3     step=82 ")
    assert steps[-1].startswith("epoch=4     step=108 ")


def test_the_log_line_is_enas_lms_format():
    recorded = (STDOUT / "fixed" / "stdout")
    if not recorded.exists():
        pytest.skip("enas_lm's recorded stdout not found")
    line = next(line for line in recorded.read_text().splitlines()
                if line.startswith("epoch=1     step=3 "))
    fields = dict(re.findall(r"(\S+)=(\S+)", line))
    ours = train_line(1, 3, float(fields["ppl"]), float(fields["lr"]),
                      float(fields["|g|"]), 0, float(fields["mins"]))
    assert ours == line


def test_averaging_starts_when_the_perplexity_is_worse_than_the_old_best():
    # The recorded run: its 20th evaluation, 1282.08, is worse than the
    # best of the first 9 (1216.01).
    history = [3031.05, 2309.75, 2161.56, 2135.70, 1704.73, 1481.52,
               1247.35, 1216.01, 1289.76, 1264.06, 1191.44, 1101.0, 1100.0,
               1099.0, 1098.0, 1097.0, 1096.0, 1095.0, 1094.0]
    assert averaging_starts(history, 1282.08, 10, False)
    assert not averaging_starts(history, 1200.0, 10, False)
    assert not averaging_starts(history, 1282.08, 10, True)
    assert not averaging_starts(history[:10], 5000.0, 10, False)
    assert averaging_starts(history[:11], 5000.0, 10, False)


def test_window_lengths_follow_enas_lms_draws_caps_and_epoch_end():
    rng = np.random.default_rng(0)
    lengths = np.array([window_length(rng, 35) for _ in range(4000)])
    assert lengths.min() >= 7 and lengths.max() <= 45
    # The bptt / 2 branch (probability 0.05) gives most lengths below 25,
    # the bptt one none.
    short = np.mean(lengths < 25)
    assert 0.03 < short < 0.07
    stream = RandomLengthStream(np.arange(20 * 200), 20, 35, seed=3)
    seen, step = [], 0
    while True:
        x, y, reset = stream.next(step)
        step += 1
        assert x.shape == y.shape and x.shape[0] == 20
        np.testing.assert_array_equal(y[:, :-1], x[:, 1:])
        seen.append(x.shape[1])
        if reset:
            break
    assert sum(seen) >= 200 - 4 and stream.position == 0
    assert min(seen[:-1]) >= 7
    # The same step draws the same window.
    again = RandomLengthStream(np.arange(20 * 200), 20, 35, seed=3)
    assert again.next(0)[0].shape == (20, seen[0])


@pytest.mark.parametrize("extra, fragment", [
    (["--fixed_arc=0 2 1"], "--fixed_arc has 3 integers, an odd number"),
    (["--fixed_arc=0 2 2 0"], "--fixed_arc: node 2, position 2: previous "
                              "node 2 must be one of the earlier nodes 0..1"),
    (["--child_drop_x=1"], "--child_drop_x=1.0 is not a drop rate"),
    (["--child_grad_bound=0"], "--child_grad_bound must be positive"),
    (["--child_num_train_epochs=0"], "--child_num_train_epochs must be at "
                                     "least 1"),
])
def test_bad_flags_get_one_line_and_exit_status_2(tiny_ptb, tmp_path, extra,
                                                  fragment, capsys):
    """Checked before the run folder exists (in this process)."""
    out_dir = tmp_path / "bad"
    status = fixed_main.call(["fixed"] + tiny_args(tiny_ptb, str(out_dir))
                             + extra)
    err = capsys.readouterr().err
    assert status == 2
    assert err == "error: {}\n".format(err[len("error: "):-1])
    assert fragment in err
    assert not out_dir.exists()


def test_bad_data_gets_one_line_and_exit_status_2(tiny_ptb, tmp_path, capfd):
    for extra, fragment in (
            (["--child_vocab_size=10"], "the data has 31 words but "
                                        "--child_vocab_size=10"),
            (["--child_batch_size=400"], "too few for batch_size")):
        out_dir = tmp_path / "bad"
        # In this process (the other runs here take `python -m`).
        result = call_main("src.enas_lm.fixed",
                           tiny_args(tiny_ptb, str(out_dir)) + extra, capfd)
        assert result.returncode == 2, result.stderr[-2000:]
        errors = [line for line in result.stderr.splitlines()
                  if line.startswith("error:")]
        assert len(errors) == 1 and fragment in errors[0], result.stderr
        assert "Traceback" not in result.stderr
        assert not (out_dir / "checkpoint").exists()


def test_sigterm_saves_mid_epoch_and_the_run_resumes_there(tiny_ptb,
                                                           tmp_path):
    import signal
    out_dir = str(tmp_path / "stop")
    proc = subprocess.Popen(
        [sys.executable, "-m", "src.enas_lm.fixed",
         *tiny_args(tiny_ptb, out_dir), "--child_num_train_epochs=1000"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        cwd=REPO_ROOT, env=main_env())
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith("epoch=") and "step=3 " in line:
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=120)
    lines += rest.splitlines()
    assert proc.returncode == 128 + signal.SIGTERM
    assert lines[-1].startswith("SIGTERM: saved ")
    stopped = max(int(re.search(r"step=(\d+)", line).group(1))
                  for line in lines if line.startswith("epoch="))
    result = run_fixed(*tiny_args(tiny_ptb, out_dir),
                       "--child_num_train_epochs=1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Resuming from " in result.stdout
    first = next(line for line in result.stdout.splitlines()
                 if line.startswith("epoch="))
    assert "step={} ".format(stopped + 1) in first


def test_a_nan_stops_the_run_naming_the_step_or_is_skipped(tiny_ptb,
                                                           tmp_path):
    blow_up = ["--child_learning_rate=1e38", "--child_grad_bound=1e30",
               "--child_num_train_epochs=1"]
    result = run_fixed(*tiny_args(tiny_ptb, str(tmp_path / "nan")), *blow_up)
    assert result.returncode == 1, result.stderr[-2000:]
    assert re.search(r"error: the child's (loss|gradient norm) is nan at "
                     r"step 2 \(epoch 0\); "
                     r"stopping without saving", result.stdout)
    result = run_fixed(*tiny_args(tiny_ptb, str(tmp_path / "skip")),
                       *blow_up, "--nan_policy=skip_arc")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "nan_policy=skip_arc: the child's" in result.stdout


def test_a_run_starts_from_an_enas_lm_checkpoint_and_continues_its_steps(
        tmp_path):
    case = REPO_ROOT.parent / "shared" / "reference" / "enas_lm" / \
        "goldens" / "lm_fixed"
    data = REPO_ROOT.parent / "shared" / "data" / "ptb"
    if not case.is_dir() or not data.is_dir():
        pytest.skip("enas_lm goldens or PTB text not found")
    # The golden's sizes (fixed_lib's batch 64 ran as 20), one pass.
    result = run_fixed(
        "--fixed_arc=" + ARC, "--child_hidden_size=64",
        "--child_batch_size=20", "--data_path=" + str(data),
        "--train_on_valid", "--output_dir=" + str(tmp_path / "run"),
        "--child_num_train_epochs=1", "--log_every=50", "--nodownload",
        "--reference_checkpoint=" + str(case / "ckpt" / "model.ckpt-3"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"Initialised from the reference checkpoint \S+ "
                     r"\(\d+ variables\)", result.stdout)
    steps = [int(line.split()[1].split("=")[1])
             for line in result.stdout.splitlines()
             if line.startswith("epoch=")]
    # Its global step (3) carried on: the steps end at one pass's 105.
    assert steps == [50, 100]
    assert "test_ppl=" in result.stdout.splitlines()[-1]
