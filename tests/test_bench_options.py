"""src.bench's --jit_compile and --mixed_precision: the flags, and that they
reach the trainers a configuration builds (on a tiny PTB search case)."""

import keras
import pytest
from absl import flags

from src import bench
from src.errors import UserError


def test_flags_and_their_defaults():
    fv = flags.FlagValues()
    bench.define_flags(fv)
    assert fv["jit_compile"].default == "auto"
    assert sorted(fv["jit_compile"].parser.enum_values) == [
        "auto", "false", "true"]
    assert fv["mixed_precision"].default is False


def tiny_ptb_search():
    child, controller, trainer = bench._ptb_parts(
        8, 2, bptt_steps=3, rhn_depth=2, vocab_size=20)
    _, windows = bench._ptb_windows(20, 2, 3, num_tokens=200)
    tiny_ptb_search.seen = dict(
        trainer=trainer, controller=controller,
        child_dtype=child.compute_dtype,
        policy=keras.mixed_precision.global_policy().name)
    return bench.Case(bench._ptb_step_over(windows, trainer.train_step),
                      "tiny", jit_compile=trainer.jit_compile)


@pytest.mark.parametrize("jit, mixed", [("false", True), ("auto", False)])
def test_options_reach_the_trainers(monkeypatch, jit, mixed):
    monkeypatch.setitem(bench.CONFIGS, "tiny", tiny_ptb_search)
    r = bench.time_config("tiny", warmup=0, steps=1, jit_compile=jit,
                          mixed_precision=mixed)
    seen = tiny_ptb_search.seen
    trainer = seen["trainer"]
    assert (r["jit_compile_flag"], r["mixed_precision"]) == (jit, mixed)
    # auto: the entry points' choice for a PTB search (off), the reward
    # pass compiled; false: nothing compiled.
    assert r["jit_compile"] is False and trainer.jit_compile is False
    assert trainer.reward_jit_compile is (jit == "auto")
    assert (trainer.loss_scale is not None) is mixed
    assert seen["child_dtype"] == ("float16" if mixed else "float32")
    assert seen["controller"].compute_dtype == "float32"
    assert seen["policy"] == ("mixed_float16" if mixed else "float32")
    # The policy and the options are restored afterwards.
    assert keras.mixed_precision.global_policy().name == "float32"
    assert bench.OPTIONS == bench.BenchOptions()
    row = bench.format_row(r)
    assert row.split()[-2:] == ["no", "yes" if mixed else "no"]
    assert "--jit_compile={}".format(jit) in bench.header(jit, mixed)


def test_true_is_refused_where_xla_cannot_compile():
    with pytest.raises(UserError, match="micro search"):
        with bench._options(bench.BenchOptions("true")):
            bench._jit("micro", True)
    with pytest.raises(UserError, match="--jit_compile"):
        bench.time_config("ptb_controller_cpu", jit_compile="maybe")
