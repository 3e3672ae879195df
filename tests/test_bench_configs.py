"""Every src.bench configuration is its flagfile's run: the sizes the
BUILD.md table was measured at come from the flagfile (every
configuration), and a configuration builds through its space's session
(tiny sizes, no XLA, a short synthetic corpus) and runs one step; the gating
floor runs on a tiny search child.

Built by default: the macro and PTB *_cpu configurations (about 45 s on the
loaded 2-core machine). The micro ones (a tiny micro search step still takes
about 45 s to trace there) and the *_full ones (the same code as their
*_cpu rows at these tiny sizes; their flagfiles are checked above) need
BENCH_ALL_CONFIGS=1: about 5 minutes in all.
"""

import functools
import os

import pytest

from src import bench, precision, registry

# The sizes of BUILD.md's Benchmarks table, per configuration (the child
# config's fields and the batch), read from the flagfiles.
TABLE_SIZES = {
    "macro_fixed_cpu": dict(num_layers=6, out_filters=16, num_branches=4,
                            batch=32),
    "macro_search_cpu": dict(num_layers=6, out_filters=16, num_branches=6,
                             batch=32),
    "macro_controller_cpu": dict(num_layers=6, out_filters=16, batch=32),
    "micro_search_cpu": dict(num_layers=2, num_cells=5, out_filters=16,
                             use_aux_heads=True, batch=32),
    "micro_fixed_cpu": dict(num_layers=2, num_cells=5, out_filters=16,
                            use_aux_heads=True, batch=32),
    "micro_controller_cpu": dict(num_layers=2, out_filters=16, batch=32),
    "macro_fixed_full": dict(num_layers=24, out_filters=96, num_branches=4,
                             batch=100),
    "macro_search_full": dict(num_layers=12, out_filters=36, num_branches=6,
                              batch=128),
    "micro_search_full": dict(num_layers=6, num_cells=5, out_filters=20,
                              batch=160),
    "micro_fixed_full": dict(num_layers=15, out_filters=36, keep_prob=0.8,
                             batch=144),
    "ptb_search_cpu": dict(hidden_size=64, bptt_steps=35, rhn_depth=12,
                           batch=20),
    "ptb_fixed_cpu": dict(hidden_size=64, bptt_steps=35, rhn_depth=12,
                          batch=20),
    "ptb_controller_cpu": dict(hidden_size=64, rhn_depth=12, batch=20),
    "ptb_test_eval_cpu": dict(hidden_size=64, rhn_depth=12),
    "ptb_search_full": dict(hidden_size=720, bptt_steps=35, rhn_depth=12,
                            batch=20),
    "ptb_fixed_full": dict(hidden_size=748, bptt_steps=35, rhn_depth=12,
                           batch=64),
    "enas_lm_fixed_cpu": dict(hidden_size=64, bptt_steps=35, batch=20),
    "enas_lm_search_cpu": dict(hidden_size=32, bptt_steps=35, batch=20),
    "enas_lm_controller_cpu": dict(hidden_size=32, batch=20),
    "enas_lm_fixed_full": dict(hidden_size=800, bptt_steps=35, batch=64),
    "enas_lm_search_full": dict(hidden_size=200, bptt_steps=35, batch=128),
}

ALL = os.environ.get("BENCH_ALL_CONFIGS") == "1"


def built(names):
    """pytest params of `names`, those outside the default set skipped
    unless BENCH_ALL_CONFIGS=1."""
    return [pytest.param(n, marks=pytest.mark.skipif(
        not ALL and (n.startswith("micro") or n.endswith("_full")),
        reason="slow: set BENCH_ALL_CONFIGS=1")) for n in names]


SEARCHING = {"macro_search_cpu", "macro_controller_cpu", "micro_search_cpu",
             "micro_controller_cpu", "macro_search_full", "micro_search_full",
             "ptb_search_cpu", "ptb_controller_cpu", "ptb_search_full",
             "enas_lm_search_cpu", "enas_lm_controller_cpu",
             "enas_lm_search_full"}


def tiny_flags(name):
    """Overrides that shrink configuration `name`'s run (a fixed arc of the
    smaller size where the flagfile has one)."""
    b = bench.CONFIGS[name]
    fixed = name not in SEARCHING
    if b.entry.startswith("enas_lm"):
        return ("--child_hidden_size=8", "--child_batch_size=2",
                "--child_bptt_steps=3") + (
            ("--fixed_arc=0 0 0 1",) if fixed
            else ("--controller_num_layers=2",))
    if b.entry == "ptb":
        return ("--child_lstm_hidden_size=8", "--batch_size=2",
                "--child_bptt_steps=3", "--child_rhn_depth=2") + (
            ("--child_fixed_arc=0 0 1",) if fixed else ())
    flags = ("--child_out_filters=4", "--batch_size=2",
             "--child_num_layers=1")
    if name.startswith("macro"):
        return flags + (("--child_fixed_arc=0",) if fixed
                        else ("--child_num_branches=4",))
    # Two cells; the fixed arc: the first two nodes of each cell of the
    # micro final arc.
    return flags + ("--child_num_cells=2",) + (
        ("--child_fixed_arc=0 2 0 0 0 4 0 1 1 0 1 0 0 3 0 2",) if fixed
        else ())


def test_the_table_is_whole():
    assert set(TABLE_SIZES) == set(bench.CONFIGS)


@pytest.mark.parametrize("name", sorted(bench.CONFIGS))
def test_sizes_come_from_the_flagfile(name):
    b = bench.CONFIGS[name]
    assert os.path.isfile(b.path), b.path
    assert b.entry in registry.ENTRY_POINTS
    space, cfg = bench.run_config(name, bench.BenchOptions())
    assert space.name in registry.entry(b.entry).spaces
    assert cfg.searching == (name in SEARCHING)
    want = dict(TABLE_SIZES[name])
    assert cfg.batch_size == want.pop("batch", cfg.batch_size)
    for field, value in want.items():
        assert getattr(cfg.child, field) == value, field


@pytest.fixture
def short_corpus(monkeypatch):
    monkeypatch.setattr(bench, "synthetic_ptb", functools.partial(
        bench.synthetic_ptb, vocab_size=50, words=(400, 400, 200)))


@pytest.mark.parametrize("name", built(sorted(bench.CONFIGS)))
def test_every_configuration_builds_and_steps(name, short_corpus):
    options = bench.BenchOptions("false", flags=tiny_flags(name))
    with precision.mixed_precision_scope(False):
        case = bench.build_case(name, options)
        case.step()
    assert (case.phase is not None) == (name in SEARCHING)
    assert bench.CONFIGS[name].flagfile in case.description
    if bench.CONFIGS[name].timed == "child":
        assert int(case.trainer.global_step.numpy()) == 1
    if bench.CONFIGS[name].timed == "controller":
        # The reward is the run's: the phase hooks' reward of the session.
        assert case.phase.reinforce.reward_fn is case.phase.hooks.reward
        assert int(case.phase.reinforce.train_step.numpy()) == 1


@pytest.mark.parametrize("name", built(["macro_search_cpu",
                                        "micro_search_cpu", "ptb_search_cpu"]))
def test_gating_floor(name, short_corpus):
    options = bench.BenchOptions("false", flags=tiny_flags(name))
    with precision.mixed_precision_scope(False):
        case = bench.build_case(name, options)
        r = bench.gating_floor(case.session, case.trainer,
                               case.phase.controller, num_arcs=2,
                               steps_per_arc=1)
    assert r["gating_arcs"] == 2 and r["gating_steps_per_arc"] == 1
    assert r["gating_ratio"] == pytest.approx(
        r["gated_step_s_median"] / r["baked_step_s_median"])
