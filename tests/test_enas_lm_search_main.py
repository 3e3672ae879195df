"""`python -m src.enas_lm.search`: enas_lm's lines on a tiny corpus, the
controller phase, resume, and bad input."""

import re
import subprocess
import sys

import numpy as np
import tensorflow as tf

from src.enas_lm import search as search_main
from src.enas_lm.arcs import EnasLmArc
from src.enas_lm.controller import EnasLmControllerConfig
from src.enas_lm.log_lines import controller_line, search_line
from src.enas_lm.space import SPACE
from tests.in_process import call_main
from tests.ptb_fixtures import REPO_ROOT, main_env, write_tiny_ptb

STDOUT = REPO_ROOT.parent / "shared" / "reference" / "enas_lm" / "stdout"


def run_search(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "src.enas_lm.search",
                           *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, env=main_env(), timeout=timeout)


def tiny_args(data_path, output_dir):
    return ["--data_path=" + data_path, "--output_dir=" + output_dir,
            "--child_batch_size=4", "--child_bptt_steps=5",
            "--child_hidden_size=8", "--child_vocab_size=40",
            "--controller_num_layers=3", "--controller_hidden_size=8",
            "--controller_num_aggregate=2", "--controller_num_train_steps=3",
            "--log_every=5", "--nodownload"]


def test_a_search_prints_enas_lms_lines_trains_the_controller_and_resumes(
        tmp_path):
    (tmp_path / "ptb").mkdir()
    data = write_tiny_ptb(tmp_path / "ptb")
    out_dir = str(tmp_path / "run")
    result = run_search(*tiny_args(data, out_dir),
                        "--child_num_train_epochs=2")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert "train_size: 552" in lines and "valid_size: 196" in lines
    assert not any(line.startswith(" test_size") for line in lines)
    # Controller: 16 x 32 LSTM, g 1 x 8, w 4 x 8, attention 8 x 8 twice
    # and 8 x 1.
    assert "Controller has 688 params" in lines
    # Child: 40 x 8 embedding, 16 x 16 w_prev, 4 x k x 8 x 16 for k = 1..3.
    assert "All children have 3648 params" in lines
    assert "Each child has 960 params" in lines
    assert "Training controller" in lines
    ctrl = [line for line in lines if line.startswith("step=")]
    # 2 x 3 calls, a line every 10: the first.
    assert len(ctrl) == 1 and re.fullmatch(
        r"step=0     ent=\S+ +ppl=\S+ +rw=\S+ +bl=\S+ +arc=\[\d( \d){5}\]",
        ctrl[0])
    assert sum(line.startswith("valid_ppl=") for line in lines) >= 1
    steps = [line for line in lines if line.startswith("epoch=")]
    assert steps[0].startswith("epoch=0     step=5 ")
    assert steps[-1].startswith("epoch=1     step=50 ")
    # 27 windows of 5 an epoch: 2 epochs are 54 steps, 3 are 81.
    result = run_search(*tiny_args(data, out_dir),
                        "--child_num_train_epochs=3")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resuming from " in result.stdout
    steps = [int(re.search(r"step=(\d+)", line).group(1))
             for line in result.stdout.splitlines()
             if line.startswith("epoch=")]
    assert steps[0] == 55 and steps[-1] == 80


def test_a_random_search_trains_and_validates_with_no_controller_training(
        tmp_path):
    (tmp_path / "ptb").mkdir()
    data = write_tiny_ptb(tmp_path / "ptb")
    out_dir = tmp_path / "run"
    result = run_search(*tiny_args(data, str(out_dir)),
                        "--child_num_train_epochs=2", "--search_policy=random")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert "Controller has 0 params" in lines  # the uniform sampler
    assert "Training controller" not in lines
    assert not any(line.startswith("step=") for line in lines)
    assert sum(line.startswith("valid_ppl=") for line in lines) >= 1
    # The HParams print the controller flags all the same.
    assert '  "controller_num_layers": 3,' in lines
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(
        str(out_dir)))
    names = reader.get_variable_to_shape_map()
    assert not any(n.startswith("controller_optimizer") for n in names)
    assert any(n.startswith("controller/") for n in names)  # the sampler
    result = run_search(*tiny_args(data, str(out_dir)),
                        "--child_num_train_epochs=3", "--search_policy=random")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resuming from " in result.stdout


def test_random_draws_are_legal_cells_covering_every_choice():
    sampler = SPACE.build_controller(SPACE.random_policy(
        EnasLmControllerConfig(num_layers=4, seed=5)))
    seen = set()
    for _ in range(200):
        arc = [int(v) for v in sampler.sample()["arc"].numpy()]
        EnasLmArc.parse(arc, 4)
        seen.update(enumerate(arc))
    # Node k's previous node takes 0 .. k - 1, every function 0 .. 3.
    want = set()
    for k in range(1, 5):
        want.update((2 * (k - 1), p) for p in range(k))
        want.update((2 * (k - 1) + 1, f) for f in range(4))
    assert seen == want


def test_the_log_lines_are_enas_lms_format():
    recorded = STDOUT / "search" / "stdout"
    if not recorded.exists():
        return
    text = recorded.read_text().splitlines()
    line = next(line for line in text if line.startswith("epoch=0     "
                                                         "step=1 "))
    f = dict(re.findall(r"(\S+)=(\S+)", line))
    assert search_line(0, 1, float(f["ppl"]), float(f["lr"]),
                       float(f["|w|"]), float(f["|g|"]),
                       float(f["mins"])) == line
    line = next(line for line in text if line.startswith("step=10 "))
    f = dict(re.findall(r"(\S+)=(\S+)", line))
    arc = re.search(r"arc=\[(.*)\]", line).group(1).split()
    ours = controller_line(10, {"entropy": float(f["ent"]),
                                "reward": float(f["rw"]),
                                "baseline": float(f["bl"]),
                                "arc": np.array(arc, int)})
    # ppl is printed from the reward: compare the other fields exactly.
    assert ours.split(" ppl=")[0] == line.split(" ppl=")[0]
    assert ours.split(" rw=")[1] == line.split(" rw=")[1]


def test_bad_flags_get_one_line_and_exit_status_2(tmp_path, capsys):
    (tmp_path / "ptb").mkdir()
    data = write_tiny_ptb(tmp_path / "ptb")
    for extra, fragment in (
            (["--controller_num_layers=0"],
             "--controller_num_layers must be at least 1"),
            (["--controller_baseline_dec=2"],
             "--controller_baseline_dec=2.0 is not in [0, 1]"),
            (["--child_drop_o=1.5"], "--child_drop_o=1.5 is not a drop rate"),
            (["--search_policy=random", "--reference_checkpoint=x"],
             "--search_policy=random has no controller to start from")):
        out_dir = tmp_path / "bad"
        status = search_main.call(["search"] + tiny_args(data, str(out_dir))
                                  + extra)
        err = capsys.readouterr().err
        assert status == 2 and err.startswith("error: ") and fragment in err
        assert err.count("\n") == 1
        assert not out_dir.exists()


def test_the_flagfiles_parse_and_reach_the_data_check(tmp_path, capfd,
                                                     monkeypatch):
    """Every enas_lm flagfile is valid for its entry point (run in this
    process; the other tests here take `python -m`)."""
    monkeypatch.chdir(REPO_ROOT)
    for entry, name in (("search", "enas_lm_search"),
                        ("search", "enas_lm_search_cpu"),
                        ("fixed", "enas_lm_fixed"),
                        ("fixed", "enas_lm_fixed_cpu")):
        result = call_main(
            "src.enas_lm." + entry,
            ["--flagfile=flags/{}.flags".format(name),
             "--data_path=" + str(tmp_path / "none" / "ptb.pkl"),
             "--nodownload", "--notrain_on_valid",
             "--output_dir=" + str(tmp_path / name)], capfd)
        assert result.returncode == 2, (name, result.stderr[-2000:])
        errors = [line for line in result.stderr.splitlines()
                  if line.startswith("error:")]
        assert len(errors) == 1 and "PTB data" in errors[0], (name, errors)


def test_the_arc_scorer_is_the_validation_perplexity_with_one_trace(
        tmp_path):
    from src import entry_point
    (tmp_path / "ptb").mkdir()
    data = write_tiny_ptb(tmp_path / "ptb")
    fv, _ = entry_point.parse_flags("enas_lm_search", [
        "search", *tiny_args(data, str(tmp_path / "unused"))])
    cfg = SPACE.config_from_flags(fv)
    session = SPACE.open_session(cfg)
    session.build(None)
    scorer = session.arc_scorer()
    arcs = [[0, 0, 1, 2, 2, 3], [0, 3, 0, 1, 1, 0], [0, 1, 1, 1, 0, 2]]
    scores = [scorer(arc) for arc in arcs]
    assert scorer.traces() == 1
    # By hand: exp of the mean window NLL, each window from a zero state.
    nll = [float(np.mean(session.trainer.eval_window(
        x, y, tf.zeros([4, 8]), tf.constant(arcs[1], tf.int32))[0]))
        for x, y in session.valid_windows]
    np.testing.assert_allclose(scores[1], np.exp(np.mean(nll)), rtol=1e-5)
