"""`python -m src.bench --config=NAME --profile=DIR`: where a step's time
goes. The summary's arithmetic on a made-up op table, and one real profile
of a tiny macro fixed child through the bench."""

import pytest

from src import bench, bench_profile, precision
from tests.test_bench_configs import tiny_flags


def _row(op, kind, self_us, share):
    return {"operation": op, "type": kind, "occurrences": 1,
            "total_self_time": self_us, "host_total_self_time_percent": share,
            "host_or_device": "Host"}


def test_the_summary_counts_the_ops_past_the_tables_end_and_groups_types():
    # 1000 us in all; the table lists 900 of them.
    rows = [_row("a/Conv2D", "Conv2D", 500.0, 0.5),
            _row("b/Conv2D", "Conv2D", 300.0, 0.3),
            _row("c/Relu", "Relu", 100.0, 0.1)]
    s = bench_profile.summarise(rows, wall_s=0.002, steps=2)
    assert s["wall_s_per_step"] == pytest.approx(0.001)
    assert s["kernel_s_per_step"] == pytest.approx(0.0005)
    assert s["kernels_over_wall"] == pytest.approx(0.5)
    types = {t["type"]: t for t in s["top_types"]}
    assert types["Conv2D"]["ops"] == 2
    assert types["Conv2D"]["s_per_step"] == pytest.approx(0.0004)
    assert types["Conv2D"]["share"] == pytest.approx(0.8)
    assert types["(ops past the table's 500)"]["share"] == pytest.approx(0.1)
    assert s["top_types"][0]["type"] == "Conv2D"
    assert "kernels / wall 0.50" in bench_profile.format_summary("x", s)


def test_the_summary_refuses_an_empty_trace():
    with pytest.raises(RuntimeError, match="no TensorFlow op"):
        bench_profile.summarise([_row("IDLE", "IDLE", 5.0, 1.0)], 1.0, 1)


def test_a_profiled_bench_run_reports_the_steps_kernels(tmp_path):
    options = bench.BenchOptions("false", warmup=1, steps=2,
                                 flags=tiny_flags("macro_fixed_cpu"))
    with precision.mixed_precision_scope(False):
        r = bench.time_config("macro_fixed_cpu", options,
                              profile_dir=str(tmp_path))
    p = r["profile"]
    assert p["kernel_s_per_step"] > 0 and p["wall_s_per_step"] > 0
    assert sum(t["share"] for t in p["top_types"]) <= 1.0 + 1e-9
    assert any("Conv2D" in t["type"] for t in p["top_types"])
    assert bench_profile.newest_xspace(str(tmp_path)).endswith(".xplane.pb")


def test_profile_is_for_one_configuration_of_ours(capsys):
    from src import tool
    for argv in (["--config=all"],
                 ["--config=macro_fixed_cpu", "--against_reference=/x"]):
        assert tool.call(bench.define_flags, bench.main, ["bench"] + argv
                         + ["--profile=/tmp/p"]) == 2
        assert "--profile times one configuration" in capsys.readouterr().err
