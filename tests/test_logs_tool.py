"""`python -m src.logs`: a run's stdout (this port's or the reference's) as
events."""

import contextlib
import importlib
import io
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from src import logs
from src import run_log
from src.ptb import log_lines as ptb_search
from tests.conftest import REPO_ROOT


def events(text, **kw):
    out = logs.parse_lines(text.splitlines(True), **kw)
    assert out[-1]["type"] == "summary"
    return out


def of_type(evs, kind):
    return [e for e in evs if e["type"] == kind]


@pytest.fixture
def ptb_main():
    """The PTB formatters (src.ptb.log_lines: no absl flags defined)."""
    from src.ptb import log_lines
    return log_lines


# ---------------------------------------------------------------- flags

FLAG_BLOCK = "\n".join([
    "-" * 80,
    "batch_size" + "." * 68 + "32",
    "child_cutout_size" + "." * 59 + "None",
    "child_l2_reg" + "." * 61 + "0.00025",
    "child_lr_T_0" + "." * 66 + "10",
    "child_lr_cosine" + "." * 61 + "True",
    # 15 + 300 characters: no room for dots.
    "child_fixed_arc" + " ".join(["0"] * 150),
    "data_path" + "." * 57 + "../shared/data",
    "search_for" + "." * 65 + "macro",
    "-" * 80,
    "Reading data",
]) + "\n"


def test_flag_lines_give_names_and_typed_values():
    evs = events(FLAG_BLOCK)
    flags = {e["name"]: e for e in of_type(evs, "flag")}
    assert [flags[n]["value"] for n in ("batch_size", "child_cutout_size",
                                        "child_l2_reg", "child_lr_T_0",
                                        "child_lr_cosine", "search_for")] == [
        32, None, 0.00025, 10, True, "macro"]
    assert flags["child_fixed_arc"]["value"] == " ".join(["0"] * 150)
    # The dots before "../shared/data" cannot be told from its own.
    assert flags["data_path"]["value"] == "/shared/data"
    assert flags["data_path"]["candidates"] == [
        "/shared/data", "./shared/data", "../shared/data"]
    assert flags["batch_size"]["line"] == 2
    assert evs[-1] == {"type": "summary", "lines": 11, "parsed": 8}


def test_flags_txt_settles_the_dots():
    evs = events(FLAG_BLOCK, flag_hints={"data_path": "../shared/data"})
    flag = [e for e in of_type(evs, "flag") if e["name"] == "data_path"][0]
    assert flag["value"] == "../shared/data" and "candidates" not in flag


def test_read_flags_txt(tmp_path):
    path = tmp_path / "flags.txt"
    path.write_text("--batch_size=32\n--child_lr_cosine\n"
                    "--nocontroller_training\n--data_path=../d\n")
    assert logs.read_flags_txt(str(path)) == {
        "batch_size": "32", "child_lr_cosine": "True",
        "controller_training": "False", "nocontroller_training": "True",
        "data_path": "../d"}


# ---------------------------------------------------------------- CIFAR

CIFAR_LOG = """\
Build model child
Model has 72784 params
Resuming from outputs/run/model.ckpt-52 (epoch 2, step 52)
--------------------------------------------------------------------------------
Starting session
epoch=2     ch_step=55     loss=2.005622 lr=0.0453   |g|=1.6865   tr_acc=10 / 32 mins=0.07      
epoch=2     ch_step=60     loss=1.791040 lr=0.0453   |g|=1.4933   tr_acc=8  / 32 mins=0.08      
Epoch 3: Training controller
ctrl_step=0      loss=2.068   ent=57.19 lr=0.0035 |g|=0.0606   acc=0.0312 bl=0.00  mins=1.55
Here are 10 architectures
[4]
[2 1]
[5 1 1]
val_acc=0.0938
--------------------------------------------------------------------------------
[0]
[3 0]
[0 1 0]
val_acc=0.1250
--------------------------------------------------------------------------------
Epoch 3: Eval
Eval at 78
valid_accuracy: 0.1037
Eval at 78
test_accuracy: 0.3780
"""  # noqa: E501, W291


def test_cifar_lines():
    evs = events(CIFAR_LOG)
    assert of_type(evs, "resume") == [{
        "type": "resume", "line": 3, "checkpoint": "outputs/run/model.ckpt-52",
        "epoch": 2, "step": 52}]
    train = of_type(evs, "train")
    assert train[1] == {"type": "train", "line": 7, "epoch": 2, "step": 60,
                        "loss": 1.79104, "lr": 0.0453, "grad_norm": 1.4933,
                        "mins": 0.08, "train_correct": 8, "train_total": 32,
                        "train_acc": 0.25}
    assert of_type(evs, "epoch_controller") == [
        {"type": "epoch_controller", "line": 8, "epoch": 3}]
    assert of_type(evs, "controller") == [{
        "type": "controller", "line": 9, "step": 0, "loss": 2.068,
        "entropy": 57.19, "lr": 0.0035, "grad_norm": 0.0606, "baseline": 0.0,
        "mins": 1.55, "acc": 0.0312}]
    arcs = of_type(evs, "architecture")
    assert arcs[0] == {"type": "architecture", "line": 11, "space": "macro",
                       "arc": "4 2 1 5 1 1", "val_acc": 0.0938, "epoch": 3,
                       "index": 0, "lines": [[4], [2, 1], [5, 1, 1]],
                       "num_layers": 3, "whole_channels": True}
    assert arcs[1]["arc"] == "0 3 0 0 1 0" and arcs[1]["index"] == 1
    assert of_type(evs, "eval") == [
        {"type": "eval", "line": 22, "split": "valid", "epoch": 3,
         "step": 78, "valid_accuracy": 0.1037},
        {"type": "eval", "line": 24, "split": "test", "epoch": 3, "step": 78,
         "test_accuracy": 0.378}]
    # Skipped: "Build model child", "Model has ...", the dashes line
    # outside the architecture block and "Starting session".
    assert evs[-1] == {"type": "summary", "lines": 25, "parsed": 21}


def test_micro_architecture_block_and_wrapped_numpy_printout():
    normal = list(range(6)) * 4 + [1, 0, 11, 4]  # 7 nodes, two digits
    reduce_ = [0, 1, 1, 2] * 7
    text = "\n".join([
        "Here are 10 architectures",
        str(np.reshape(np.array(normal), [-1])),
        str(np.reshape(np.array(reduce_), [-1])),
        "val_acc=0.0625",
        "-" * 80,
        "Epoch 1: Eval"]) + "\n"
    assert text.count("\n") > 6  # numpy wrapped the normal cell
    assert "[ 0  1  2" in text  # and padded its numbers
    arc = of_type(events(text), "architecture")
    assert arc == [{"type": "architecture", "line": 2, "space": "micro",
                    "arc": " ".join(str(v) for v in normal + reduce_),
                    "val_acc": 0.0625, "epoch": None, "index": 0,
                    "lines": [normal, reduce_], "num_cells": 7}]


def test_per_channel_macro_lines_wrap_too():
    lines = [[0, 8, 8, 8, 0, 16, 0, 32, 12, 4, 3, 13] + [1] * layer
             for layer in range(3)]
    text = "Here are 10 architectures\n" + "\n".join(
        str(np.reshape(np.array(line), [-1])) for line in lines) + (
        "\nval_acc=0.5000\n")
    arc = of_type(events(text), "architecture")[0]
    assert arc["lines"] == lines and arc["space"] == "macro"
    assert arc["whole_channels"] is False and arc["num_layers"] == 3


def test_reference_spacing_quirks():
    # Six-digit epochs run into ch_step, tr_acc pads both sides.
    evs = events("epoch=123456ch_step=9999999 loss=nan      lr=0.0500   "
                 "|g|=inf      tr_acc=0  /  32 mins=1234.50   \n")
    train = of_type(evs, "train")[0]
    assert (train["epoch"], train["step"]) == (123456, 9999999)
    assert math.isnan(train["loss"]) and train["grad_norm"] == math.inf
    assert (train["train_correct"], train["train_total"]) == (0, 32)
    line = logs.to_json_lines(evs).splitlines()[0]
    assert '"loss": "nan"' in line and '"grad_norm": "inf"' in line


# ---------------------------------------------------------------- PTB

PTB_LOG = """\
epoch=0      ch_step=20     loss=269.3795 lr=0.2500   |g|=46.83      tr_ppl=2982.60  mins=0.16      
reset train states
Epoch 1: Training controller
ctrl_step=0      loss=1.150   ent=7.69  lr=0.0010 |g|=0.0096596  rw=0.067   bl=0.001   mins=0.44
Here are 10 architectures
[1 0 1 0 1 2 0 3 0 4 1 4 1 6 1 7 1 6 0 9 1 9 0] rw=0.067
[ 1  0  0  1  1  1  1  3  1  4  1  5  0  6  1  7  1  4  1  7  1 10  0] rw=0.081
[ 0  0  0  1  0  2  0  1  1  3  0  3  1  6  0  7  1  8  1  8  1 10  1  2  1  9
  0] rw=0.073
Epoch 1: Eval
Eval at 105
valid_total_loss: 573650.74
valid_log_ppl: 7.00  
valid_ppl: 1101.34
Eval at 105
1000  1100.43
2000  1085.13

test_total_loss: 573650.00
test_log_ppl: 7.01  
test_ppl: 1102.00
--------------------------------------------------------------------------------
Eval at 210
test_total_loss: 1.00  
test_log_ppl: 2.00  
test_ppl: 3.00  
"""  # noqa: E501, W291


def test_ptb_lines():
    evs = events(PTB_LOG)
    assert of_type(evs, "train") == [{
        "type": "train", "line": 1, "epoch": 0, "step": 20,
        "loss": 269.3795, "lr": 0.25, "grad_norm": 46.83, "mins": 0.16,
        "train_ppl": 2982.6}]
    assert of_type(evs, "controller") == [{
        "type": "controller", "line": 4, "step": 0, "loss": 1.15,
        "entropy": 7.69, "lr": 0.001, "grad_norm": 0.0096596,
        "baseline": 0.001, "mins": 0.44, "rw": 0.067}]
    arcs = of_type(evs, "architecture")
    assert [(a["line"], a["index"], a["rw"], a["space"], a["epoch"])
            for a in arcs] == [(6, 0, 0.067, "ptb", 1),
                               (7, 1, 0.081, "ptb", 1),
                               (8, 2, 0.073, "ptb", 1)]
    assert arcs[1]["arc"] == ("1 0 0 1 1 1 1 3 1 4 1 5 0 6 1 7 1 4 1 7 1 "
                              "10 0")
    assert arcs[2]["arc"].endswith("1 9 0") and len(arcs[2]["arc"].split()) \
        == 27
    assert of_type(evs, "eval") == [
        {"type": "eval", "line": 11, "split": "valid", "epoch": 1,
         "step": 105, "valid_total_loss": 573650.74, "valid_log_ppl": 7.0,
         "valid_ppl": 1101.34},
        {"type": "eval", "line": 15, "split": "test", "epoch": 1,
         "step": 105, "test_total_loss": 573650.0, "test_log_ppl": 7.01,
         "test_ppl": 1102.0, "progress": [[1000, 1100.43], [2000, 1085.13]]},
        # The final evaluation, after the last epoch's block.
        {"type": "eval", "line": 23, "split": "test", "epoch": None,
         "step": 210, "test_total_loss": 1.0, "test_log_ppl": 2.0,
         "test_ppl": 3.0}]
    # Skipped: "reset train states", the empty line, the dashes.
    assert evs[-1] == {"type": "summary", "lines": 26, "parsed": 23}


def test_unknown_and_broken_lines_are_skipped():
    evs = events("Here are 10 architectures\n[0 1 x]\nmean: [1.5 2.5]\n"
                 "[1 2\nnot an arc\nhello\n")
    assert [e["type"] for e in evs] == ["summary"]
    assert evs[0] == {"type": "summary", "lines": 6, "parsed": 1}


# ---------------------------------------------------------------- round trip

def close(parsed, value, decimals):
    assert abs(parsed - value) <= 0.5 * 10 ** -decimals + 1e-12, (parsed,
                                                                   value)


def test_round_trip_through_the_cifar_formatters():
    rng = np.random.default_rng(0)
    lines, expected = [run_log.dotted_flag_line("child_lr_max", 0.05)], []
    for step in range(1, 40):
        v = rng.uniform(0, 50, size=5)
        lines.append(run_log.train_line(step // 7, step * 13, v[0], v[1],
                                        v[2], step % 33, 32, v[3]))
        lines.append(run_log.controller_line(step, v[0] - 25, v[1], v[2],
                                             v[3], v[4] / 50, v[4], v[3]))
        expected.append((step, v))
    lines += ["Eval at 5", run_log.accuracy_line("valid", 0.123456)]
    evs = events("\n".join(lines))
    assert of_type(evs, "flag")[0]["value"] == 0.05
    train, ctrl = of_type(evs, "train"), of_type(evs, "controller")
    for (step, v), t, c in zip(expected, train, ctrl, strict=True):
        assert (t["epoch"], t["step"]) == (step // 7, step * 13)
        for key, value, decimals in (("loss", v[0], 6), ("lr", v[1], 4),
                                     ("grad_norm", v[2], 4),
                                     ("mins", v[3], 2)):
            close(t[key], value, decimals)
        assert (t["train_correct"], t["train_total"]) == (step % 33, 32)
        assert c["step"] == step
        for key, value, decimals in (("loss", v[0] - 25, 3),
                                     ("entropy", v[1], 2), ("lr", v[2], 4),
                                     ("grad_norm", v[3], 4),
                                     ("acc", v[4] / 50, 4),
                                     ("baseline", v[4], 2),
                                     ("mins", v[3], 2)):
            close(c[key], value, decimals)
    ev = of_type(evs, "eval")[0]
    assert ev["step"] == 5
    close(ev["valid_accuracy"], 0.123456, 4)


def test_round_trip_through_the_ptb_formatters(ptb_main):
    rng = np.random.default_rng(1)
    lines, expected = [], []
    for step in range(1, 30):
        v = rng.uniform(0, 900, size=6)
        lines.append(ptb_main.train_line(step // 5, step * 20, v[0], v[1],
                                         v[2], v[3], v[4]))
        lines.append(ptb_search.controller_line(step, v[0], v[1], v[2] / 900,
                                                v[3] / 1e4, v[4] / 900,
                                                v[5] / 900, v[5]))
        expected.append((step, v))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        ptb_main.print_evaluation("test", 2900, {
            "total_loss": 12345.678, "log_ppl": 4.567, "ppl": 96.25,
            "progress": [(1000, 101.234), (2000, 99.876)]}, verbose=True)
    lines += printed.getvalue().splitlines()
    evs = events("\n".join(lines))
    train, ctrl = of_type(evs, "train"), of_type(evs, "controller")
    for (step, v), t, c in zip(expected, train, ctrl, strict=True):
        assert (t["epoch"], t["step"]) == (step // 5, step * 20)
        for key, value, decimals in (("loss", v[0], 4), ("lr", v[1], 4),
                                     ("grad_norm", v[2], 2),
                                     ("train_ppl", v[3], 2),
                                     ("mins", v[4], 2)):
            close(t[key], value, decimals)
        assert c["step"] == step
        for key, value, decimals in (("loss", v[0], 3), ("entropy", v[1], 2),
                                     ("lr", v[2] / 900, 4),
                                     ("grad_norm", v[3] / 1e4, 7),
                                     ("rw", v[4] / 900, 3),
                                     ("baseline", v[5] / 900, 3),
                                     ("mins", v[5], 2)):
            close(c[key], value, decimals)
    ev = of_type(evs, "eval")[0]
    assert (ev["split"], ev["step"]) == ("test", 2900)
    assert ev["progress"] == [[1000, 101.23], [2000, 99.88]]
    close(ev["test_total_loss"], 12345.678, 2)
    close(ev["test_log_ppl"], 4.567, 2)
    close(ev["test_ppl"], 96.25, 2)


def test_round_trip_of_ptb_architecture_printouts():
    # As the PTB printout of src.search.ControllerPhase prints them; depth 30
    # wraps.
    rng = np.random.default_rng(2)
    arcs, lines = [], ["Epoch 4: Training controller",
                       "Here are 10 architectures"]
    for depth in (3, 12, 30):
        arc = [int(rng.integers(4))]
        for node in range(1, depth):
            arc += [int(rng.integers(node)), int(rng.integers(4))]
        arcs.append(arc)
        lines.append("{} rw={:<.3f}".format(np.reshape(np.array(arc), [-1]),
                                            depth / 100))
    evs = events("\n".join(lines))
    got = of_type(evs, "architecture")
    assert [e["arc"] for e in got] == [" ".join(map(str, a)) for a in arcs]
    assert [e["rw"] for e in got] == [0.03, 0.12, 0.3]
    assert all(e["epoch"] == 4 for e in got)


# ---------------------------------------------------------------- CLI

def test_command_line_writes_json_lines(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "stdout").write_text(FLAG_BLOCK + CIFAR_LOG)
    (run_dir / "flags.txt").write_text("--data_path=../shared/data\n")
    out = tmp_path / "events.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "src.logs", str(run_dir),
         "--out={}".format(out)],
        cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    evs = [json.loads(line) for line in out.read_text().splitlines()]
    assert evs == logs.parse_lines(
        (FLAG_BLOCK + CIFAR_LOG).splitlines(True),
        flag_hints={"data_path": "../shared/data"})
    assert evs[-1]["type"] == "summary"


def test_call_in_process_with_its_own_flags(tmp_path, capsys):
    """`logs.call` parses into a FlagValues of its own: it runs beside an
    entry point's flags, again and again, and defines no global flag."""
    from absl import flags

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "stdout").write_text(FLAG_BLOCK)
    (run_dir / "flags.txt").write_text("--data_path=../shared/data\n")
    before = set(flags.FLAGS)
    out = tmp_path / "events.jsonl"
    assert logs.call(["logs", str(run_dir), "--out={}".format(out)]) == 0
    evs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["value"] for e in evs if e.get("name") == "data_path"] == [
        "../shared/data"]
    # Again, now to stdout: the first call's --out is not remembered.
    assert logs.call(["logs", str(run_dir / "stdout")]) == 0
    printed, err = capsys.readouterr()
    assert err == "" and printed.splitlines()[-1] == json.dumps(
        {"type": "summary", "lines": 11, "parsed": 8})
    assert set(flags.FLAGS) == before
    assert logs.call(["logs"]) == 2
    assert capsys.readouterr()[1] == (
        "error: give one run's stdout file (or its output folder): python -m "
        "src.logs outputs/run/stdout [--out=PATH]\n")
    assert logs.call(["logs", str(run_dir), "--outt=x"]) == 2
    assert capsys.readouterr()[1].startswith(
        "error: Unknown command line flag 'outt'")


def test_read_flags_txt_of_a_missing_file_is_a_user_error(tmp_path):
    from src.errors import UserError

    with pytest.raises(UserError, match="cannot read --flagfile="):
        logs.read_flags_txt(str(tmp_path / "flags.txt"))
