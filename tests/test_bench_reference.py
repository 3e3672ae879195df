"""src.bench --against_reference: which reference a path is, the flags the
reference driver keeps, the order of the runs, the table's reference
columns; and one real run of the cheapest row (ptb_fixed_cpu) against the
melodyguan/enas runner beside this checkout (skipped without it)."""

import importlib.util
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from src import bench, tool
from src.errors import UserError

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), os.pardir))
ENAS_REF = os.path.normpath(os.path.join(
    ROOT, os.pardir, "shared", "reference", "runner", "enas_ref"))


def load_driver():
    """src/bench_reference.py as a module (it is run as a file, never
    imported as src.bench_reference)."""
    spec = importlib.util.spec_from_file_location("bench_reference_driver",
                                                  bench.REFERENCE_DRIVER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def driver():
    return load_driver()


def make_reference(root, kind):
    for f in bench.REFERENCES[kind][1]:
        path = root / f
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    return str(root)


def result(config, median, **more):
    return {"config": config, "step_s_median": median, "step_s_min": median,
            "step_s_max": median, "build_s": 1.0, "peak_rss_mb": 100.0,
            **more}


# ------------------------------------------------------------ which reference

def test_the_kind_of_a_reference_comes_from_its_files(tmp_path):
    assert bench.reference_kind(make_reference(tmp_path / "a", "enas")) \
        == "enas"
    assert bench.reference_kind(make_reference(tmp_path / "b", "enas_lm")) \
        == "enas_lm"


def test_a_path_that_is_no_reference_is_a_one_line_error(tmp_path):
    with pytest.raises(UserError) as e:
        bench.reference_kind(str(tmp_path))
    message = str(e.value)
    assert "\n" not in message and str(tmp_path) in message
    assert "src/cifar10/main.py" in message
    assert "enas_lm/src/fixed.py" in message


def test_the_cli_refuses_a_wrong_path_and_rounds_without_a_reference(
        tmp_path, capsys):
    assert tool.call(bench.define_flags, bench.main, [
        "bench", "--config=ptb_fixed_cpu",
        "--against_reference=" + str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --against_reference=" + str(tmp_path))
    assert "\n" not in err
    assert tool.call(bench.define_flags, bench.main, [
        "bench", "--config=ptb_fixed_cpu", "--rounds=3"]) == 2
    assert "--rounds" in capsys.readouterr().err


def test_one_path_of_each_kind(tmp_path):
    enas = make_reference(tmp_path / "a", "enas")
    lm = make_reference(tmp_path / "b", "enas_lm")
    assert bench.references_by_kind([enas, lm]) == {"enas": enas,
                                                    "enas_lm": lm}
    with pytest.raises(UserError, match="twice"):
        bench.references_by_kind([enas, make_reference(tmp_path / "c",
                                                       "enas")])


def test_every_cpu_row_but_the_test_pass_has_a_reference():
    for name, b in bench.CONFIGS.items():
        expected = (None if name.endswith("_full")
                    or name == "ptb_test_eval_cpu"
                    else "enas_lm" if name.startswith("enas_lm")
                    else "enas")
        assert b.reference == expected, name
    # The macro search child and the macro controller's reward pass run
    # the reference with its closure bug fixed; nothing else does.
    assert {n for n, b in bench.CONFIGS.items() if b.reference_env} == {
        "macro_search_cpu", "macro_controller_cpu"}


# ------------------------------------------------------------- the driver

def test_the_driver_keeps_the_flags_the_reference_defines(driver):
    args = ["--batch_size=20", "--child_fixed_arc=0 0 0 1",
            "--nochild_lstm_e_skip", "--nocontroller_training",
            "--jit_compile=auto", "--controller_sync_replicas",
            "--train_on_valid"]
    kept, rest = driver.filter_flags(
        args, defined={"batch_size", "child_fixed_arc", "controller_training",
                       "controller_sync_replicas"},
        booleans={"controller_training", "controller_sync_replicas"})
    assert kept == ["--batch_size=20", "--child_fixed_arc=0 0 0 1",
                    "--nocontroller_training", "--controller_sync_replicas"]
    assert rest == ["--nochild_lstm_e_skip", "--jit_compile=auto",
                    "--train_on_valid"]


def test_enas_lm_hard_coded_hyperparameters_come_from_our_flags(driver):
    assert driver.hparam_candidates([
        "--child_hidden_size=32", "--controller_num_aggregate=1",
        "--train_on_valid", "--nochild_x"]) == {
            "hidden_size": "32", "controller_num_aggregate": "1",
            "x": False}
    assert driver.hparam_value(200, "32") == 32
    assert driver.hparam_value(0.1, "0.25") == 0.25
    assert driver.hparam_value(True, "false") is False


def test_the_driver_draws_our_synthetic_data(driver):
    ptb = bench.synthetic_ptb(None, vocab_size=50, words=(300, 200, 100))
    train, valid, test = driver.synthetic_ptb((300, 200, 100), 50)
    for ours, theirs in ((ptb.train, train), (ptb.valid, valid),
                         (ptb.test, test)):
        np.testing.assert_array_equal(ours, theirs)
    cfg = types.SimpleNamespace(batch_size=32, num_valids=16)
    data = bench.synthetic_cifar(cfg)
    images, labels = driver.synthetic_cifar(
        tuple(bench.cifar_sizes(cfg).values()))
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(data.labels[split], labels[split])
        np.testing.assert_allclose(
            (data.images[split] / np.float32(255) - data.mean) / data.std,
            images[split], rtol=1e-6)


def test_the_driver_is_given_the_configuration_and_its_switches():
    options = bench.BenchOptions(warmup=1, steps=2)
    cmd = bench.reference_command("macro_controller_cpu", options, "out.json",
                                  (2000, 164, 100))
    assert cmd[:2] == [sys.executable, bench.REFERENCE_DRIVER]
    own, flags = cmd[:cmd.index("--")], cmd[cmd.index("--") + 1:]
    assert {"--entry=cifar10", "--timed=controller", "--warmup=1",
            "--steps=2", "--data_sizes=2000,164,100",
            "--json=out.json"} <= set(own)
    assert flags[:2] == ["--data_format=NHWC", "--search_for=macro"]
    assert flags[-2:] == ["--nocontroller_sync_replicas",
                          "--jit_compile=auto"]
    env = bench.reference_env("macro_search_cpu", "/ref")
    assert env["PYTHONPATH"] == "/ref" and env["ENAS_REF_FIX_CLOSURE"] == "1"
    assert "ENAS_REF_FIX_CLOSURE" not in bench.reference_env(
        "micro_controller_cpu", "/ref")
    assert bench.reference_data_sizes("ptb_fixed_cpu", options) == \
        bench.PTB_WORDS


# ------------------------------------------------------ rounds and the table

def test_rounds_interleave_ours_then_the_reference():
    assert bench.interleaving(2, True) == [
        (1, "ours"), (1, "reference"), (2, "ours"), (2, "reference")]
    assert bench.interleaving(3, False) == [(1, "ours")]


def test_each_side_keeps_its_best_round(monkeypatch):
    calls = []
    medians = {("ours", 1): 0.5, ("ours", 2): 0.4,
               ("reference", 1): 0.7, ("reference", 2): 0.8}

    def fake(side):
        def run(name, *args):
            calls.append((name, side))
            n = sum(1 for c in calls if c == (name, side))
            return result(name, medians[side, n]), None
        return run

    monkeypatch.setattr(bench, "run_ours", fake("ours"))
    monkeypatch.setattr(bench, "run_reference", fake("reference"))
    monkeypatch.setattr(bench, "reference_data_sizes", lambda *a: (1, 2, 3))
    entries = bench.compare(["ptb_fixed_cpu", "macro_fixed_cpu"],
                            bench.BenchOptions(), {"enas": "/ref"}, 2,
                            progress=lambda line: None)
    assert calls == [(n, s) for n in ("ptb_fixed_cpu", "macro_fixed_cpu")
                     for s in ("ours", "reference", "ours", "reference")]
    e = entries[0]
    assert e["ours"]["step_s_median"] == 0.4
    assert e["reference"]["step_s_median"] == 0.7
    assert e["ratio_ours_to_reference"] == pytest.approx(0.4 / 0.7)
    assert [(r["round"], r["ours"]["step_s_median"],
             r["reference"]["step_s_median"]) for r in e["rounds"]] == [
        (1, 0.5, 0.7), (2, 0.4, 0.8)]


def test_a_row_without_its_reference_runs_once_and_prints_dashes(
        monkeypatch):
    runs = []
    monkeypatch.setattr(bench, "run_ours",
                        lambda name, o: runs.append(name) or
                        (result(name, 0.1), None))
    entries = bench.compare(["enas_lm_fixed_cpu", "macro_fixed_full"],
                            bench.BenchOptions(), {"enas": "/ref"}, 2,
                            progress=lambda line: None)
    assert runs == ["enas_lm_fixed_cpu", "macro_fixed_full"]
    assert [e["reference"] for e in entries] == [None, None]
    table = bench.against_table(entries, bench.BenchOptions(),
                                {"enas": "/ref"}, 2)
    for line in table.splitlines()[-2:]:
        assert line.split()[-4:] == ["-"] * 4


def test_the_row_without_and_with_reference_columns():
    ours = result("ptb_fixed_cpu", 0.05, gating_ratio=1.1, jit_compile=True,
                  mixed_precision=False)
    row = bench.format_row(ours)
    # Without --against_reference the row is the table's as before.
    assert row == bench.format_row(ours, None, against=False)
    assert len(row.split()) == len(bench.HEADER.split())
    with_ref = bench.format_row(ours, result("ptb_fixed_cpu", 0.1,
                                             build_s=2.5, peak_rss_mb=754.4),
                                against=True)
    assert with_ref.startswith(row)
    assert with_ref[len(row):].split() == ["0.1000", "0.50", "2.5", "754"]
    assert len(with_ref.split()) == len(bench.AGAINST_HEADER.split())
    assert "ENAS_REF_FIX_CLOSURE=1" in bench.against_table(
        [{"config": "macro_search_cpu", "ours": result("macro_search_cpu",
                                                       0.1),
          "reference": None,
          "reference_env": {"ENAS_REF_FIX_CLOSURE": "1"}}],
        bench.BenchOptions(), {"enas": "/ref"}, 2)


# ------------------------------------------------------------- a real run

@pytest.mark.skipif(not os.path.isdir(ENAS_REF),
                    reason="no reference runner beside this checkout")
def test_ptb_fixed_against_the_reference(tmp_path):
    out_json = tmp_path / "out.json"
    out = subprocess.run(
        [sys.executable, "-m", "src.bench", "--config=ptb_fixed_cpu",
         "--against_reference=" + ENAS_REF, "--rounds=1", "--warmup=1",
         "--steps=2", "--json=" + str(out_json)],
        cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    row = [l for l in out.stdout.splitlines()
           if l.startswith("ptb_fixed_cpu")]
    assert len(row) == 1 and "-" not in row[0].split()[-4:]
    e = json.loads(out_json.read_text())
    assert e["reference_kind"] == "enas" and len(e["rounds"]) == 1
    ref = e["reference"]
    assert ref["reference"] == "melodyguan/enas" and len(
        ref["step_times"]) == 2
    assert "train_op" in ref["description"]
    # The reference kept its own flags and dropped ours.
    assert "--child_lstm_hidden_size=64" in ref["flags_kept"]
    assert "--jit_compile=auto" in ref["flags_dropped"]
    assert ref["queues_full"]
    assert e["ratio_ours_to_reference"] == pytest.approx(
        e["ours"]["step_s_median"] / ref["step_s_median"])
