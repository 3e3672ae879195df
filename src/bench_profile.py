"""Where a benchmarked step's time goes: `python -m src.bench
--config=NAME --profile=DIR`.

After the configuration's build and warm-up, `steps` steps run under the
TensorFlow profiler (the trace is written to DIR; TensorBoard's profile
plugin shows it). The host trace is then summarised with the profiler's own
`framework_op_stats` tool: the steps' wall time, the summed self time of
the TensorFlow ops they executed (the kernels; with two inter-op threads
two kernels may run at once, so the sum can exceed the wall time), their
ratio, and the ops with the largest self time. A ratio near 1 says the
step is its kernels: nothing around them (Python, dispatch, waiting) is
left to win without faster or fewer kernels.
"""

import glob
import json
import os
import time


def profile_steps(step, steps, logdir):
    """Runs `step()` `steps` times under the profiler, trace in `logdir`;
    returns the wall time in seconds."""
    import tensorflow as tf
    tf.profiler.experimental.start(logdir)
    try:
        t = time.perf_counter()
        for _ in range(steps):
            step()
        wall = time.perf_counter() - t
    finally:
        tf.profiler.experimental.stop()
    return wall


def newest_xspace(logdir):
    """The newest trace file the profiler wrote under `logdir`."""
    paths = glob.glob(os.path.join(logdir, "plugins", "profile", "*",
                                   "*.xplane.pb"))
    if not paths:
        raise FileNotFoundError("no profiler trace under " + logdir)
    return max(paths, key=os.path.getmtime)


def op_stats(xspace_path):
    """The trace's framework op statistics without the idle time: a list
    of dicts (one per op, largest self time first, at most the profiler's
    500) with `operation`, `type`, `occurrences`, `total_self_time`
    (microseconds) and `host_total_self_time_percent` (its share of all
    ops' self time, as a fraction), host ops only."""
    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin
    data, ok = _pywrap_profiler_plugin.xspace_to_tools_data(
        [xspace_path], "framework_op_stats")
    if not ok:
        raise RuntimeError("the profiler could not read " + xspace_path)
    tables = json.loads(data)
    # Two tables: with the threads' idle time as a row, and without.
    return table_rows(tables[-1] if isinstance(tables, list) else tables)


def table_rows(table):
    """The rows of one profiler DataTable (JSON) as dicts keyed by column
    id, host rows only."""
    ids = [c["id"] for c in table.get("cols", ())]
    rows = []
    for row in table.get("rows", ()):
        values = {k: (cell or {}).get("v") for k, cell in zip(ids, row["c"])}
        if str(values.get("host_or_device", "Host")).lower() == "host":
            rows.append(values)
    return rows


def summarise(rows, wall_s, steps, top=12):
    """Per-step summary of op `rows` (`op_stats`) over `steps` steps taking
    `wall_s`: wall and kernel (summed self) time per step in seconds, their
    ratio, and the `top` op types by self time (type, ops of that type in
    the step, seconds per step, share of the kernels' time)."""
    rows = [r for r in rows if r.get("type") not in (None, "IDLE")]
    if not rows:
        raise RuntimeError("the profiler recorded no TensorFlow op")
    # The table stops at 500 ops; each row's share gives the whole sum.
    first = max(rows, key=lambda r: float(r["total_self_time"]))
    total_us = (float(first["total_self_time"])
                / float(first["host_total_self_time_percent"]))
    by_type = {}
    for r in rows:
        t = by_type.setdefault(r["type"], [0.0, 0])
        t[0] += float(r["total_self_time"])
        t[1] += 1
    listed = sum(t[0] for t in by_type.values())
    by_type["(ops past the table's 500)"] = [max(0.0, total_us - listed), 0]
    types = sorted(by_type.items(), key=lambda kv: -kv[1][0])
    return {
        "wall_s_per_step": wall_s / steps,
        "kernel_s_per_step": total_us * 1e-6 / steps,
        "kernels_over_wall": total_us * 1e-6 / wall_s,
        "top_types": [{
            "type": name, "ops": count,
            "s_per_step": us * 1e-6 / steps,
            "share": us / total_us} for name, (us, count) in types[:top]],
    }


def format_summary(name, summary):
    lines = ["# {}: {:.4f} s/step wall, {:.4f} s/step in kernels "
             "(kernels / wall {:.2f})".format(
                 name, summary["wall_s_per_step"],
                 summary["kernel_s_per_step"],
                 summary["kernels_over_wall"])]
    lines.append("{:<36s} {:>5s} {:>10s} {:>6s}".format(
        "op type", "ops", "s/step", "share"))
    for t in summary["top_types"]:
        lines.append("{:<36s} {:>5d} {:>10.5f} {:>6.1%}".format(
            str(t["type"])[:36], t["ops"], t["s_per_step"], t["share"]))
    return "\n".join(lines)
