"""src.bench's --jit_compile and --mixed_precision: the flags, and that they
reach the trainers a configuration builds (on a tiny PTB search case: the
ptb_search_cpu flagfile with tiny sizes)."""

import dataclasses
import functools

import keras
import pytest
from absl import flags

from src import bench
from src.errors import UserError

TINY_PTB = ("--child_lstm_hidden_size=8", "--batch_size=2",
            "--child_bptt_steps=3", "--child_rhn_depth=2")


def test_flags_and_their_defaults():
    fv = flags.FlagValues()
    bench.define_flags(fv)
    assert fv["jit_compile"].default == "auto"
    assert sorted(fv["jit_compile"].parser.enum_values) == [
        "auto", "false", "true"]
    assert fv["mixed_precision"].default is False
    # Defined into the FlagValues given, never into absl's global one.
    assert "config" not in flags.FLAGS


def test_options_are_frozen_and_no_global_state():
    options = bench.BenchOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.jit_compile = "true"
    assert not hasattr(bench, "OPTIONS")
    assert bench.BenchOptions("false", True).flag_overrides()[:2] == (
        "--jit_compile=false", "--mixed_precision")


@pytest.mark.parametrize("jit, mixed", [("false", True), ("auto", False)])
def test_options_reach_the_trainers(monkeypatch, jit, mixed):
    seen = {}
    build_case = bench.build_case

    def spy(name, options):
        case = build_case(name, options)
        seen.update(case=case, child_dtype=case.child.compute_dtype,
                    policy=keras.mixed_precision.global_policy().name)
        # Without the gating floor (tests/test_bench_configs.py runs it).
        return dataclasses.replace(case, extra=None)

    monkeypatch.setattr(bench, "build_case", spy)
    monkeypatch.setattr(bench, "synthetic_ptb", functools.partial(
        bench.synthetic_ptb, vocab_size=20, words=(200, 200, 100)))
    r = bench.time_config("ptb_search_cpu", bench.BenchOptions(
        jit, mixed, warmup=0, steps=1, flags=TINY_PTB))
    trainer = seen["case"].trainer
    assert (r["jit_compile_flag"], r["mixed_precision"]) == (jit, mixed)
    # The flagfile's sizes, overridden.
    assert seen["case"].child.cfg.hidden_size == 8
    # auto: the entry points' choice for a PTB search (off), the reward
    # pass compiled; false: nothing compiled.
    assert r["jit_compile"] is False and trainer.jit_compile is False
    assert trainer.reward_jit_compile is (jit == "auto")
    assert (trainer.loss_scale is not None) is mixed
    assert seen["child_dtype"] == ("float16" if mixed else "float32")
    assert seen["case"].phase.controller.compute_dtype == "float32"
    assert seen["policy"] == ("mixed_float16" if mixed else "float32")
    # The policy is restored afterwards.
    assert keras.mixed_precision.global_policy().name == "float32"
    row = bench.format_row(r)
    assert row.split()[-2:] == ["no", "yes" if mixed else "no"]
    assert "--jit_compile={}".format(jit) in bench.header(jit, mixed)


def test_true_is_refused_where_xla_cannot_compile():
    with pytest.raises(UserError, match="micro search"):
        bench.time_config("micro_search_cpu", bench.BenchOptions(
            "true", warmup=0, steps=1,
            flags=("--child_out_filters=4", "--batch_size=2")))
    with pytest.raises(UserError, match="--jit_compile"):
        bench.BenchOptions(jit_compile="maybe")
    with pytest.raises(UserError, match="--config"):
        bench.time_config("no_such_config")
