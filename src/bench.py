"""Benchmark: `python -m src.bench --config=NAME --json=PATH`.

Times one named configuration: graph build time (model construction plus
the first, tracing call of the step), then `--warmup` warm-up steps
(default 5), then the median, min and max of `--steps` timed steps (default
20; the published numbers use the defaults), and the peak resident memory
of the process by then (`peak_rss_mb`; after a search child's gating floor,
which traces one more step per arc: `peak_rss_mb_after_extra`).
`--config=all` runs every configuration in its own process
(so each peak memory is its own) and prints a table.

Each configuration (`CONFIGS`) names a flagfile of flags/ and what to time
in the run it describes: a child training step (searching, also the gating
ratio: `gating_floor`), one controller update, or the PTB test-set pass.
Its config is the one the entry point reads from that flagfile (with the
configuration's overrides, then `--jit_compile` and `--mixed_precision`),
and its models are those the space's session builds for the run (child,
trainer, and the `ControllerPhase` with the space's reward), as
`src.run_loop.train` builds them. Only the data differs: synthetic images
or word ids of the same shapes, fed by the session's own pipeline, so the
benchmark runs without the data files (timings do not depend on the
values).

`--jit_compile` (auto, true, false) and `--mixed_precision` are passed to
the entry point's flags, so the session resolves them as a run does. Each
result records both (`jit_compile`: whether the timed step or pass ran
under XLA, None where the flag does not apply; `mixed_precision`), and the
table prints them in its `xla` and `mixed` columns.

Against a reference: `--against_reference=PATH` (`--config=NAME` or
`all`; once per kind, so `all` can cover both) names a runnable copy of
melodyguan/enas (holding src/cifar10/main.py) or of google-research
enas_lm (holding enas_lm/src/fixed.py). For each configuration with a
matching reference (`Bench.reference`) it runs `--rounds` rounds (default
2) of ours, then the reference's own step for the same configuration, each
in a fresh process (ours: `python -m src.bench --config=NAME`; the
reference: `bench_reference.py` in PATH, given the configuration's flags,
keeping those the reference defines). The table adds the reference's best
median (best: the lowest median over the rounds), ours over it, its build
time and peak memory; our columns are those of our best round; rows
without a matching reference (the *_full rows, ptb_test_eval_cpu, a kind
not given) run once and print "-" there. `--json` records every round of
both sides. macro_search_cpu and macro_controller_cpu run the reference
with ENAS_REF_FIX_CLOSURE=1 (its closure bug fixed: all six branches are
computed and the sampled one used; as published only max pool ran, in the
child's step and in the controller's reward pass); the table notes it.
"""

import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from src import flagfile, registry
from src.errors import UserError

FLAGS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                         os.pardir, "flags")


@dataclasses.dataclass(frozen=True)
class Bench:
    """A configuration: the run of flags/<flagfile>.flags (its entry point
    is the name's first word) with `overrides` after the flagfile's flags,
    and what is timed in it: "child" (a training step of the run's child;
    searching, a new controller-sampled arc every step, plus the gating
    ratio), "controller" (one REINFORCE update of the run's controller
    phase) or "test_eval" (the PTB test-set pass of a fixed arc)."""
    flagfile: str
    timed: str = "child"
    overrides: tuple = ()
    # Searching: also time the gated step against baked arcs (not for
    # enas_lm, whose search trainer takes each step's arc as an argument).
    gating: bool = True
    # The reference whose own step `--against_reference` times beside ours
    # ("enas": melodyguan/enas, "enas_lm": google-research enas_lm; None:
    # no matching configuration there), and the environment its driver
    # runs in (the reference's own switches).
    reference: str = None
    reference_env: tuple = ()

    @property
    def entry(self):
        """The entry point: the longest one the flagfile's name starts
        with (cifar10_..., ptb_..., enas_lm_fixed_...)."""
        return max((e for e in registry.ENTRY_POINTS
                    if self.flagfile.startswith(e)), key=len)

    @property
    def path(self):
        return os.path.normpath(os.path.join(FLAGS_DIR,
                                             self.flagfile + ".flags"))


# The controller rows time one update per REINFORCE run (sample, reward
# pass, baseline, Adam), not the flagfiles' --controller_sync_replicas
# aggregation (Adam every --controller_num_aggregate runs).
ONE_UPDATE = ("--nocontroller_sync_replicas",)

# The reference's closure bug fixed (ENAS_REF_FIX_CLOSURE=1): every branch is
# computed and the sampled one returned; as published only max pool ran, in
# the macro child's step and in its controller's reward pass.
FIX_CLOSURE = (("ENAS_REF_FIX_CLOSURE", "1"),)

# The table of configurations. No size overrides: each flagfile's sizes are
# the configuration's (the *_cpu flagfiles were sized as these rows).
CONFIGS = {
    "macro_fixed_cpu": Bench("cifar10_macro_final_cpu", reference="enas"),
    "macro_search_cpu": Bench("cifar10_macro_search_cpu", reference="enas",
                              reference_env=FIX_CLOSURE),
    "macro_controller_cpu": Bench("cifar10_macro_search_cpu", "controller",
                                  ONE_UPDATE, reference="enas",
                                  reference_env=FIX_CLOSURE),
    "micro_search_cpu": Bench("cifar10_micro_search_cpu", reference="enas"),
    "micro_fixed_cpu": Bench("cifar10_micro_final_cpu", reference="enas"),
    "micro_controller_cpu": Bench("cifar10_micro_search_cpu", "controller",
                                  ONE_UPDATE, reference="enas"),
    "macro_fixed_full": Bench("cifar10_macro_final"),
    "macro_search_full": Bench("cifar10_macro_search"),
    "micro_search_full": Bench("cifar10_micro_search"),
    "micro_fixed_full": Bench("cifar10_micro_final"),
    "ptb_search_cpu": Bench("ptb_search_cpu", reference="enas"),
    "ptb_fixed_cpu": Bench("ptb_final_cpu", reference="enas"),
    "ptb_controller_cpu": Bench("ptb_search_cpu", "controller", ONE_UPDATE,
                                reference="enas"),
    "ptb_test_eval_cpu": Bench("ptb_final_cpu", "test_eval"),
    "ptb_search_full": Bench("ptb_search"),
    "ptb_fixed_full": Bench("ptb_final"),
    # enas_lm: one controller call is one Adam update with
    # --controller_num_aggregate=1.
    "enas_lm_fixed_cpu": Bench("enas_lm_fixed_cpu", reference="enas_lm"),
    "enas_lm_search_cpu": Bench("enas_lm_search_cpu", gating=False,
                                reference="enas_lm"),
    "enas_lm_controller_cpu": Bench("enas_lm_search_cpu", "controller",
                                    ("--controller_num_aggregate=1",),
                                    gating=False, reference="enas_lm"),
    "enas_lm_fixed_full": Bench("enas_lm_fixed"),
    "enas_lm_search_full": Bench("enas_lm_search", gating=False),
}

@dataclasses.dataclass(frozen=True)
class BenchOptions:
    """How a configuration is built and timed: the entry points'
    `--jit_compile` ("auto", "true", "false") and `--mixed_precision`, the
    warm-up and timed step counts, and `flags`: more flag overrides after
    the configuration's (tests shrink the sizes with them)."""
    jit_compile: str = "auto"
    mixed_precision: bool = False
    warmup: int = 5
    steps: int = 20
    flags: tuple = ()

    def __post_init__(self):
        if self.jit_compile not in ("auto", "true", "false"):
            raise UserError("--jit_compile={!r} is unknown: use auto, true "
                            "or false".format(self.jit_compile))
        if self.warmup < 0 or self.steps < 1:
            raise UserError("--warmup must be at least 0 and --steps at "
                            "least 1")

    def flag_overrides(self):
        # --mixed_precision only when asked for: enas_lm's entry points do
        # not define it (and no flagfile turns it on).
        return (("--jit_compile=" + self.jit_compile,)
                + (("--mixed_precision",) if self.mixed_precision else ())
                + tuple(self.flags))


@dataclasses.dataclass
class Case:
    """step(): runs one step and blocks until it is done. extra(): optional,
    run after the timing, returns more result fields (e.g. gating ratio).
    warmup, steps: fixed counts for a long "step" (a whole evaluation pass)
    instead of the options'. jit_compile: whether the timed step runs under
    XLA (None: the option does not apply to it). session: the space's
    session of the run; child, trainer, phase: the models it built (phase
    None for a fixed arc)."""
    step: callable
    description: str
    extra: callable = None
    warmup: int = None
    steps: int = None
    jit_compile: bool = None
    session: object = None
    child: object = None
    trainer: object = None
    phase: object = None


# ------------------------------------------------------------------ data

def cifar_sizes(cfg):
    """{split: images} of `synthetic_cifar`: max(2000, 40 batches) training
    images, `cfg.num_valids` held out for the reward (none when 0), 100
    test."""
    return {"train": max(2000, 40 * cfg.batch_size),
            "valid": cfg.num_valids or 0, "test": 100}


def synthetic_cifar(cfg, seed=0):
    """CifarData of random images, `cifar_sizes(cfg)` of them."""
    import numpy as np

    from src.cifar10.data import CifarData
    rng = np.random.default_rng(seed)
    images, labels = {}, {}
    for split, n in cifar_sizes(cfg).items():
        images[split] = (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
                         if n else None)
        labels[split] = (rng.integers(0, 10, n).astype(np.int32)
                         if n else None)
    return CifarData(images=images, labels=labels,
                     mean=np.full([3], 0.47, np.float32),
                     std=np.full([3], 0.25, np.float32))


# Words of the synthetic PTB splits (train, valid, test: PTB's test size)
# and its vocabulary.
PTB_WORDS = (200000, 80000, 82430)
PTB_VOCAB = 10000


def synthetic_ptb(cfg, vocab_size=PTB_VOCAB, seed=0, words=PTB_WORDS):
    """PtbData of random word ids: `words` in the train, valid and test
    splits (the test split's: PTB's 82430)."""
    import numpy as np

    from src.ptb.data import PtbData
    rng = np.random.default_rng(seed)
    train, valid = (rng.integers(0, vocab_size, n).astype(np.int32)
                    for n in words[:2])
    test = np.random.default_rng(seed + 1).integers(
        0, vocab_size, words[2]).astype(np.int32)
    words = [str(i) for i in range(vocab_size)]
    return PtbData(train=train, valid=valid, test=test,
                   vocab={w: i for i, w in enumerate(words)},
                   index=dict(enumerate(words)), source="synthetic")


# The synthetic data of each entry point's spaces.
SYNTHETIC_DATA = {"cifar10": synthetic_cifar, "ptb": synthetic_ptb,
                  "enas_lm_fixed": synthetic_ptb,
                  "enas_lm_search": synthetic_ptb}


def open_session(entry, space, cfg):
    """The space's session of the run, over synthetic data."""
    if entry not in SYNTHETIC_DATA:
        raise ValueError("src.bench has no synthetic data for entry point "
                         "{!r}".format(entry))
    return space.open_session(cfg, data=SYNTHETIC_DATA[entry](cfg))


def full_batches(session, batch_size):
    """Endless full training batches of the session's pipeline."""
    epoch = 0
    while True:
        for batch in session.epoch_batches(
                epoch, epoch * session.num_train_batches):
            if batch[0].shape[0] == batch_size:
                yield batch
        epoch += 1


# ---------------------------------------------------------------- building

def run_config(name, options):
    """(space, cfg) of configuration `name` as its entry point reads them
    from the flagfile, the overrides and the options."""
    from src import entry_point, run_loop
    bench = CONFIGS[name]
    fv, _ = entry_point.parse_flags(
        bench.entry, ["bench", "--flagfile=" + bench.path,
                      *bench.overrides, *options.flag_overrides()])
    space = run_loop.space_of(bench.entry, fv)
    return space, space.config_from_flags(fv)


def build_case(name, options):
    """Builds configuration `name`'s run (under the caller's dtype policy)
    and returns its Case."""
    from src import entry_point
    bench = CONFIGS[name]
    space, cfg = run_config(name, options)
    strategy = entry_point.prepare_run(cfg)
    session = open_session(bench.entry, space, cfg)
    child, trainer, phase, _ = session.build(strategy)
    session.resumed_at(0, 0)
    source = "flags/{}.flags{}".format(
        bench.flagfile, "".join(" " + o for o in bench.overrides))
    sizes = space.describe_sizes(cfg.child)
    parts = dict(session=session, child=child, trainer=trainer, phase=phase)

    if bench.timed == "child":
        batches = full_batches(session, cfg.batch_size)

        def step():
            session.train_step(next(batches))

        extra = None
        if phase is not None and bench.gating:
            def extra():
                return gating_floor(session, trainer, phase.controller)
        what = ("search child training step with a new sampled arc every "
                "step" if phase else "fixed child training step")
        return Case(step, "{} {} ({}): {}, batch {}".format(
                        space.name, what, source, sizes, cfg.batch_size),
                    extra, jit_compile=trainer.jit_compile, **parts)

    if bench.timed == "controller":
        if phase is None:
            raise UserError("{}: {} has a fixed arc, no controller".format(
                name, source))
        rewards = iter(phase.hooks.reward_batches(0))

        def step():
            phase.reinforce.run(*next(rewards))["loss"].numpy()

        return Case(step, "one {} controller update: sample, the run's "
                    "reward on a batch of {} ({}), baseline, optimiser "
                    "({})".format(space.name, cfg.batch_size, sizes, source),
                    jit_compile=getattr(trainer, "reward_jit_compile", None),
                    **parts)

    if bench.timed == "test_eval":
        return test_eval_case(session, trainer, source, sizes, parts)
    raise ValueError("unknown Bench.timed {!r}".format(bench.timed))


def test_eval_case(session, trainer, source, sizes, parts):
    """The PTB test-set evaluation (batch 1, fixed arc): one 'step' is the
    whole pass the fast way (long windows, the state carried); `extra`
    times the reference's way (one word per call) on 2000 words and scales
    it to the whole set."""
    import tensorflow as tf

    stream = session.data.test

    def step():
        trainer.evaluate(stream, 1, 1)

    def extra():
        n = min(2000, stream.size - 1)
        state = trainer.child.zero_state(1)
        times = []
        for i in range(n):
            x = tf.constant(stream[None, i:i + 1])
            y = tf.constant(stream[None, i + 1:i + 2])
            t = time.perf_counter()
            nll, state = trainer.eval_window(x, y, state)
            nll.numpy()
            times.append(time.perf_counter() - t)
        per_word = statistics.median(times[min(100, n // 2):])
        return {"one_word_per_call_s_per_word": per_word,
                "one_word_per_call_s_estimated": per_word * (stream.size - 1),
                "words": int(stream.size - 1)}

    return Case(step, "PTB test-set evaluation, batch 1, {} words ({}; {}): "
                "long windows with the state carried".format(
                    stream.size - 1, sizes, source),
                extra, warmup=1, steps=3, jit_compile=False, **parts)


def gating_floor(session, trainer, controller, num_arcs=5, steps_per_arc=5):
    """Times the gated search step (the arc a tensor read at run time,
    tf.switch_case) against the same child with each arc baked in at trace
    time (`BakedArc`: one trace per arc), for the same `num_arcs` sampled
    arcs, `steps_per_arc` steps each (after an untimed first). Both are the
    trainer's own training step (its loss, aux head, XLA choice and loss
    scaling), on the session's training batches. Returns the medians and
    their ratio."""
    import tensorflow as tf

    from src.baked_arc import BakedArc
    batches = full_batches(session, session.cfg.batch_size)
    arcs = [controller.sample()["arc"].numpy() for _ in range(num_arcs)]
    current = tf.Variable(arcs[0], dtype=tf.int32, trainable=False)
    gated = session.trainer_for(trainer.child, current.read_value)
    timings = {"gated": [], "baked": []}
    for values in arcs:
        current.assign(values)
        baked = session.trainer_for(trainer.child,
                                    lambda v=values: BakedArc(v))
        for kind, t in (("gated", gated), ("baked", baked)):
            for i in range(steps_per_arc + 1):
                batch = next(batches)
                start = time.perf_counter()
                t.train_step(*batch)["loss"].numpy()
                if i:  # the first call of each may trace
                    timings[kind].append(time.perf_counter() - start)
    gated_s = statistics.median(timings["gated"])
    baked_s = statistics.median(timings["baked"])
    return {"gated_step_s_median": gated_s, "baked_step_s_median": baked_s,
            "gating_ratio": gated_s / baked_s,
            "gating_arcs": num_arcs, "gating_steps_per_arc": steps_per_arc}


# ----------------------------------------------------------------- timing

def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def check_config(name):
    """UserError unless `name` is a configuration."""
    if name not in CONFIGS:
        raise UserError("unknown --config={!r}: use one of {} or all".format(
            name, ", ".join(sorted(CONFIGS))))


def time_config(name, options=BenchOptions(), profile_dir=None):
    """Builds and times configuration `name` with `options` under the
    run's dtype policy (restored afterwards); returns the result dict.
    profile_dir: then the timed steps run once more under the profiler,
    trace written there, and "profile" holds `bench_profile.summarise`."""
    from src import precision
    check_config(name)
    with precision.mixed_precision_scope(options.mixed_precision):
        return _time_case(name, options, profile_dir)


def _time_case(name, options, profile_dir=None):
    t0 = time.perf_counter()
    case = build_case(name, options)
    warmup, steps = options.warmup, options.steps
    if case.warmup is not None:
        warmup, steps = case.warmup, case.steps
    case.step()  # traces the step function
    build_s = time.perf_counter() - t0
    for _ in range(warmup):
        case.step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        case.step()
        times.append(time.perf_counter() - t)
    result = {
        "config": name,
        "description": case.description,
        "step_s_median": statistics.median(times),
        "step_s_min": min(times),
        "step_s_max": max(times),
        "build_s": build_s,
        "peak_rss_mb": peak_rss_mb(),
        "steps": steps,
        "warmup": warmup,
        "jit_compile_flag": options.jit_compile,
        "jit_compile": case.jit_compile,
        "mixed_precision": options.mixed_precision,
    }
    if case.extra is not None:
        # The timed steps' peak stays "peak_rss_mb" (what the reference's
        # run is compared with); the gating floor traces more graphs.
        result.update(case.extra())
        result["peak_rss_mb_after_extra"] = peak_rss_mb()
    if profile_dir is not None:
        from src import bench_profile
        wall = bench_profile.profile_steps(case.step, steps, profile_dir)
        result["profile"] = bench_profile.summarise(
            bench_profile.op_stats(bench_profile.newest_xspace(profile_dir)),
            wall, steps)
    return result


# ------------------------------------------------------ against a reference

# The runnable references `--against_reference` takes: kind -> (what it is,
# the files that tell it apart).
REFERENCES = {
    "enas": ("melodyguan/enas", ("src/cifar10/main.py", "src/ptb/main.py")),
    "enas_lm": ("google-research enas_lm", ("enas_lm/src/fixed.py",
                                            "enas_lm/src/search.py")),
}

# The driver run as a file in the reference's folder (its own `src` would
# clash with this package).
REFERENCE_DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "bench_reference.py")


def reference_kind(path):
    """The kind ("enas" or "enas_lm") of the runnable reference at `path`,
    from its files; UserError when it is neither."""
    for kind, (_, files) in REFERENCES.items():
        if all(os.path.isfile(os.path.join(path, f)) for f in files):
            return kind
    raise UserError(
        "--against_reference={} is not a runnable reference: it should hold "
        "melodyguan/enas's {} or google-research enas_lm's {}".format(
            path, " and ".join(REFERENCES["enas"][1]),
            " and ".join(REFERENCES["enas_lm"][1])))


def references_by_kind(paths):
    """{kind: absolute path} of the `--against_reference` paths; UserError
    for a path that is no reference or two of one kind."""
    out = {}
    for path in paths:
        kind = reference_kind(path)
        if kind in out:
            raise UserError("--against_reference is given twice for {} ({} "
                            "and {}): give one of each kind".format(
                                REFERENCES[kind][0], out[kind], path))
        out[kind] = os.path.abspath(path)
    return out


def interleaving(rounds, with_reference):
    """The order of the timed runs of one configuration: (round, side)
    pairs, round 1 ours then the reference's, round 2 the same, ...; one
    round of ours alone without a reference."""
    if not with_reference:
        return [(1, "ours")]
    return [(r, side) for r in range(1, rounds + 1)
            for side in ("ours", "reference")]


def configuration_flags(name, options):
    """The flags of configuration `name`'s run, its flagfile expanded: the
    flagfile's, the configuration's overrides, the options'."""
    bench = CONFIGS[name]
    return flagfile.expand(["--flagfile=" + bench.path, *bench.overrides,
                            *options.flag_overrides()])


def reference_data_sizes(name, options):
    """The synthetic data sizes of configuration `name` (train, valid,
    test: images or words), as our side draws them."""
    bench = CONFIGS[name]
    if bench.entry == "cifar10":
        _, cfg = run_config(name, options)
        return tuple(cifar_sizes(cfg).values())
    return PTB_WORDS


def reference_command(name, options, json_path, sizes):
    """The driver's command line for configuration `name` (run in the
    reference's folder): its options, then `--` and the configuration's
    flags (the driver keeps those the reference defines)."""
    bench = CONFIGS[name]
    return [sys.executable, REFERENCE_DRIVER, "--entry=" + bench.entry,
            "--timed=" + bench.timed,
            "--warmup={}".format(options.warmup),
            "--steps={}".format(options.steps),
            "--data_sizes=" + ",".join(str(n) for n in sizes),
            "--vocab_size={}".format(PTB_VOCAB),
            "--json=" + json_path, "--", *configuration_flags(name, options)]


def reference_env(name, path):
    """The driver's environment: the reference's folder as the only
    PYTHONPATH, and the configuration's switches."""
    env = dict(os.environ, PYTHONPATH=path)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(CONFIGS[name].reference_env)
    return env


def _failure(out):
    return out.stderr[-2000:]


def run_ours(name, options):
    """(result, None) of configuration `name` timed by `src.bench` in a
    process of its own, or (None, the end of its error output)."""
    out = subprocess.run(
        [sys.executable, "-m", "src.bench", "--config=" + name,
         "--warmup={}".format(options.warmup),
         "--steps={}".format(options.steps),
         *options.flag_overrides(), "--json=/dev/stdout"],
        capture_output=True, text=True)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if out.returncode or not lines:
        return None, _failure(out)
    return json.loads(lines[-1]), None


def run_reference(name, options, path, sizes):
    """(result, None) of the reference at `path` timing its own step for
    configuration `name` (`bench_reference.py` in a process of its own),
    or (None, the end of its error output)."""
    import tempfile
    fd, json_path = tempfile.mkstemp(prefix="bench_reference_",
                                     suffix=".json")
    os.close(fd)
    try:
        out = subprocess.run(
            reference_command(name, options, json_path, sizes), cwd=path,
            env=reference_env(name, path), capture_output=True, text=True)
        with open(json_path) as f:
            text = f.read().strip()
    finally:
        os.remove(json_path)
    if out.returncode or not text:
        return None, _failure(out)
    return json.loads(text), None


def best(results):
    """The result with the lowest median of `results` (None skipped), or
    None."""
    results = [r for r in results if r]
    return min(results, key=lambda r: r["step_s_median"]) if results else None


def _stderr(line):
    print(line, file=sys.stderr, flush=True)


def compare(names, options, references, rounds, log=print,
            progress=_stderr):
    """Times each configuration of `names` against its reference (kind ->
    path in `references`) in `interleaving` order, each run in a fresh
    process; `log` reports failures, `progress` each run. Returns one entry
    a configuration: the best round of each side (lowest median), their
    ratio and every round's results."""
    entries = []
    for name in names:
        kind = CONFIGS[name].reference
        path = references.get(kind) if kind else None
        sizes = reference_data_sizes(name, options) if path else None
        runs = []
        for round_no, side in interleaving(rounds, path is not None):
            if side == "ours":
                runs.append({"round": round_no, "ours": None,
                             "reference": None})
                result, error = run_ours(name, options)
            else:
                result, error = run_reference(name, options, path, sizes)
            runs[-1][side] = result
            progress("{} round {} {}: {}".format(
                name, round_no, side, "failed" if result is None else
                "{:.4f} s/step".format(result["step_s_median"])))
            if error is not None:
                runs[-1][side + "_error"] = error
                log("{}: {} failed in round {}\n{}".format(
                    name, "ours" if side == "ours" else "the reference",
                    round_no, error))
        ours = best(r["ours"] for r in runs)
        ref = best(r["reference"] for r in runs)
        entries.append({
            "config": name,
            "reference_kind": kind if path else None,
            "reference_path": path,
            "reference_env": dict(CONFIGS[name].reference_env) if path
            else {},
            "ours": ours, "reference": ref,
            "ratio_ours_to_reference": (
                ours["step_s_median"] / ref["step_s_median"]
                if ours and ref else None),
            "rounds": runs})
    return entries


# ------------------------------------------------------------------ table

def _yes_no(value):
    if value is None:
        return "-"
    return "yes" if value else "no"


def format_row(r, reference=None, against=False):
    """The table row of our result `r`; `against`: then the reference
    columns, from its result `reference` ("-" without one)."""
    gating = r.get("gating_ratio")
    row = ("{:<22s} {:>9.4f} {:>9.4f} {:>9.4f} {:>8.1f} {:>9.0f} "
           "{:>7s} {:>4s} {:>6s}").format(
        r["config"], r["step_s_median"], r["step_s_min"], r["step_s_max"],
        r["build_s"], r["peak_rss_mb"],
        "{:.2f}".format(gating) if gating else "-",
        _yes_no(r.get("jit_compile")), _yes_no(r.get("mixed_precision")))
    if not against:
        return row
    if reference is None:
        return row + REFERENCE_COLUMNS.format("-", "-", "-", "-")
    return row + REFERENCE_COLUMNS.format(
        "{:.4f}".format(reference["step_s_median"]),
        "{:.2f}".format(r["step_s_median"] / reference["step_s_median"]),
        "{:.1f}".format(reference["build_s"]),
        "{:.0f}".format(reference["peak_rss_mb"]))


HEADER = ("{:<22s} {:>9s} {:>9s} {:>9s} {:>8s} {:>9s} {:>7s} {:>4s} "
          "{:>6s}").format(
    "config", "median_s", "min_s", "max_s", "build_s", "peak_MB", "gating",
    "xla", "mixed")

# The reference's columns of `--against_reference`: its best median, ours
# over it, its build time and peak memory.
REFERENCE_COLUMNS = " {:>12s} {:>8s} {:>11s} {:>11s}"
AGAINST_HEADER = HEADER + REFERENCE_COLUMNS.format(
    "ref_median_s", "ours/ref", "ref_build_s", "ref_peak_MB")


def header(jit_compile, mixed_precision, references=None, rounds=None):
    """The table's header: the options (and with `references`, kind ->
    path, what is compared), then the column names."""
    text = "# --jit_compile={} --{}mixed_precision".format(
        jit_compile, "" if mixed_precision else "no")
    if references is None:
        return text + "\n" + HEADER
    for kind, path in sorted(references.items()):
        text += "\n# against {} at {}".format(REFERENCES[kind][0], path)
    return text + (
        "\n# --rounds={}: ours then the reference's own step, each in a "
        "fresh process; each side's\n# best round (lowest median) is "
        "shown, ours in the first columns\n{}".format(rounds,
                                                      AGAINST_HEADER))


def against_table(entries, options, references, rounds):
    """The `--against_reference` table of `compare`'s entries, with a note
    for each reference run under a switch."""
    lines = [header(options.jit_compile, options.mixed_precision, references,
                    rounds)]
    notes = []
    for e in entries:
        if e["ours"] is None:
            lines.append("{:<22s} failed".format(e["config"]))
            continue
        lines.append(format_row(e["ours"], e["reference"], against=True))
        if e["reference_env"]:
            notes.append("# {}: the reference ran with {}".format(
                e["config"], " ".join("{}={}".format(k, v) for k, v in
                                      sorted(e["reference_env"].items()))))
    return "\n".join(lines + notes)


# ------------------------------------------------------------------- main

def define_flags(flag_values):
    """The benchmark's flags, in a FlagValues of its own (src.tool)."""
    from absl import flags

    def define(kind, *args, **kwargs):
        getattr(flags, "DEFINE_" + kind)(*args, flag_values=flag_values,
                                         **kwargs)
    define("string", "config", "macro_fixed_cpu",
           "Configuration to time, or 'all'.")
    define("string", "json", None, "Write the result(s) to this JSON file.")
    define("integer", "warmup", 5, "Untimed steps after the first (tracing) "
           "one (the published numbers: 5).", lower_bound=0)
    define("integer", "steps", 20, "Timed steps (the published numbers: 20; "
           "fewer for the slow *_full configurations).", lower_bound=1)
    define("enum", "jit_compile", "auto", ["auto", "true", "false"],
           "XLA for the timed steps, as the entry points' flag: auto "
           "(their measured choice per space and mode), true, false.")
    define("boolean", "mixed_precision", False,
           "Build the children under the mixed_float16 policy with "
           "loss-scaled trainers, as the entry points' flag.")
    define("multi_string", "against_reference", None,
           "A runnable copy of a reference (melodyguan/enas, or "
           "google-research enas_lm): time its own step for each "
           "configuration beside ours. Once per kind.")
    define("string", "profile", None, "With one --config: run the timed "
           "steps once more under the TensorFlow profiler, write the trace "
           "to this folder and print where the step's time goes "
           "(src.bench_profile).")
    define("integer", "rounds", 2, "With --against_reference: rounds of "
           "ours then the reference's; the best (lowest) median counts.",
           lower_bound=1)


def main(fv, argv):
    if len(argv) > 1:
        raise UserError("unexpected arguments {}: every option is a --flag"
                        .format(" ".join(argv[1:])))
    options = BenchOptions(fv.jit_compile, fv.mixed_precision, fv.warmup,
                           fv.steps)
    if fv.config != "all":
        check_config(fv.config)
    if fv.profile and (fv.config == "all" or fv.against_reference):
        raise UserError("--profile times one configuration of ours: give "
                        "one --config and no --against_reference")
    if fv.against_reference:
        references = references_by_kind(fv.against_reference)
        names = list(CONFIGS) if fv.config == "all" else [fv.config]
        payload = compare(names, options, references, fv.rounds)
        if fv.json != "/dev/stdout":
            print(against_table(payload, options, references, fv.rounds))
        if fv.config != "all":
            payload = payload[0]
    elif fv["rounds"].present:
        raise UserError("--rounds is for --against_reference only")
    elif fv.config == "all":
        results = []
        for name in CONFIGS:
            result, error = run_ours(name, options)
            if result is None:
                print("{}: failed\n{}".format(name, error))
                continue
            results.append(result)
        print(header(options.jit_compile, options.mixed_precision))
        for r in results:
            print(format_row(r))
        payload = results
    else:
        payload = time_config(fv.config, options, fv.profile)
        if fv.json != "/dev/stdout":
            print(header(options.jit_compile, options.mixed_precision))
            print(format_row(payload))
            if fv.profile:
                from src import bench_profile
                print(bench_profile.format_summary(fv.config,
                                                   payload["profile"]))
    if fv.json:
        text = json.dumps(payload)
        if fv.json == "/dev/stdout":
            print(text)
        else:
            with open(fv.json, "w") as f:
                f.write(text + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from src import tool
    tool.run(define_flags, main, doc=__doc__)
