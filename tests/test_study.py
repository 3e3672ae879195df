"""The search study (`python -m src.study`, issue 16).

The rank correlations against values computed by hand; the selection of
the arcs to retrain; the bad study flags (one line, status 2, nothing
written); and one tiny PTB study end to end through the real
`flags/study_ptb_cpu.flags` (one seed per policy, the tiny corpus of
tests/ptb_fixtures.py, 5 candidates, top 1 + 1 spread, one retraining
epoch), run in a subprocess with two jobs at a time. Its ENAS search is
killed with SIGKILL after its first checkpoint: the study names the job,
finishes the random policy's jobs and exits with status 1; the same
command again skips the finished jobs, resumes the search from its
checkpoint and finishes. Then every output file is checked against the
others: study.json against the jobs' done.json and scores.json, the
summary recomputed from the arcs, the tau and rho of study.md recomputed
from study.json, study.png's size, jobs.txt's lines, and one traced
evaluation for every scored candidate.

The enas_lm space (two entry points, its own flag names) the same way: a
tiny study through `flags/study_enas_lm_cpu.flags` (one seed per policy,
one search epoch, 4 candidates, 1 + 1 retrained for 1 epoch), its files
checked against each other by the same helpers, its curves read from
enas_lm's lines; and its bad flags.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from src import study, study_report
from src.study_report import kendall_tau, spearman_rho
from tests.ptb_fixtures import REPO_ROOT, main_env, write_tiny_ptb

# -- rank correlations ----------------------------------------------------------


def test_kendall_tau_b_and_spearman_rho_match_values_computed_by_hand():
    # 10 pairs: 7 concordant, 3 discordant: tau = 4 / 10; rank
    # differences -2, 1, 1, -1, 1: rho = 1 - 6 * 8 / (5 * 24).
    x, y = [1, 2, 3, 4, 5], [3, 1, 2, 5, 4]
    assert kendall_tau(x, y) == pytest.approx(0.4, abs=1e-12)
    assert spearman_rho(x, y) == pytest.approx(0.6, abs=1e-12)
    # Ties: 3 concordant, 1 discordant, one pair tied in x and one in y:
    # tau-b = 2 / sqrt(5 * 5); average ranks [1, 2.5, 2.5, 4] and
    # [1, 4, 2.5, 2.5]: rho = 2.25 / 4.5.
    x, y = [1, 2, 2, 3], [1, 3, 2, 2]
    assert kendall_tau(x, y) == pytest.approx(0.4, abs=1e-12)
    assert spearman_rho(x, y) == pytest.approx(0.5, abs=1e-12)


def test_the_correlations_are_one_for_the_same_order_and_minus_one_reversed():
    x = [0.1, 0.5, 0.2, 0.9]
    assert kendall_tau(x, [2 * v for v in x]) == pytest.approx(1.0)
    assert spearman_rho(x, [v ** 3 for v in x]) == pytest.approx(1.0)
    assert kendall_tau(x, [-v for v in x]) == pytest.approx(-1.0)
    assert spearman_rho(x, [-v for v in x]) == pytest.approx(-1.0)


def test_the_correlations_are_none_when_undefined():
    assert kendall_tau([1.0], [2.0]) is None
    assert spearman_rho([], []) is None
    assert kendall_tau([1, 2, 3], [5, 5, 5]) is None
    assert spearman_rho([4, 4, 4], [1, 2, 3]) is None


def test_average_ranks_share_the_mean_rank_of_ties():
    np.testing.assert_allclose(study_report.average_ranks([3, 1, 3, 2, 3]),
                               [4, 1, 4, 2, 4])


# -- the selection ---------------------------------------------------------------


def test_the_selection_is_the_top_k_then_evenly_spaced_ranks_down_to_the_worst():
    cands = [{"arc": str(i), "shared_score": float(s)}
             for i, s in enumerate([5, 1, 9, 3, 7, 2, 8, 6, 4, 0])]
    # Perplexity: lower is better. Ranked arcs: 9 1 5 3 8 0 7 4 6 2.
    picked = study.select(cands, 2, 2, higher_is_better=False)
    assert [c["arc"] for c in picked] == ["9", "1", "7", "2"]
    # Accuracy: higher is better; the spread ends with the worst.
    picked = study.select(cands, 1, 3, higher_is_better=True)
    assert [c["arc"] for c in picked][0] == "2"
    assert picked[-1]["arc"] == "9"
    assert len({c["arc"] for c in picked}) == 4
    assert len(study.select(cands[:3], 2, 5, True)) == 3


# -- bad flags -------------------------------------------------------------------

GOOD = ["--flagfile=flags/study_ptb_cpu.flags"]


@pytest.mark.parametrize("extra, message", [
    (["--policies=enas,greedy"], "--policies: 'greedy' is unknown"),
    (["--policies=enas,enas"], "names a policy twice"),
    (["--top_k=5", "--candidates=4"], "--top_k=5 is more than "
     "--candidates=4"),
    (["--top_k=3", "--spread=2", "--candidates=4"], "plus --spread=2"),
    (["--seeds=0"], "--seeds must be at least 1"),
    (["--final_flagfile=flags/cifar10_macro_final_cpu.flags"],
     "is a flagfile of the macro space, but the search is of the ptb"),
    (["--space=micro"], "searches the ptb space, not --space=micro"),
    (["--search_flagfile=flags/ptb_final_cpu.flags"],
     "trains a fixed arc"),
    (["--final_overrides=--child_rhn_depth=5"],
     "the searched arcs do not fit"),
    (["--search_overrides=--nocontroller_training"],
     "would never train its controller"),
    (["--search_overrides=--no_such_flag=1"], "Unknown command line flag"),
    (["--search_flagfile=flags/nowhere.flags"],
     "--search_flagfile: cannot read --flagfile=flags/nowhere.flags"),
    (["--no_such_study_flag"], "Unknown command line flag"),
    (["--job=enas/seed_9/search"], "is not a job of this study"),
    (["--job=enas/seed_1/score"], "needs enas/seed_1/search first"),
    (["--gpus=0,1", "--parallel=3"], "--parallel=3 is more than the 2"),
])
def test_a_bad_study_flag_is_one_error_line_and_nothing_is_written(
        tmp_path, capsys, extra, message):
    assert_one_error_line(tmp_path, capsys, GOOD + extra, message)


def assert_one_error_line(tmp_path, capsys, args, message):
    out = tmp_path / "study"
    status = study.call(["study"] + args + ["--output_dir=" + str(out)])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert status == 2
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert message in lines[0]
    assert not out.exists()


GOOD_LM = ["--flagfile=flags/study_enas_lm_cpu.flags"]


@pytest.mark.parametrize("extra, message", [
    (["--final_flagfile=flags/ptb_final_cpu.flags"],
     "--final_flagfile=flags/ptb_final_cpu.flags is a flagfile of the ptb "
     "space, but the search is of the enas_lm space"),
    (["--search_flagfile=flags/enas_lm_fixed_cpu.flags"],
     "trains a fixed arc (--fixed_arc): the study needs a search"),
    (["--space=ptb"], "searches the enas_lm space, not --space=ptb"),
    (["--search_overrides=--num_epochs=2"],
     "--search_flagfile=flags/enas_lm_search_cpu.flags: Unknown command "
     "line flag 'num_epochs'"),
    (["--final_overrides=--child_fixed_arc=0 1"],
     "--final_flagfile=flags/enas_lm_fixed_cpu.flags: Unknown command line "
     "flag 'child_fixed_arc'"),
    (["--search_flagfile=flags/ptb_search_cpu.flags"],
     "--final_flagfile=flags/enas_lm_fixed_cpu.flags is a flagfile of the "
     "enas_lm space, but the search is of the ptb space"),
])
def test_a_bad_enas_lm_study_flag_is_one_error_line_and_nothing_is_written(
        tmp_path, capsys, extra, message):
    assert_one_error_line(tmp_path, capsys, GOOD_LM + extra, message)


def test_a_retraining_stopped_by_the_nan_guard_is_read_as_diverged(tmp_path):
    log = tmp_path / "job.log"
    stop = ("error: the child's gradient norm is inf at step 16 (epoch 0) "
            "(arc 0 0 1 1 2); stopping without saving. The last good "
            "checkpoint is none (no epoch completed)\n")
    log.write_text("== first attempt\n" + stop)
    assert study.diverged(str(log)) == ("the child's gradient norm is inf "
                                        "at step 16 (epoch 0)")
    # Only the last attempt counts; other errors are failures.
    log.write_text("== first attempt\n" + stop + "\n== second\nfine\n")
    assert study.diverged(str(log)) is None
    log.write_text("== one\nerror: cannot create --output_dir=x\n")
    assert study.diverged(str(log)) is None


def test_job_lines_leave_out_how_the_jobs_run_here_in_either_flag_form():
    assert study.job_line_args([
        "--flagfile=f", "--parallel", "2", "--print_jobs", "--gpus=0,1",
        "--job", "enas/seed_1/search", "--noprint_jobs", "--seeds=1",
        "--final_overrides=--parallel"]) == [
            "--flagfile=f", "--seeds=1", "--final_overrides=--parallel"]


# -- a tiny study end to end -----------------------------------------------------

TINY = ("--batch_size=4 --child_bptt_steps=5 --child_lstm_hidden_size=8 "
        "--child_rhn_depth=3 --log_every=5 --nodownload")
CANDIDATES, TOP_K, SPREAD = 5, 1, 1


def study_args(data, out):
    return ["--flagfile=flags/study_ptb_cpu.flags", "--output_dir=" + out,
            "--seeds=1", "--candidates={}".format(CANDIDATES),
            "--top_k={}".format(TOP_K), "--spread={}".format(SPREAD),
            "--retrain_epochs=1", "--parallel=2",
            "--search_overrides=--data_path={} {} --num_epochs=4 "
            "--controller_train_steps=1 --controller_num_aggregate=2"
            .format(data, TINY),
            "--final_overrides=--data_path={} {} --jit_compile=false"
            .format(data, TINY)]


def study_command(args):
    return [sys.executable, "-m", "src.study"] + args


def kill_after_first_checkpoint(folder, proc, timeout=240):
    """SIGKILLs the job running in `folder` once it has saved a
    checkpoint (its running.pid names it); returns the killed pid."""
    deadline = time.time() + timeout
    checkpoint = os.path.join(folder, "checkpoint")
    pid_file = os.path.join(folder, study.RUNNING)
    while time.time() < deadline:
        if os.path.exists(os.path.join(folder, study.DONE)):
            pytest.fail("the search finished before it could be killed")
        if proc.poll() is not None:
            pytest.fail("the study ended early:\n" + proc.stdout.read())
        if os.path.exists(checkpoint) and os.path.exists(pid_file):
            with open(pid_file) as f:
                pid = int(f.read())
            os.kill(pid, signal.SIGKILL)
            return pid
        time.sleep(0.02)
    pytest.fail("no checkpoint in {} after {} s".format(folder, timeout))


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    (root / "ptb").mkdir()
    data = write_tiny_ptb(root / "ptb")
    out = str(root / "study")
    args = study_args(data, out)
    first = subprocess.Popen(study_command(args), cwd=REPO_ROOT,
                             env=main_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    kill_after_first_checkpoint(os.path.join(out, "enas", "seed_1",
                                             "search"), first)
    first_out, _ = first.communicate(timeout=300)
    finished = {}
    for kind in ("search", "score"):
        path = os.path.join(out, "random", "seed_1", kind, study.DONE)
        finished[path] = os.path.getmtime(path) if os.path.exists(path) \
            else None
    second = subprocess.run(study_command(args), cwd=REPO_ROOT,
                            env=main_env(), capture_output=True, text=True,
                            timeout=300)
    jobs = subprocess.run(study_command(args + ["--print_jobs"]),
                          cwd=REPO_ROOT, env=main_env(), capture_output=True,
                          text=True, timeout=60)
    return {"out": out, "args": args, "first": (first.returncode, first_out),
            "second": second, "finished": finished, "jobs": jobs}


def load(out, name):
    with open(os.path.join(out, name)) as f:
        return json.load(f) if name.endswith(".json") else f.read()


def test_a_killed_job_is_named_and_the_jobs_that_do_not_need_it_finish(
        tiny_study):
    status, text = tiny_study["first"]
    assert status == 1, text
    assert "enas/seed_1/search: FAILED" in text
    assert "killed by signal 9" in text
    assert "enas/seed_1/score: not run, it needs enas/seed_1/search" in text
    for kind in ("search", "score", "retrain_0", "retrain_1"):
        assert "random/seed_1/{}: done in".format(kind) in text, text
    assert "did not finish: enas/seed_1/search" in text


def test_running_the_study_again_skips_finished_jobs_and_resumes_the_killed_one(
        tiny_study):
    second = tiny_study["second"]
    assert second.returncode == 0, second.stdout + second.stderr
    for kind in ("search", "score", "retrain_0", "retrain_1"):
        assert ("random/seed_1/{}: done before, skipped".format(kind)
                in second.stdout)
    assert "enas/seed_1/search: started" in second.stdout
    for path, mtime in tiny_study["finished"].items():
        assert mtime is not None and os.path.getmtime(path) == mtime
    stdout = load(tiny_study["out"], "enas/seed_1/search/stdout")
    assert "Resuming from" in stdout
    log = load(tiny_study["out"], "enas/seed_1/search/job.log")
    assert log.count("== ") == 2  # two attempts, one log


def test_study_json_holds_every_candidate_and_the_retrained_scores_of_the_jobs(
        tiny_study):
    check_study_json(tiny_study["out"], CANDIDATES, TOP_K + SPREAD,
                     "--child_fixed_arc", "--num_epochs")


def check_study_json(out, candidates, retrained_per_seed, fixed_arc_flag,
                     epochs_flag):
    """study.json against the jobs' scores.json and done.json, one seed
    per policy: every candidate, one trace per scoring job, the retrained
    arcs (the best and the worst among them) with the retraining's flags."""
    report = load(out, "study.json")
    assert report["higher_is_better"] is False
    assert report["metric"] == "perplexity"
    arcs = report["arcs"]
    assert all(tuple(r) == study_report.ARC_FIELDS for r in arcs)
    for policy in ("enas", "random"):
        mine = [r for r in arcs if r["policy"] == policy]
        scores = load(out, "{}/seed_1/score/scores.json".format(policy))
        assert scores["policy"] == policy
        assert [(r["arc"], r["shared_score"]) for r in mine] == [
            (c["arc"], c["shared_score"]) for c in scores["candidates"]]
        assert len(mine) == candidates == scores["distinct"]
        # One trace of the evaluation for every candidate.
        assert scores["traces"] == 1
        retrained = [r for r in mine if r["retrained_valid"] is not None]
        assert len(retrained) == retrained_per_seed
        assert all(r["retrained_test"] is not None for r in retrained)
        ranked = sorted(mine, key=lambda r: r["shared_score"])
        assert ranked[0] in retrained and ranked[-1] in retrained
        for r in retrained:
            folder = os.path.join(out, policy, "seed_1",
                                  "arc_" + study.arc_hash(r["arc"]))
            done = load(folder, study.DONE)["result"]
            assert (done["arc"], done["valid"], done["test"]) == (
                r["arc"], r["retrained_valid"], r["retrained_test"])
            flags_txt = load(folder, "flags.txt")
            assert "{}={}\n".format(fixed_arc_flag, r["arc"]) in flags_txt
            assert "{}=1\n".format(epochs_flag) in flags_txt
    return report


def test_the_summary_is_recomputed_from_the_arcs(tiny_study):
    check_summary(tiny_study["out"])


def check_summary(out):
    report = load(out, "study.json")
    for policy, sm in report["summary"].items():
        done = [r for r in report["arcs"] if r["policy"] == policy
                and r["retrained_valid"] is not None]
        tau = kendall_tau([r["shared_score"] for r in done],
                          [r["retrained_valid"] for r in done])
        rho = spearman_rho([r["shared_score"] for r in done],
                           [r["retrained_valid"] for r in done])
        assert sm["kendall_tau"] == tau and sm["spearman_rho"] == rho
        best = min(done, key=lambda r: r["retrained_valid"])
        assert sm["best_valid_mean"] == best["retrained_valid"]
        assert sm["best_test_mean"] == best["retrained_test"]
        assert sm["best_valid_std"] is None  # one seed


def test_study_md_prints_the_tau_and_rho_of_study_json(tiny_study):
    check_study_md(tiny_study["out"])


def check_study_md(out):
    report = load(out, "study.json")
    table = study_report.parse_summary_table(load(out, "study.md"))
    assert set(table) == {"enas", "random"}
    for policy, (tau, rho) in table.items():
        done = [r for r in report["arcs"] if r["policy"] == policy
                and r["retrained_valid"] is not None]
        want_tau = kendall_tau([r["shared_score"] for r in done],
                               [r["retrained_valid"] for r in done])
        want_rho = spearman_rho([r["shared_score"] for r in done],
                                [r["retrained_valid"] for r in done])
        for got, want in ((tau, want_tau), (rho, want_rho)):
            assert (got is None) == (want is None)
            if want is not None:
                assert got == pytest.approx(want, abs=5e-5)


def test_the_search_curves_have_enas_rewards_and_the_random_arcs_scores(
        tiny_study):
    curves = load(tiny_study["out"], "study.json")["curves"]
    enas, random = curves["enas"]["1"], curves["random"]["1"]
    assert [r["epoch"] for r in enas] == [1, 2, 3, 4]
    assert [r["epoch"] for r in random] == [1, 2, 3, 4]
    assert all(r["controller_reward"] is not None
               and r["controller_entropy"] > 0 for r in enas)
    assert all(r["controller_reward"] is None for r in random)
    assert all(r["printed_mean"] > 0 for r in enas + random)


def test_study_png_is_a_picture_of_three_panels(tiny_study):
    with open(os.path.join(tiny_study["out"], "study.png"), "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width = int.from_bytes(head[16:20], "big")
    height = int.from_bytes(head[20:24], "big")
    assert (width, height) == (1600, 480)


def test_print_jobs_writes_every_job_as_one_command_line(tiny_study):
    assert tiny_study["jobs"].returncode == 0
    text = load(tiny_study["out"], "jobs.txt")
    lines = [l for l in text.splitlines() if l and not l.startswith("#")]
    names = [j.name for j in study.all_jobs(study.Study(
        space="ptb", search_flagfile="", search_overrides=[],
        final_flagfile="", final_overrides=[], policies=["enas", "random"],
        seeds=[1],
        candidates=CANDIDATES, top_k=TOP_K, spread=SPREAD, retrain_epochs=1,
        parallel=1, output_dir=""))]
    assert len(lines) == len(names) == 8
    for line, name in zip(lines, names):
        cd, command = line.split(" && ", 1)
        argv = shlex.split(command)
        assert argv[1:3] == ["-m", "src.study"]
        assert argv[-1] == "--job=" + name
        assert "--parallel=2" not in argv and "--print_jobs" not in argv
    # The retrainings' entry-point commands are known once scored.
    assert text.count("#   runs: python -m src.ptb.main") == 6


# -- a tiny enas_lm study end to end ---------------------------------------------

# enas_lm's flags at a tiny size on the corpus of tests/ptb_fixtures.py (27
# windows of 5 a pass; with seed 1 the first pass of random-length windows
# ends at step 25, inside the epoch's 27 steps, so one epoch trains the
# controller once and validates once).
LM_TINY = ("--notrain_on_valid --nodownload --child_batch_size=4 "
           "--child_bptt_steps=5 --child_hidden_size=8 --child_vocab_size=40 "
           "--log_every=5")
LM_CANDIDATES = 4


def lm_study_args(data, out):
    return ["--flagfile=flags/study_enas_lm_cpu.flags", "--output_dir=" + out,
            "--seeds=1", "--candidates={}".format(LM_CANDIDATES),
            "--top_k=1", "--spread=1", "--retrain_epochs=1", "--parallel=2",
            "--search_overrides=--data_path={} {} --child_num_train_epochs=1 "
            "--controller_num_layers=3 --controller_hidden_size=8 "
            "--controller_num_aggregate=2 --controller_num_train_steps=3"
            .format(data, LM_TINY),
            "--final_overrides=--data_path={} {}".format(data, LM_TINY)]


@pytest.fixture(scope="module")
def tiny_lm_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm_study")
    (root / "ptb").mkdir()
    data = write_tiny_ptb(root / "ptb")
    out = str(root / "study")
    args = lm_study_args(data, out)
    run = subprocess.run(study_command(args), cwd=REPO_ROOT, env=main_env(),
                         capture_output=True, text=True, timeout=300)
    return {"out": out, "run": run}


def test_an_enas_lm_study_runs_its_two_entry_points_with_their_own_flags(
        tiny_lm_study):
    run = tiny_lm_study["run"]
    assert run.returncode == 0, run.stdout + run.stderr
    out = tiny_lm_study["out"]
    for policy in ("enas", "random"):
        search = load(out, "{}/seed_1/search/{}".format(policy, study.DONE))
        assert search["command"][:2] == ["-m", "src.enas_lm.search"]
        assert "--search_policy=" + policy in search["command"]
        flags_txt = load(out, "{}/seed_1/search/flags.txt".format(policy))
        assert "--search_policy={}\n".format(policy) in flags_txt
        assert "--seed=1\n" in flags_txt
        assert "--controller_num_layers=3\n" in flags_txt
        retrained = [load(os.path.join(out, policy, "seed_1", d), study.DONE)
                     for d in os.listdir(os.path.join(out, policy, "seed_1"))
                     if d.startswith("arc_")]
        assert len(retrained) == 2
        for done in retrained:
            assert done["command"][:2] == ["-m", "src.enas_lm.fixed"]
            assert "--fixed_arc=" + done["result"]["arc"] in done["command"]
            assert "--nocontroller_training" not in done["command"]
            # Three nodes: a previous node and a function each.
            assert len(done["result"]["arc"].split()) == 6


def test_an_enas_lm_study_json_matches_its_scores_and_retrainings(
        tiny_lm_study):
    report = check_study_json(tiny_lm_study["out"], LM_CANDIDATES, 2,
                              "--fixed_arc", "--child_num_train_epochs")
    assert report["settings"]["space"] == "enas_lm"
    assert report["metric"] == "perplexity"
    assert report["higher_is_better"] is False
    check_summary(tiny_lm_study["out"])
    check_study_md(tiny_lm_study["out"])


def test_an_enas_lm_study_has_the_curves_its_lines_give_and_says_what_they_lack(
        tiny_lm_study):
    report = load(tiny_lm_study["out"], "study.json")
    enas, random = (report["curves"][p]["1"] for p in ("enas", "random"))
    assert [r["epoch"] for r in enas] == [1] == [r["epoch"] for r in random]
    assert enas[0]["controller_reward"] > 0
    assert enas[0]["controller_entropy"] > 0
    assert random[0]["controller_reward"] is None
    for row in enas + random:
        assert row["printed_mean"] is None  # enas_lm prints no arcs
        assert row["search_valid"] > 1  # its valid_ppl
    assert any("print no architectures" in n and "enas/seed_1" in n
               and "random/seed_1" in n for n in report["notes"])
    assert "search's validation" in load(tiny_lm_study["out"], "study.md")


def test_search_curves_read_enas_lms_lines_across_a_resume():
    from src.logs import parse_lines
    train = ("epoch={:<5d} step={:<7d} ppl=900.00    lr=20.00   |w|=1.00   "
             "|g|=0.50   mins=0.10")
    ctrl = ("step={:<5d} ent={:<7.3f} ppl=900.00  rw={:<7.4f} bl=0.0100  "
            "arc=[0 1 0 2]")
    text = [train.format(0, 20), "-" * 80, "Training controller",
            ctrl.format(0, 7.0, 0.1), ctrl.format(10, 6.0, 0.3),
            "valid_ppl=800.00",
            train.format(1, 140), "Training controller",
            ctrl.format(0, 5.0, 0.2), "valid_ppl=700.00",
            # Killed in the third epoch's controller phase; resumed from
            # the checkpoint after the second.
            train.format(2, 240), "Training controller",
            ctrl.format(0, 4.0, 0.9),
            "Resuming from /x/model.ckpt-2 (epoch 2, step 220)",
            train.format(2, 240), "Training controller",
            ctrl.format(0, 4.5, 0.4), "valid_ppl=650.00"]
    rows = study_report.search_curves(parse_lines(text), [])
    assert rows == [
        {"epoch": 1, "controller_reward": pytest.approx(0.2),
         "controller_entropy": pytest.approx(6.5), "printed_mean": None,
         "search_valid": 800.0},
        {"epoch": 2, "controller_reward": pytest.approx(0.2),
         "controller_entropy": pytest.approx(5.0), "printed_mean": None,
         "search_valid": 700.0},
        {"epoch": 3, "controller_reward": pytest.approx(0.4),
         "controller_entropy": pytest.approx(4.5), "printed_mean": None,
         "search_valid": 650.0}]


# -- the scheduler ---------------------------------------------------------------


class StubPlan:
    """A Plan whose jobs are short Python processes: `fail` names the jobs
    that exit with status 3; each prints the GPU it sees."""

    def __init__(self, root, fail=()):
        self.root = root
        self.fail = set(fail)
        self.done = {}
        self.seen = []
        self.busy = []      # GPUs of the jobs running now
        self.shared = False  # two running jobs saw one GPU

    def folder(self, job):
        return os.path.join(self.root, job.name)

    def done_marker(self, job):
        return self.done.get(job.name)

    def start(self, job, gpu=None):
        env = dict(os.environ)
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        code = ("import os, sys, time; time.sleep(0.3); "
                "print(os.environ.get('CUDA_VISIBLE_DEVICES')); "
                "sys.exit({})".format(3 if job.name in self.fail else 0))
        proc = subprocess.Popen([sys.executable, "-c", code], env=env,
                                stdout=subprocess.PIPE, text=True)
        proc.study_started = time.time()
        self.seen.append((job.name, gpu))
        if gpu is not None:
            self.shared |= gpu in self.busy
            self.busy.append(gpu)
        return proc

    def finish(self, job, proc):
        out = proc.stdout.read().strip()
        proc.stdout.close()
        if out in self.busy:
            self.busy.remove(out)
        if proc.returncode:
            return "exit status {}".format(proc.returncode)
        self.done[job.name] = {"gpu": out}
        return None


def stub_jobs(seeds=(1, 2)):
    settings = study.Study(
        space="ptb", search_flagfile="", search_overrides=[],
        final_flagfile="", final_overrides=[],
        policies=["enas", "random"], seeds=list(seeds), candidates=2,
        top_k=1, spread=0, retrain_epochs=1, parallel=1, output_dir="")
    return study.all_jobs(settings)


def test_a_failed_job_stops_only_the_jobs_that_need_it(tmp_path):
    plan = StubPlan(str(tmp_path), fail={"enas/seed_1/score"})
    lines = []
    problems = study.run_jobs(plan, stub_jobs(), 2, log=lines.append)
    assert problems == {
        "enas/seed_1/score": "exit status 3",
        "enas/seed_1/retrain_0": "not run: it needs enas/seed_1/score"}
    assert len(plan.done) == len(stub_jobs()) - 2
    assert "enas/seed_1/score: FAILED: exit status 3" in lines
    # Run again: the finished jobs are skipped, the failed one is redone.
    plan.fail = set()
    plan.seen = []
    assert study.run_jobs(plan, stub_jobs(), 2, log=lines.append) == {}
    assert [name for name, _ in plan.seen] == ["enas/seed_1/score",
                                               "enas/seed_1/retrain_0"]


def test_each_running_job_sees_a_gpu_of_its_own(tmp_path):
    plan = StubPlan(str(tmp_path))
    jobs = stub_jobs(seeds=(1, 2, 3))
    assert study.run_jobs(plan, jobs, 2, log=lambda *_: None,
                          gpus=["4", "7"]) == {}
    assert {gpu for _, gpu in plan.seen} == {"4", "7"}
    assert not plan.shared
    assert all(d["gpu"] in ("4", "7") for d in plan.done.values())
    assert len(plan.done) == len(jobs)


# -- scoring: one trace for every arc ---------------------------------------------


def test_cifar_scoring_reuses_one_trace_for_every_arc(fake_cifar):
    from src import entry_point, registry
    from src.cifar10 import data as cifar_data
    from src.cifar10.session import ValidationAccuracy

    space = registry.space("macro")
    fv, _ = entry_point.parse_flags("cifar10", [
        "test", "--search_for=macro", "--data_path=" + fake_cifar,
        "--output_dir=unused", "--num_valids=30", "--child_num_layers=3",
        "--child_out_filters=4", "--child_num_branches=6",
        "--controller_search_whole_channels"])
    cfg = space.config_from_flags(fv)
    data = cifar_data.read_data(fake_cifar, num_valids=30, download=False,
                                log=lambda *_: None)
    child = space.build_child(cfg.child)
    space.build_variables(child)
    scorer = ValidationAccuracy(child, data, cfg.eval_training_mode)
    arcs = [[0, 1, 0, 2, 1, 1], [5, 4, 1, 3, 0, 1], [2, 2, 0, 1, 0, 0]]
    scores = [scorer(arc) for arc in arcs]
    # Three arcs (each a tensor input), one trace.
    assert scorer.traces() == 1
    assert all(s * 30 == round(s * 30) and 0 <= s <= 1 for s in scores)
    assert scorer.size == 30
