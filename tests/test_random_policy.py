"""`--search_policy=random` (src.random_policy): every arc position is drawn
uniformly among its legal values, for macro (whole channel and per
channel), micro and PTB; the search runs without a controller or a
controller phase, prints and records 10 architectures and resumes exactly;
with --child_fixed_arc (or --reference_checkpoint) it is a one-line error.

The uniformity test is Pearson's chi-square on 2000 seeded draws: per
position (per-channel macro: per branch, on the joint (start, count) pair,
since the count's range depends on the start), the category counts against
the policy's expected counts, df = categories - 1, and the test asks for
p > 0.001. The draws come from the sampler's seed generator seeded by
--seed (stateless Philox draws on the CPU), so they are the same on every
run: the test cannot flake. A correct sampler's p-values are spread
uniformly over (0, 1) from seed to seed; with the seeds below the smallest
per space is 0.13 (macro, 6 positions), 0.033 (per-channel macro, 9
branch pairs and bits), 0.0029 (micro, 24 positions) and 0.32 (PTB, 6), the
medians 0.69, 0.43, 0.59, 0.52. (The micro minimum is the smallest of 24:
at 20000 draws that position gives p = 0.24, no sign of a bias.) A wrong
range (an off-by-one that never draws the last value; one that draws a
value too many fails on the unexpected category) moves hundreds of the
2000 draws: X^2 in the hundreds and p below 1e-100 (checked by breaking
the sampler so), many orders of magnitude under the threshold.
"""

import collections
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from src import entry_point, registry, run_loop
from src.random_policy import UniformSampler, chi_square_sf
from tests.cifar_fixtures import write_fake_cifar
from tests.ptb_fixtures import (REPO_ROOT, main_env, tiny_args,
                                write_tiny_ptb)

DRAWS = 2000
P_MIN = 0.001

MACRO = ["--search_for=macro", "--child_num_layers=3",
         "--child_num_branches=4", "--controller_search_whole_channels",
         "--controller_skip_target=0.4", "--child_out_filters=4",
         "--num_valids=20", "--seed=3", "--search_policy=random"]
MACRO_PER_CHANNEL = ["--search_for=macro", "--child_num_layers=2",
                     "--child_num_branches=4",
                     "--nocontroller_search_whole_channels",
                     "--controller_skip_target=0.4", "--child_out_filters=4",
                     "--num_valids=20", "--seed=4", "--search_policy=random"]
MICRO = ["--search_for=micro", "--child_num_cells=3", "--child_num_layers=0",
         "--child_num_branches=5", "--num_valids=20", "--seed=5",
         "--search_policy=random"]
PTB = ["--search_for=enas", "--child_rhn_depth=4", "--controller_num_funcs=4",
       "--seed=6", "--search_policy=random"]


def config(entry, space_name, args):
    fv, _ = entry_point.parse_flags(entry, ["prog"] + args)
    return registry.space(space_name).config_from_flags(fv)


def draw(entry, space_name, args):
    """(the run's sampler, DRAWS arcs as an int array [DRAWS, arc_length])."""
    cfg = config(entry, space_name, args)
    sampler = registry.space(space_name).build_controller(cfg.controller)
    assert isinstance(sampler, UniformSampler)
    arcs = np.stack([sampler.sample()["arc"].numpy() for _ in range(DRAWS)])
    return cfg, sampler, arcs


def p_value(observed, expected):
    """Pearson's chi-square p-value of counts {category: n} against
    expected probabilities {category: p} (every observed category must be
    expected)."""
    assert set(observed) <= set(expected), sorted(
        set(observed) - set(expected))
    n = sum(observed.values())
    stat = sum((observed.get(k, 0) - n * p) ** 2 / (n * p)
               for k, p in expected.items())
    return chi_square_sf(stat, len(expected) - 1)


def uniform_p(values, low, high):
    return p_value(collections.Counter(values.tolist()),
                   {v: 1.0 / (high - low) for v in range(low, high)})


def check(p_values):
    worst = min(p_values)
    assert worst > P_MIN, "p-values {}".format(
        ["{:.2g}".format(p) for p in p_values])
    return worst


def test_chi_square_sf_matches_the_tables():
    # The 5% critical values of chi-square with 1 .. 5 degrees of freedom.
    for df, x in ((1, 3.841), (2, 5.991), (3, 7.815), (4, 9.488),
                  (5, 11.070)):
        assert abs(chi_square_sf(x, df) - 0.05) < 1e-4


def test_macro_whole_channel_draws_ops_uniformly_and_skips_at_the_target():
    cfg, sampler, arcs = draw("cifar10", "macro", MACRO)
    space = registry.space("macro")
    ps, pos = [], 0
    for layer in range(3):
        ps.append(uniform_p(arcs[:, pos], 0, 4))
        pos += 1
        for _ in range(layer):
            ps.append(p_value(collections.Counter(arcs[:, pos].tolist()),
                              {0: 0.6, 1: 0.4}))
            pos += 1
    assert pos == arcs.shape[1]
    check(ps)
    for row in arcs[:50]:  # legal arcs of the run's child
        space.parse_arc(row.tolist(), cfg.child)
    # log_prob scores an arc as sample reports it.
    s = sampler.sample()
    np.testing.assert_allclose(sampler.log_prob(s["arc"])["log_prob"],
                               s["log_prob"], rtol=1e-6)


def test_macro_per_channel_draws_each_branch_uniformly():
    _, _, arcs = draw("cifar10", "macro", MACRO_PER_CHANNEL)
    f = 4
    # start uniform over 0..f-1, then count uniform over 1..f-start.
    pairs = {(s, c): 1.0 / f / (f - s)
             for s in range(f) for c in range(1, f - s + 1)}
    ps, pos = [], 0
    for layer in range(2):
        for _ in range(4):
            ps.append(p_value(collections.Counter(
                zip(arcs[:, pos].tolist(), arcs[:, pos + 1].tolist())),
                pairs))
            pos += 2
        for _ in range(layer):
            ps.append(p_value(collections.Counter(arcs[:, pos].tolist()),
                              {0: 0.6, 1: 0.4}))
            pos += 1
    assert pos == arcs.shape[1]
    check(ps)


def test_micro_draws_inputs_and_ops_uniformly():
    cfg, _, arcs = draw("cifar10", "micro", MICRO)
    ps = []
    for cell in range(2):
        for node in range(3):
            pos = 12 * cell + 4 * node
            for j, high in enumerate((node + 2, 5, node + 2, 5)):
                ps.append(uniform_p(arcs[:, pos + j], 0, high))
    check(ps)
    for row in arcs[:50]:
        registry.space("micro").parse_arc(row.tolist(), cfg.child)


def test_ptb_draws_previous_nodes_and_activations_uniformly():
    _, _, arcs = draw("ptb", "ptb", PTB)
    ps = [uniform_p(arcs[:, 0], 0, 4)]
    for node in range(1, 4):
        prev, func = arcs[:, 2 * node - 1], arcs[:, 2 * node]
        if node == 1:
            assert (prev == 0).all()  # one choice
        else:
            ps.append(uniform_p(prev, 0, node))
        ps.append(uniform_p(func, 0, 4))
    check(ps)


# -- the search -----------------------------------------------------------

def checkpoint_tensors(folder):
    reader = tf.train.load_checkpoint(folder)
    return {k: reader.get_tensor(k)
            for k in reader.get_variable_to_shape_map()
            if not k.startswith("_CHECKPOINTABLE_OBJECT_GRAPH")}


def test_cifar_random_search_has_no_controller_and_resumes_exactly(
        tmp_path, capsys):
    """Two epochs straight; then the same from the straight run's epoch-1
    checkpoint (what a run stopped after epoch 1 leaves): the same arcs,
    scores and final weights."""
    data = write_fake_cifar(str(tmp_path / "cifar"))  # 5 steps of 16
    # Two layers (one skip bit): most of a run's time is tracing the child.
    args = [a for a in MACRO if not a.startswith("--child_num_layers")]

    def cifar_cfg(out_dir):
        os.makedirs(out_dir, exist_ok=True)
        return config("cifar10", "macro", args + ["--child_num_layers=2",
            "--data_path=" + data, "--output_dir=" + out_dir,
            "--batch_size=16", "--num_epochs=2", "--log_every=2",
            "--controller_training", "--controller_train_every=1",
            "--nodownload"])

    straight = str(tmp_path / "straight")
    assert run_loop.train(cifar_cfg(straight)) == 0
    log = capsys.readouterr().out
    assert "Training controller" not in log and "ctrl_step" not in log
    assert log.count("Here are 10 architectures") == 2
    assert log.count("val_acc=") == 20
    records = [json.loads(l) for l in open(os.path.join(straight,
                                                        "arcs.jsonl"))]
    assert [r["epoch"] for r in records] == [1] * 10 + [2] * 10
    for r in records:
        # Printed as ENAS's are: its layers, then val_acc=<reward>.
        arc = registry.arcs("macro").parse(r["arc"], 2, 4, True)
        assert "\n".join(str(np.array(l)) for l in arc.layer_lines()) \
            + "\nval_acc={:<6.4f}".format(r["reward"]) in log
    # Drawn afresh for every printout.
    assert [r["arc"] for r in records[:10]] != \
        [r["arc"] for r in records[10:]]
    tensors = checkpoint_tensors(straight)
    policy = [k for k in tensors if k.startswith("controller/")]
    # The sampler's seed state and nothing else: no controller weights, no
    # controller optimiser or baseline.
    assert policy == ["controller/random_policy.Sseed_generator_0/"
                      ".ATTRIBUTES/VARIABLE_VALUE"], policy
    assert not any("controller_optimizer" in k or "baseline" in k
                   for k in tensors)

    resumed = str(tmp_path / "resumed")
    os.makedirs(resumed)
    for name in os.listdir(straight):
        if name.startswith("model.ckpt-5."):
            shutil.copy(os.path.join(straight, name), resumed)
    with open(os.path.join(resumed, "checkpoint"), "w") as f:
        # (CheckpointManager lists only checkpoints with a timestamp.)
        f.write('model_checkpoint_path: "model.ckpt-5"\n'
                'all_model_checkpoint_paths: "model.ckpt-5"\n'
                'all_model_checkpoint_timestamps: 1.0\n')
    with open(os.path.join(resumed, "arcs.jsonl"), "w") as f:
        f.writelines(open(os.path.join(straight, "arcs.jsonl"))
                     .readlines()[:10])
    assert run_loop.train(cifar_cfg(resumed)) == 0
    log = capsys.readouterr().out
    assert "Resuming from" in log and "(epoch 1, step 5)" in log
    assert open(os.path.join(resumed, "arcs.jsonl")).read() == \
        open(os.path.join(straight, "arcs.jsonl")).read()
    again = checkpoint_tensors(resumed)
    assert sorted(again) == sorted(tensors)
    for k in tensors:
        np.testing.assert_array_equal(again[k], tensors[k], err_msg=k)


def test_ptb_entry_point_runs_a_random_search(tmp_path):
    data = write_tiny_ptb(tmp_path)
    out_dir = str(tmp_path / "search")
    result = subprocess.run(
        [sys.executable, "-m", "src.ptb.main",
         *tiny_args(data, out_dir), "--num_epochs=1",
         "--controller_train_every=1", "--controller_num_funcs=4",
         "--controller_entropy_weight=0.001", "--search_policy=random"],
        capture_output=True, text=True, cwd=REPO_ROOT, env=main_env(),
        timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout
    assert "Training controller" not in log and "ctrl_step" not in log
    assert "Here are 10 architectures" in log
    records = [json.loads(l) for l in open(os.path.join(out_dir,
                                                        "arcs.jsonl"))]
    assert len(records) == 10
    arc_class = registry.arcs("ptb")
    for r in records:
        arc = arc_class.parse(r["arc"], 3, num_funcs=4)
        # The bare reward (no entropy bonus: there is no controller).
        assert "{} rw={:<.3f}".format(np.array(arc.to_list()),
                                      r["reward"]) in log
        assert r["cell"] == arc.describe()
    assert "test_ppl: " in log.rstrip().splitlines()[-1]


@pytest.mark.parametrize("entry,args", [
    ("cifar10", ["--search_for=macro", "--child_fixed_arc=0 0 1 1 2"]),
    ("ptb", ["--search_for=enas", "--child_fixed_arc=0 0 1 1 2"]),
    ("cifar10", ["--search_for=macro", "--reference_checkpoint=/nowhere"]),
])
def test_random_policy_with_a_fixed_arc_or_reference_checkpoint_is_an_error(
        entry, args, capsys):
    main = __import__(registry.entry(entry).module, fromlist=["call"])
    assert main.call(["prog", "--search_policy=random"] + args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and "--search_policy=random" in err
    assert "drop one of them" in err
