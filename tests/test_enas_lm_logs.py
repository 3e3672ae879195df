"""`python -m src.logs` reads enas_lm's lines: the recorded stdout of the
authors' fixed.py and search.py, and the port's own lines."""

import numpy as np
import pytest

from src import logs
from src.enas_lm.log_lines import search_line, train_line
from src.enas_lm.log_lines import controller_line
from tests.conftest import SHARED

STDOUT = SHARED / "reference" / "enas_lm" / "stdout"


def events(path):
    if not path.exists():
        pytest.skip("enas_lm's recorded stdout not found at {}".format(path))
    return logs.parse_lines(path.read_text().splitlines())


def of_type(evs, kind):
    return [e for e in evs if e["type"] == kind]


def test_the_recorded_fixed_run_reads_as_steps_evaluations_and_averaging():
    evs = events(STDOUT / "fixed" / "stdout")
    train = of_type(evs, "train")
    assert len(train) == 90
    assert {k: train[0][k] for k in ("epoch", "step", "train_ppl", "lr",
                                     "grad_norm", "averaging")} == {
        "epoch": 0, "step": 1, "train_ppl": 10082.96, "lr": 22.857,
        "grad_norm": 0.218, "averaging": 0}
    valid = [e for e in of_type(evs, "eval") if e["split"] == "valid"]
    assert len(valid) == 24 and valid[0]["valid_ppl"] == 3031.05
    assert valid[19]["valid_ppl"] == 1282.08
    assert len(of_type(evs, "averaging")) == 1
    assert train[-1]["averaging"] == 1
    test = [e for e in of_type(evs, "eval") if e["split"] == "test"]
    assert test == [{"type": "eval", "line": test[0]["line"],
                     "split": "test", "step": 119, "test_ppl": 1261.26}]


def test_the_recorded_search_reads_as_child_and_controller_steps():
    evs = events(STDOUT / "search" / "stdout")
    train = of_type(evs, "train")
    assert len(train) == 8 and train[0]["l2_reg"] == 0.02
    ctrl = of_type(evs, "controller")
    assert len(ctrl) == 25 and [e["step"] for e in ctrl[:3]] == [0, 10, 20]
    assert ctrl[0]["arc"] == "0 0 0 1 2 3 2 1 3 2 5 1 6 3 7 1 7 3"
    assert ctrl[0]["rw"] == 0.0119 and ctrl[0]["ppl"] == 6695.57
    assert of_type(evs, "eval")[0]["valid_ppl"] == 7152.39


def test_the_ports_lines_read_back_to_their_values():
    lines = [train_line(3, 315, 882.87, 18.857, 0.23, 1, 0.49),
             search_line(1, 6, 3626.58, 18.86, 0.03, 0.41, 0.38),
             controller_line(10, {"entropy": 5.832, "reward": 0.0112,
                                  "baseline": 0.0002,
                                  "arc": np.array([0, 3, 1, 3])}),
             "valid_ppl=870.40", "step=82429 test_ppl=624.21",
             "Starting moving_avg"]
    evs = logs.parse_lines(lines)
    assert [e["type"] for e in evs] == ["train", "train", "controller",
                                        "eval", "eval", "averaging",
                                        "summary"]
    assert evs[0]["averaging"] == 1 and evs[0]["step"] == 315
    assert evs[1]["l2_reg"] == 0.03 and evs[1]["train_ppl"] == 3626.58
    assert evs[2]["arc"] == "0 3 1 3" and evs[2]["baseline"] == 0.0002
    assert evs[4]["test_ppl"] == 624.21 and evs[-1]["parsed"] == 6
