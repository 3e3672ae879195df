"""The search study's statistics and report (`src.study` writes it).

Rank correlations in numpy (SciPy is not a dependency): `kendall_tau`
(tau-b, ties counted as SciPy's `kendalltau` counts them) and
`spearman_rho` (Pearson's r of the average ranks). Both return None when
they are undefined (fewer than two pairs, or one side constant).

`build_report(...)` turns the study's records into the `study.json`
object; `markdown(report)` its tables (`study.md`); `plot(report, path)`
its three panels (`study.png`, matplotlib with the Agg backend).
No TensorFlow.
"""

import math

import numpy as np

# By search space: (the score's name, whether higher is better).
METRICS = {"macro": ("accuracy", True), "micro": ("accuracy", True),
           "ptb": ("perplexity", False), "enas_lm": ("perplexity", False)}
# By score: its name in the entry points' evaluation events (`src.logs`:
# "valid_accuracy", "test_ppl", ...).
LOG_KEYS = {"accuracy": "accuracy", "perplexity": "ppl"}

ARC_FIELDS = ("policy", "seed", "arc", "shared_score", "retrained_valid",
              "retrained_test")


# -- rank correlations --------------------------------------------------------

def _pairs(x, y):
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("x and y must be 1-D and of one length, got {} and "
                         "{}".format(x.shape, y.shape))
    return x, y


def kendall_tau(x, y):
    """Kendall's tau-b of the pairs (x[i], y[i]):
    (concordant - discordant) / sqrt((n0 - n1) (n0 - n2)), n0 = n (n - 1)
    / 2 pairs, n1 the pairs tied in x, n2 those tied in y. None when it is
    undefined (n < 2, or x or y constant)."""
    x, y = _pairs(x, y)
    n = x.size
    if n < 2:
        return None
    i, j = np.triu_indices(n, k=1)
    sx = np.sign(x[i] - x[j])
    sy = np.sign(y[i] - y[j])
    n0 = n * (n - 1) / 2.0
    n1 = float(np.sum(sx == 0))
    n2 = float(np.sum(sy == 0))
    denom = math.sqrt((n0 - n1) * (n0 - n2))
    if denom == 0:
        return None
    return float(np.sum(sx * sy) / denom)


def average_ranks(x):
    """Ranks 1 .. n of x, tied values sharing the mean of their ranks."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(x.size, np.float64)
    ranks[order] = np.arange(1, x.size + 1)
    values, inverse = np.unique(x, return_inverse=True)
    sums = np.bincount(inverse, weights=ranks, minlength=values.size)
    counts = np.bincount(inverse, minlength=values.size)
    return (sums / counts)[inverse]


def spearman_rho(x, y):
    """Spearman's rho: Pearson's correlation of the average ranks of x and
    of y. None when undefined (n < 2, or x or y constant)."""
    x, y = _pairs(x, y)
    if x.size < 2:
        return None
    rx = average_ranks(x) - (x.size + 1) / 2.0
    ry = average_ranks(y) - (y.size + 1) / 2.0
    denom = math.sqrt(float(np.sum(rx * rx) * np.sum(ry * ry)))
    if denom == 0:
        return None
    return float(np.sum(rx * ry) / denom)


# -- the report -----------------------------------------------------------------

def _mean_std(values):
    """(mean, standard deviation with n - 1) of `values`; the std is None
    for one value, both None for none."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    mean = float(np.mean(values))
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return mean, std


def best_retrained(records, higher_is_better):
    """The record with the best retrained validation score among `records`
    (None when none was retrained); ties: the first."""
    best = None
    for r in records:
        v = r["retrained_valid"]
        if v is None:
            continue
        if (best is None or (v > best["retrained_valid"] if higher_is_better
                             else v < best["retrained_valid"])):
            best = r
    return best


def policy_summary(records, seeds, higher_is_better):
    """The `summary` entry of one policy: tau and rho between shared and
    retrained validation scores over its retrained arcs (every seed's
    pooled), and per seed the best retrained validation score and its test
    score, with their mean and std over seeds."""
    retrained = [r for r in records if r["retrained_valid"] is not None]
    shared = [r["shared_score"] for r in retrained]
    valid = [r["retrained_valid"] for r in retrained]
    per_seed = {}
    for seed in seeds:
        mine = [r for r in records if r["seed"] == seed]
        best = best_retrained(mine, higher_is_better)
        done = [r for r in mine if r["retrained_valid"] is not None]
        per_seed[str(seed)] = {
            "best_arc": best["arc"] if best else None,
            "best_valid": best["retrained_valid"] if best else None,
            "best_test": best["retrained_test"] if best else None,
            "retrained": len(done),
            "kendall_tau": kendall_tau([r["shared_score"] for r in done],
                                       [r["retrained_valid"] for r in done])
            if done else None,
        }
    valid_mean, valid_std = _mean_std(
        [s["best_valid"] for s in per_seed.values()])
    test_mean, test_std = _mean_std(
        [s["best_test"] for s in per_seed.values()])
    return {
        "kendall_tau": kendall_tau(shared, valid) if retrained else None,
        "spearman_rho": spearman_rho(shared, valid) if retrained else None,
        "retrained": len(retrained),
        "best_valid_mean": valid_mean, "best_valid_std": valid_std,
        "best_test_mean": test_mean, "best_test_std": test_std,
        "per_seed": per_seed,
    }


def build_report(settings, records, curves, notes=()):
    """The `study.json` object.

    settings: the study's settings (space, metric, higher_is_better,
      flagfiles, policies, seeds, candidates, ...);
    records: one dict per candidate with ARC_FIELDS;
    curves: {policy: {seed: [per-epoch dicts]}} (`search_curves`);
    notes: lines about what is missing or limited."""
    higher = settings["higher_is_better"]
    records = [{k: r[k] for k in ARC_FIELDS} for r in records]
    summary = {p: policy_summary([r for r in records if r["policy"] == p],
                                 settings["seeds"], higher)
               for p in settings["policies"]}
    return {"higher_is_better": higher, "metric": settings["metric"],
            "settings": settings, "arcs": records, "summary": summary,
            "curves": {p: {str(s): v for s, v in c.items()}
                       for p, c in curves.items()},
            "notes": list(notes)}


def search_curves(events, arc_records, per_epoch=10):
    """Per epoch of one search run: the controller's mean reward and mean
    entropy over its logged steps in that epoch's controller phase (ENAS;
    None for the random policy, which has none), the mean score of the
    arcs the run printed after it ("Here are 10 architectures": shared
    weights, one validation batch or window each; None when the entry
    point prints none, as enas_lm's) and the run's own validation score
    after it (`search_valid`: its printed valid_accuracy or valid_ppl).

    events: `src.logs.parse_lines` of the run's stdout; arc_records: its
    arcs.jsonl records.

    The epoch of a controller line is the one its "Epoch N: Training
    controller" heading names; enas_lm prints no heading (and no epoch on
    its validation line), so there it is the epoch after those finished:
    the epoch of the last "Resuming from" line, plus one for every
    validation since. Epochs count from 1, the first epoch's phase being
    epoch 1."""
    # Keyed by epoch and controller step and kept last: a resumed run
    # replays the controller phase its kill interrupted.
    steps = {}
    valid = {}
    heading = None
    finished = 0
    for e in events:
        if e["type"] == "epoch_controller":
            heading = e["epoch"]
        elif e["type"] == "controller":
            epoch = heading if heading is not None else finished + 1
            steps[epoch, e["step"]] = (e.get("acc", e.get("rw")),
                                       e["entropy"])
        elif e["type"] == "resume":
            heading = None
            finished = e["epoch"]
        elif e["type"] == "eval" and e.get("split") == "valid":
            score = e.get("valid_accuracy", e.get("valid_ppl"))
            if score is None:
                continue
            epoch = e.get("epoch") or finished + 1
            valid[epoch] = score
            finished = epoch
    by_epoch = {}
    for (ep, _), (reward, entropy) in steps.items():
        entry = by_epoch.setdefault(ep, {"rewards": [], "entropies": []})
        entry["rewards"].append(reward)
        entry["entropies"].append(entropy)
    # The last `printed` records of an epoch (an interrupted printout is
    # printed again on resume).
    printed = {}
    for r in arc_records:
        printed.setdefault(r["epoch"], []).append(r["reward"])
    printed = {ep: v[-per_epoch:] for ep, v in printed.items()}
    out = []
    for ep in sorted(set(by_epoch) | set(printed) | set(valid)):
        c = by_epoch.get(ep)
        p = printed.get(ep, [])
        out.append({
            "epoch": ep,
            "controller_reward": (float(np.mean(c["rewards"]))
                                  if c else None),
            "controller_entropy": (float(np.mean(c["entropies"]))
                                   if c else None),
            "printed_mean": float(np.mean(p)) if p else None,
            "search_valid": valid.get(ep),
        })
    return out


# -- study.md -------------------------------------------------------------------

def fmt(value, digits=4):
    """A number as the tables print it ("-" for None)."""
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return "{:.{}f}".format(value, digits)


def _mean_pm(mean, std, digits=4):
    if mean is None:
        return "-"
    if std is None:
        return fmt(mean, digits)
    return "{} ± {}".format(fmt(mean, digits), fmt(std, digits))


def markdown(report):
    """The tables of `study.md`."""
    s = report["settings"]
    metric = report["metric"]
    better = "higher" if report["higher_is_better"] else "lower"
    lines = [
        "# Search study: {}".format(s["space"]),
        "",
        "Scores are {} ({} is better). Shared: the candidate scored with "
        "the search's shared weights on the whole validation split; "
        "retrained: trained from scratch for {} epoch(s) with the final "
        "flagfile, then evaluated.".format(metric, better,
                                            s["retrain_epochs"]),
        "",
        "| setting | value |", "|---|---|",
    ]
    for key in ("space", "search_flagfile", "search_overrides",
                "final_flagfile", "final_overrides", "policies", "seeds",
                "candidates", "top_k", "spread", "retrain_epochs"):
        value = s.get(key)
        if isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value)
        lines.append("| {} | `{}` |".format(key, value if value != ""
                                              else "(none)"))
    lines += ["", "## Summary per policy", "",
              "Kendall tau (tau-b) and Spearman rho between shared and "
              "retrained validation scores over the policy's retrained "
              "arcs (all seeds pooled); the best retrained validation "
              "score of each seed and that arc's test score, mean ± std "
              "over seeds (n - 1).", "",
              "| policy | retrained arcs | kendall_tau | spearman_rho | "
              "best valid (mean ± std) | its test (mean ± std) |",
              "|---|---|---|---|---|---|"]
    for policy, sm in report["summary"].items():
        lines.append("| {} | {} | {} | {} | {} | {} |".format(
            policy, sm["retrained"], fmt(sm["kendall_tau"]),
            fmt(sm["spearman_rho"]),
            _mean_pm(sm["best_valid_mean"], sm["best_valid_std"]),
            _mean_pm(sm["best_test_mean"], sm["best_test_std"])))
    lines += ["", "## Best retrained arc per seed", "",
              "| policy | seed | retrained | tau (this seed) | best valid | "
              "its test | arc |", "|---|---|---|---|---|---|---|"]
    for policy, sm in report["summary"].items():
        for seed, ps in sm["per_seed"].items():
            lines.append("| {} | {} | {} | {} | {} | {} | {} |".format(
                policy, seed, ps["retrained"], fmt(ps["kendall_tau"]),
                fmt(ps["best_valid"]), fmt(ps["best_test"]),
                "`{}`".format(ps["best_arc"]) if ps["best_arc"] else "-"))
    lines += ["", "## Candidates", "",
              "Per policy and seed, best shared score first.", "",
              "| policy | seed | rank | shared | retrained valid | "
              "retrained test | arc |", "|---|---|---|---|---|---|---|"]
    for policy in s["policies"]:
        for seed in s["seeds"]:
            mine = [r for r in report["arcs"]
                    if r["policy"] == policy and r["seed"] == seed]
            mine.sort(key=lambda r: r["shared_score"],
                      reverse=report["higher_is_better"])
            for rank, r in enumerate(mine):
                lines.append("| {} | {} | {} | {} | {} | {} | `{}` |".format(
                    policy, seed, rank + 1, fmt(r["shared_score"]),
                    fmt(r["retrained_valid"]), fmt(r["retrained_test"]),
                    r["arc"]))
    lines += ["", "## Search curves", "",
              "Per epoch: the controller's mean reward and entropy over its "
              "logged training steps (ENAS only: the random policy has no "
              "controller), the mean score of the 10 arcs the search "
              "printed (shared weights on one validation batch or window "
              "each; for PTB, ENAS's printed score adds the entropy "
              "bonus; \"-\" where the search prints none), and the "
              "search's own validation {} after the epoch (as its log "
              "prints it).".format(metric), "",
              "| policy | seed | epoch | controller reward | controller "
              "entropy | printed arcs' mean | search's validation |",
              "|---|---|---|---|---|---|---|"]
    for policy, by_seed in report["curves"].items():
        for seed, rows in by_seed.items():
            for row in rows:
                lines.append("| {} | {} | {} | {} | {} | {} | {} |".format(
                    policy, seed, row["epoch"],
                    fmt(row["controller_reward"]),
                    fmt(row["controller_entropy"]),
                    fmt(row["printed_mean"]),
                    fmt(row.get("search_valid"))))
    if report["notes"]:
        lines += ["", "## Notes", ""]
        lines += ["- " + n for n in report["notes"]]
    return "\n".join(lines) + "\n"


def parse_summary_table(text):
    """{policy: (kendall_tau, spearman_rho)} as printed in study.md's
    summary table (None for "-"): for checking the report against
    study.json."""
    out = {}
    section = False
    for line in text.splitlines():
        if line.startswith("## "):
            section = line == "## Summary per policy"
            continue
        if not section or not line.startswith("| ") or "---" in line:
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == "policy":
            continue
        out[cells[0]] = tuple(None if c == "-" else float(c)
                              for c in cells[2:4])
    return out


# -- study.png ------------------------------------------------------------------

COLOURS = {"enas": "tab:blue", "random": "tab:orange"}


def plot(report, path):
    """Three panels into `path`: the search curves (ENAS's controller
    reward, and every policy's printed arcs' mean score, per epoch; when no
    search printed arcs, as enas_lm's, every policy's own validation score
    on a right-hand axis instead); shared
    against retrained validation scores, one colour per policy, tau in the
    legend; the best retrained validation score of each seed per policy,
    with the mean."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    metric = report["metric"]
    policies = list(report["summary"])
    colour = {p: COLOURS.get(p, "C{}".format(i + 2))
              for i, p in enumerate(policies)}
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))

    ax = axes[0]
    for policy, by_seed in report["curves"].items():
        for k, (seed, rows) in enumerate(sorted(by_seed.items())):
            epochs = [r["epoch"] for r in rows]
            printed = [r["printed_mean"] for r in rows]
            label = "{}: printed arcs' mean".format(policy) if k == 0 else None
            if any(v is not None for v in printed):
                ax.plot(epochs, [np.nan if v is None else v for v in printed],
                        "-o", color=colour[policy], alpha=0.8, label=label,
                        markersize=3)
            reward = [r["controller_reward"] for r in rows]
            if any(v is not None for v in reward):
                ax.plot(epochs, [np.nan if v is None else v for v in reward],
                        "--", color=colour[policy], alpha=0.6,
                        label=("{}: controller reward".format(policy)
                               if k == 0 else None))
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("reward: {} (shared weights, one batch)".format(
        "accuracy" if report["higher_is_better"] else "80 / perplexity"))
    ax.set_title("Search: reward per epoch (one line per seed)")
    handles, labels = ax.get_legend_handles_labels()
    if not any(r.get("printed_mean") is not None
               for by_seed in report["curves"].values()
               for rows in by_seed.values() for r in rows):
        # No printed arcs (enas_lm): the searches' own validation score,
        # on an axis of its own.
        right = ax.twinx()
        for policy, by_seed in report["curves"].items():
            for k, (seed, rows) in enumerate(sorted(by_seed.items())):
                valid = [r.get("search_valid") for r in rows]
                if any(v is not None for v in valid):
                    right.plot([r["epoch"] for r in rows],
                               [np.nan if v is None else v for v in valid],
                               ":s", color=colour[policy], alpha=0.8,
                               markersize=3, label=(
                                   "{}: search's validation".format(policy)
                                   if k == 0 else None))
        right.set_ylabel("search's validation {}".format(metric))
        more = right.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    if handles:
        ax.legend(handles, labels, fontsize=8)

    ax = axes[1]
    for policy in policies:
        done = [r for r in report["arcs"] if r["policy"] == policy
                and r["retrained_valid"] is not None]
        tau = report["summary"][policy]["kendall_tau"]
        ax.scatter([r["shared_score"] for r in done],
                   [r["retrained_valid"] for r in done], color=colour[policy],
                   label="{} (tau = {})".format(policy, fmt(tau, 2)),
                   alpha=0.8)
    ax.set_xlabel("shared-weight validation {}".format(metric))
    ax.set_ylabel("retrained validation {}".format(metric))
    ax.set_title("Shared-weight against retrained scores")
    ax.legend(fontsize=8)

    ax = axes[2]
    for i, policy in enumerate(policies):
        sm = report["summary"][policy]
        values = [v["best_valid"] for v in sm["per_seed"].values()
                  if v["best_valid"] is not None]
        ax.scatter([i] * len(values), values, color=colour[policy],
                   zorder=3)
        if sm["best_valid_mean"] is not None:
            ax.errorbar([i + 0.15], [sm["best_valid_mean"]],
                        yerr=[sm["best_valid_std"] or 0.0], fmt="s",
                        color="black", capsize=4)
    ax.set_xticks(range(len(policies)))
    ax.set_xticklabels(policies)
    ax.set_xlim(-0.6, len(policies) - 0.4)
    ax.set_ylabel("best retrained validation {}".format(metric))
    ax.set_title("Best retrained arc per seed (square: mean ± std)")

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
