"""The PTB entry point end to end on a tiny corpus: the reference's lines,
the search's controller phase and architecture printout, resume, and
one-line errors."""

import json
import os
import sys

import pytest

from src.ptb.arcs import PtbArc
from tests.in_process import call_main
from tests.ptb_fixtures import run_ptb_main, tiny_args, write_tiny_ptb

ARC3 = "0 0 1 1 2"


@pytest.fixture(scope="module")
def tiny_ptb(tmp_path_factory):
    return write_tiny_ptb(tmp_path_factory.mktemp("ptb"))


run_main = run_ptb_main
base_args = tiny_args


def test_fixed_arc_run_prints_the_reference_lines_and_resumes(tiny_ptb,
                                                              tmp_path):
    out_dir = str(tmp_path / "run")
    args = base_args(tiny_ptb, out_dir) + ["--child_fixed_arc=" + ARC3,
                                           "--nocontroller_training"]
    first = run_main(*args, "--num_epochs=1")
    assert first.returncode == 0, first.stderr[-3000:]
    log = first.stdout
    assert "child_fixed_arc" + "." * 56 + ARC3 in log  # 80-wide flag line
    assert "train_size: " in log and " test_size: " in log
    assert "Model has " in log and " parameters" in log
    assert "epoch=0      ch_step=5      loss=" in log
    assert " |g|=" in log and " tr_ppl=" in log and " mins=" in log
    assert "Epoch 1: Eval" in log and "valid_ppl: " in log
    assert log.rstrip().splitlines()[-1].startswith("test_ppl: ")
    for name in ("stdout", "flags.txt", "checkpoint"):
        assert os.path.exists(os.path.join(out_dir, name)), name

    second = run_main(*args, "--num_epochs=2")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Resuming from" in second.stdout and "(epoch 1," in second.stdout
    assert "Epoch 2: Eval" in second.stdout
    assert "Epoch 1: Eval" not in second.stdout
    # The stdout copy is appended to, not truncated.
    assert open(os.path.join(out_dir, "stdout")).read().count(
        "Starting session") == 2

    # The same two epochs in one run end with the same perplexities.
    straight = run_main(*base_args(tiny_ptb, str(tmp_path / "straight")),
                        "--child_fixed_arc=" + ARC3,
                        "--nocontroller_training", "--num_epochs=2")
    assert straight.returncode == 0, straight.stderr[-3000:]

    def last_ppls(text):
        return [l for l in text.splitlines() if l.startswith(("valid_ppl",
                                                              "test_ppl"))][-2:]
    assert last_ppls(second.stdout) == last_ppls(straight.stdout)


def test_search_trains_the_controller_and_records_architectures(tiny_ptb,
                                                               tmp_path):
    out_dir = str(tmp_path / "search")
    result = run_main(*base_args(tiny_ptb, out_dir), "--num_epochs=1",
                      "--controller_training", "--controller_train_every=1",
                      "--controller_train_steps=2",
                      "--controller_num_aggregate=2",
                      "--controller_sync_replicas", "--log_every=1",
                      "--controller_tanh_constant=2.5",
                      "--controller_temperature=5.0",
                      "--controller_entropy_weight=0.001")
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout
    assert "Epoch 1: Training controller" in log
    assert "ctrl_step=0      loss=" in log and " rw=" in log and " bl=" in log
    assert "ctrl_step=2 " in log  # 4 runs of 2 aggregated arcs: 2 updates
    assert "Here are 10 architectures" in log
    printed = [l for l in log.splitlines() if l.startswith("[")]
    assert len(printed) == 10 and all(" rw=" in l for l in printed)
    records = [json.loads(line) for line in
               open(os.path.join(out_dir, "arcs.jsonl"))]
    assert len(records) == 10
    for r in records:
        arc = PtbArc.parse(r["arc"], 3, num_funcs=2)  # the default 2 funcs
        assert r["cell"] == arc.describe()
    best = open(os.path.join(out_dir, "best_arc.txt")).read().strip()
    assert best == max(records, key=lambda r: r["reward"])["arc"]
    assert "valid_ppl: " in log and "test_ppl: " in log


@pytest.mark.parametrize("extra, fragment", [
    (["--search_for=rhn"], "--search_for='rhn' is unknown"),
    (["--child_fixed_arc=" + ARC3], "add --nocontroller_training"),
    (["--child_fixed_arc=0 0 1 3", "--nocontroller_training"],
     "has 4 integers but --child_rhn_depth=3 needs 5"),
    (["--child_fixed_arc=0 0 1 2 2", "--nocontroller_training"],
     "node 2, position 3: previous node 2"),
    (["--data_path=/nonexistent/ptb"], "does not exist"),
    (["--child_lstm_x_keep=0"], "--child_lstm_x_keep=0.0 is not in (0, 1]"),
    (["--batch_size=400"], "too few for batch_size"),
    (["--no_such_flag"], "Unknown command line flag 'no_such_flag'"),
])
def test_bad_input_gets_one_line_and_exit_status_2(tiny_ptb, tmp_path, extra,
                                                   fragment, capfd):
    out_dir = tmp_path / "bad"
    # In this process (test_reference_flagfiles_parse takes `python -m`).
    result = call_main("src.ptb.main", base_args(tiny_ptb, str(out_dir))
                       + extra, capfd)
    assert result.returncode == 2, result.stderr[-2000:]
    assert fragment in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (out_dir / "checkpoint").exists()


def test_reference_flagfiles_parse(tmp_path):
    """The reference scripts' flags, unchanged, reach the data check."""
    for name in ("ptb_search", "ptb_final"):
        result = run_main("--flagfile=flags/{}.flags".format(name),
                          "--data_path=" + str(tmp_path / "none"),
                          "--nodownload", "--output_dir=" + str(tmp_path / name))
        assert result.returncode == 2, result.stderr[-2000:]
        assert "PTB data path" in result.stderr


def test_runs_in_one_process_leave_stdout_as_they_found_it(tiny_ptb,
                                                           tmp_path):
    """Two runs in a Python caller's process (each stopped by the data
    check, after its stdout copy started): each folder's stdout holds its
    own run only, and sys.stdout is the caller's again."""
    from src.ptb import main
    before = sys.stdout
    for name in ("first", "second"):
        assert main.call(["prog", *base_args(tiny_ptb, str(tmp_path / name)),
                          "--batch_size=400"]) == 2
        assert sys.stdout is before
    first = (tmp_path / "first" / "stdout").read_text()
    assert str(tmp_path / "first") in first
    assert str(tmp_path / "second") not in first
