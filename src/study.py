"""The search study: `python -m src.study --flagfile=flags/study_ptb_cpu.flags`.

Does the controller find better architectures than chance at the same
budget, and how do the architectures found score when trained from
scratch? For each policy (`--policies`, default enas and random) and seed
(`--seeds` of them, `--first_seed` on):

1. search: the space's search entry point on `--search_flagfile` (then
   `--search_overrides`) with `--search_policy`, `--seed` and an output
   folder of its own; a normal, resumable run;
2. score: `python -m src.study_score` draws `--candidates` distinct arcs
   from the finished search's policy (the trained controller, or uniform
   draws) and scores each with the shared weights on the whole validation
   split (accuracy for CIFAR-10, perplexity for PTB and enas_lm);
3. retrain: the `--top_k` best candidates and `--spread` more at evenly
   spaced ranks of the rest (so the ranking is measured over a range),
   each trained from scratch by the space's final entry point on
   `--final_flagfile` (then `--final_overrides`) with the arc, the
   epochs (`--retrain_epochs`) and the search's seed (CIFAR-10: also the
   search's `--num_valids`, so the retrained validation accuracy is on
   the images the shared weights were scored on); its last validation
   and test scores are recorded.

What differs between spaces is data of `registry.SpaceInfo`: the entry
points of the search and of the final training (one for CIFAR-10 and
PTB; enas_lm's `src.enas_lm.search` and `src.enas_lm.fixed`) and the
names of their fixed-arc and epochs flags (`--child_fixed_arc` and
`--num_epochs`; enas_lm's `--fixed_arc` and `--child_num_train_epochs`).
A flagfile is of the space its `--search_for` names, or, without one, of
the space whose entry points take no `--search_for` (enas_lm).

Then `study.json`, `study.md` and `study.png` in `--output_dir`
(src.study_report).

Jobs are processes of the entry points (and of src.study_score), run
`--parallel` at a time, each in a folder of its own under --output_dir:
`<policy>/seed_<s>/search`, `.../score`, `.../arc_<hash of the arc>`.
A job that succeeds gets `done.json` (its command, result, and the
finish time of the job it followed); running the study again skips those
jobs, and runs the others (a half-finished search or retraining resumes
from its checkpoints). A changed command (say, a larger
--retrain_epochs) or a redone earlier job makes a job run again. A job
that fails is named with its log and the jobs that do not need it still
run; the study then exits with status 1 (after writing the report of what
finished).

`--print_jobs` writes every job as one command line to `jobs.txt` (by
stage: a stage's jobs can run at once, after the stage before) and runs
nothing; each line runs one job by name (`--job=<policy>/seed_<s>/search`,
`.../score`, `.../retrain_<i>`, the i-th arc of the selection) and writes
its done.json, so a cluster's scheduler can run them. Running the study
command afterwards skips every finished job and writes the report.

Flags after the flagfile override it. Bad study flags are one line
`error: ...` with status 2, before anything runs.
"""

import dataclasses
import datetime
import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

from absl import flags

from src import flagfile, registry, study_report, tool
from src.errors import UserError
from src.logs import parse_lines

POLICIES = ("enas", "random")
DONE = "done.json"
LOG = "job.log"
RUNNING = "running.pid"
# The study's own flags, left out of the job lines of jobs.txt.
NOT_IN_JOB_LINES = ("print_jobs", "parallel", "job", "gpus")


def define_flags(fv):
    d = dict(flag_values=fv)
    flags.DEFINE_string("search_flagfile", None, "The search's flagfile "
                        "(the flags of the space's search entry point).",
                        **d)
    flags.DEFINE_string("search_overrides", "", "Flags after the search "
                        "flagfile (one string, split as a shell does).", **d)
    flags.DEFINE_string("final_flagfile", None, "The retraining's "
                        "flagfile (the same space's final entry point).",
                        **d)
    flags.DEFINE_string("final_overrides", "", "Flags after the final "
                        "flagfile (one string, split as a shell does).", **d)
    flags.DEFINE_string("space", None, "The search space (default: the "
                        "one the search flagfile's --search_for names); "
                        "when given, both flagfiles must be of it.", **d)
    flags.DEFINE_list("policies", list(POLICIES), "Search policies, "
                      "comma-separated: enas, random.", **d)
    flags.DEFINE_integer("seeds", 3, "Seeds per policy.", **d)
    flags.DEFINE_integer("first_seed", 1, "The first seed (then +1, ...).",
                         **d)
    flags.DEFINE_integer("candidates", 20, "Arcs drawn from each finished "
                         "search and scored with its shared weights.", **d)
    flags.DEFINE_integer("top_k", 3, "The best candidates retrained.", **d)
    flags.DEFINE_integer("spread", 2, "Further candidates retrained, at "
                         "evenly spaced ranks of the rest down to the "
                         "worst.", **d)
    flags.DEFINE_integer("retrain_epochs", 1, "Epochs of each retraining "
                         "(its --num_epochs; enas_lm's "
                         "--child_num_train_epochs).", **d)
    flags.DEFINE_integer("parallel", 1, "Jobs run at once.", **d)
    flags.DEFINE_list("gpus", [], "GPU ids for the jobs, comma-separated: "
                      "each running job sees one of them alone "
                      "(CUDA_VISIBLE_DEVICES); --parallel defaults to their "
                      "number. Empty: every job sees what the machine has.",
                      **d)
    flags.DEFINE_string("output_dir", None, "The study's folder.", **d)
    flags.DEFINE_boolean("print_jobs", False, "Write every job's command "
                         "line to <output_dir>/jobs.txt and run nothing.",
                         **d)
    flags.DEFINE_string("job", None, "Run only this job (a name of "
                        "jobs.txt, e.g. enas/seed_1/search).", **d)
    return fv


# -- the study's settings ------------------------------------------------------

def _takes_search_for(entry):
    """Whether entry point `entry` picks its space by --search_for (the
    CIFAR-10 and PTB entry points; enas_lm's two run one space each and
    have no such flag)."""
    return "search_for" in registry.define_entry_flags(entry,
                                                       flags.FlagValues())


def _space_of_flagfile(args, what, role):
    """The spaces a flagfile's expanded args (and overrides) can be of, as
    their `role` entry point ("search_entry" or "final_entry" of
    `registry.SpaceInfo`): those its --search_for names, or without one,
    those whose entry point takes no --search_for (enas_lm)."""
    value = flagfile.last_value(args, "search_for")
    if value is None:
        names = [n for n in registry.names()
                 if not _takes_search_for(getattr(registry.info(n), role))]
    else:
        names = [n for n in registry.names()
                 if registry.info(n).search_for == value]
    if not names:
        raise UserError("{} has no --search_for of a known space ({!r}): "
                        "use a flagfile of one of {}".format(
                            what, value, ", ".join(registry.names())))
    return names


def _entry_flags(entry, args, what):
    """The entry point's FlagValues parsed from `args`; a bad flag is a
    UserError naming `what`."""
    fv = registry.define_entry_flags(entry, flags.FlagValues())
    try:
        fv(["study"] + list(args))
    except flags.Error as e:
        raise UserError("{}: {}".format(what, " ".join(str(e).split()))) \
            from None
    return fv


def legal_arc(arc_class, sizes, longest=20000):
    """The shortest all-zero arc `arc_class` accepts with `sizes` (zeros
    are legal in every space: op 0, input 0, no skips): a probe of the
    arcs' structure for checking that the final flagfile's sizes take the
    search's arcs, with the arc classes' own parsers."""
    for n in range(1, longest + 1):
        text = " ".join(["0"] * n)
        try:
            arc_class.from_text(text, sizes)
            return text
        except UserError:
            continue
    raise UserError("no arc of up to {} integers fits the search's sizes {}"
                    .format(longest, sizes))


def _flagfile_args(path, name):
    try:
        return flagfile.file_args(path)
    except UserError as e:
        raise UserError("--{}: {}".format(name, e)) from None


def _split(text, name):
    try:
        return shlex.split(text or "")
    except ValueError as e:
        raise UserError("--{}: {}".format(name, e)) from None


@dataclasses.dataclass
class Study:
    """The validated settings of a study (see `settings_from_flags`)."""
    space: str
    search_flagfile: str
    search_overrides: list
    final_flagfile: str
    final_overrides: list
    policies: list
    seeds: list
    candidates: int
    top_k: int
    spread: int
    retrain_epochs: int
    parallel: int
    output_dir: str
    gpus: list = dataclasses.field(default_factory=list)
    num_valids: int = None          # CIFAR-10: the search's held-out images
    train_on_valid: bool = False    # PTB: valid and test are one text
    # Flags after a retraining's own (`--nocontroller_training` for an
    # entry point that has one).
    retrain_flags: list = dataclasses.field(default_factory=list)
    argv: list = dataclasses.field(default_factory=list)

    @property
    def info(self):
        """The space's `registry.SpaceInfo`: its search and final entry
        points, their fixed-arc and epochs flags."""
        return registry.info(self.space)

    @property
    def search_module(self):
        return registry.entry(self.info.search_entry).module

    @property
    def final_module(self):
        return registry.entry(self.info.final_entry).module

    @property
    def metric(self):
        return study_report.METRICS[self.space]

    def settings(self):
        metric, higher = self.metric
        return {"space": self.space, "metric": metric,
                "higher_is_better": higher,
                "search_flagfile": self.search_flagfile,
                "search_overrides": shlex.join(self.search_overrides),
                "final_flagfile": self.final_flagfile,
                "final_overrides": shlex.join(self.final_overrides),
                "policies": self.policies, "seeds": self.seeds,
                "candidates": self.candidates, "top_k": self.top_k,
                "spread": self.spread,
                "retrain_epochs": self.retrain_epochs,
                "output_dir": self.output_dir}


def settings_from_flags(f, argv=()):
    """A Study from the parsed study flags; one UserError for the first
    bad setting, before anything runs."""
    for name in ("search_flagfile", "final_flagfile", "output_dir"):
        if not f[name].value:
            raise UserError("--{} is required".format(name))
    policies = list(f.policies)
    if not policies:
        raise UserError("--policies is empty: give enas, random or both")
    for p in policies:
        if p not in POLICIES:
            raise UserError("--policies: {!r} is unknown: use enas, random "
                            "or both".format(p))
    if len(set(policies)) != len(policies):
        raise UserError("--policies names a policy twice: {}".format(
            ",".join(policies)))
    minimums = {"seeds": 1, "candidates": 1, "top_k": 1, "spread": 0,
                "retrain_epochs": 1, "parallel": 1}
    for name, least in minimums.items():
        if f[name].value < least:
            raise UserError("--{} must be at least {}, got {}".format(
                name, least, f[name].value))
    if f.top_k > f.candidates:
        raise UserError("--top_k={} is more than --candidates={}: only "
                        "scored candidates can be retrained".format(
                            f.top_k, f.candidates))
    if f.top_k + f.spread > f.candidates:
        raise UserError("--top_k={} plus --spread={} is more than "
                        "--candidates={}".format(f.top_k, f.spread,
                                                 f.candidates))
    if f.space is not None and f.space not in registry.names():
        raise UserError("--space={!r} is unknown: use one of {}".format(
            f.space, ", ".join(registry.names())))

    search_overrides = _split(f.search_overrides, "search_overrides")
    final_overrides = _split(f.final_overrides, "final_overrides")
    what_search = "--search_flagfile={}".format(f.search_flagfile)
    what_final = "--final_flagfile={}".format(f.final_flagfile)
    search_args = _flagfile_args(f.search_flagfile, "search_flagfile") \
        + search_overrides
    final_args = _flagfile_args(f.final_flagfile, "final_flagfile") \
        + final_overrides

    names = _space_of_flagfile(search_args, what_search, "search_entry")
    if f.space is not None:
        if f.space not in names:
            raise UserError("{} searches the {} space, not --space={}"
                            .format(what_search, names[0], f.space))
        space = f.space
    elif len(names) > 1:
        raise UserError("{}'s --search_for names the spaces {}: give "
                        "--space".format(what_search, ", ".join(names)))
    else:
        space = names[0]
    final_names = _space_of_flagfile(final_args, what_final, "final_entry")
    if space not in final_names:
        raise UserError("{} is a flagfile of the {} space, but the search "
                        "is of the {} space".format(
                            what_final, final_names[0], space))
    if space not in study_report.METRICS:
        raise UserError("the study has no scores for the {} space yet"
                        .format(space))
    info = registry.info(space)

    if flagfile.last_value(search_args, info.fixed_arc_flag) is not None:
        raise UserError("{} trains a fixed arc (--{}): the study needs a "
                        "search".format(what_search, info.fixed_arc_flag))
    fv = _entry_flags(info.search_entry, search_args, what_search)
    if ("enas" in policies and "controller_training" in fv
            and not fv.controller_training):
        raise UserError("{} has --nocontroller_training: the enas policy "
                        "would never train its controller".format(
                            what_search))
    for policy in policies:
        _entry_flags(info.search_entry,
                     search_args + ["--search_policy=" + policy],
                     "{} with --search_policy={}".format(what_search,
                                                         policy))
    num_valids = None
    if "num_valids" in fv:
        num_valids = fv.num_valids if fv.num_valids is not None else 5000
        if num_valids < 1:
            raise UserError("{} holds out no validation images "
                            "(--num_valids={}): the candidates are scored "
                            "on them".format(what_search, num_valids))
    final_fv = _entry_flags(info.final_entry, final_args, what_final)
    arc_class = registry.arcs(space)
    sizes = {n: {size.name: v[size.name].value
                 for size in arc_class.SIZE_FLAGS if size.name in v}
             for n, v in (("search", fv), ("final", final_fv))}
    arc = legal_arc(arc_class, sizes["search"])
    try:
        arc_class.from_text(arc, sizes["final"], flag="a searched arc")
    except UserError as e:
        raise UserError("the searched arcs do not fit {}: {}".format(
            what_final, e)) from None
    seeds = list(range(f.first_seed, f.first_seed + f.seeds))
    gpus = [g.strip() for g in f.gpus if g.strip()]
    parallel = f.parallel
    if gpus:
        if not f["parallel"].present:
            parallel = len(gpus)
        elif parallel > len(gpus):
            raise UserError("--parallel={} is more than the {} --gpus: "
                            "each running job takes one".format(
                                parallel, len(gpus)))
    return Study(
        space=space,
        search_flagfile=f.search_flagfile, search_overrides=search_overrides,
        final_flagfile=f.final_flagfile, final_overrides=final_overrides,
        policies=policies, seeds=seeds, candidates=f.candidates,
        top_k=f.top_k, spread=f.spread, retrain_epochs=f.retrain_epochs,
        parallel=parallel, output_dir=f.output_dir, gpus=gpus,
        num_valids=num_valids,
        train_on_valid=bool(getattr(fv, "train_on_valid", False)),
        retrain_flags=(["--nocontroller_training"]
                       if "controller_training" in final_fv else []),
        argv=list(argv))


# -- jobs ---------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Job:
    """One job: kind "search", "score" or "retrain" (index: the place of
    its arc in the selection) of a policy and seed."""
    kind: str
    policy: str
    seed: int
    index: int = None

    @property
    def prefix(self):
        return "{}/seed_{}".format(self.policy, self.seed)

    @property
    def name(self):
        if self.kind == "retrain":
            return "{}/retrain_{}".format(self.prefix, self.index)
        return "{}/{}".format(self.prefix, self.kind)

    @property
    def after(self):
        """The job this one needs finished (None for a search)."""
        if self.kind == "search":
            return None
        if self.kind == "score":
            return Job("search", self.policy, self.seed)
        return Job("score", self.policy, self.seed)


def all_jobs(study):
    """Every job, by stage: searches, scores, retrainings."""
    jobs = []
    for kind in ("search", "score"):
        jobs += [Job(kind, p, s) for p in study.policies
                 for s in study.seeds]
    jobs += [Job("retrain", p, s, i) for p in study.policies
             for s in study.seeds for i in range(study.top_k + study.spread)]
    return jobs


def job_by_name(study, name):
    for job in all_jobs(study):
        if job.name == name:
            return job
    raise UserError("--job={!r} is not a job of this study: its jobs are "
                    "<policy>/seed_<s>/search, .../score and "
                    ".../retrain_<i> (see --print_jobs)".format(name))


def arc_hash(arc):
    return hashlib.sha1(arc.encode()).hexdigest()[:10]


def select(candidates, top_k, spread, higher_is_better):
    """The candidates to retrain: the `top_k` best by shared score, then
    `spread` more at evenly spaced ranks of the rest ending with the worst
    (ties keep the order drawn)."""
    ranked = sorted(candidates, key=lambda c: c["shared_score"],
                    reverse=higher_is_better)
    chosen = ranked[:top_k]
    rest = ranked[top_k:]
    if rest and spread:
        n = min(spread, len(rest))
        picks = sorted({round((j + 1) * (len(rest) - 1) / n)
                        for j in range(n)})
        chosen += [rest[i] for i in picks]
    return chosen


def read_marker(folder):
    try:
        with open(os.path.join(folder, DONE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class Plan:
    """Folders, commands and done markers of a study's jobs."""

    def __init__(self, study, python=None, cwd=None):
        self.study = study
        self.python = python or sys.executable
        self.cwd = cwd or os.getcwd()

    def folder(self, job):
        """The job's folder; None for a retraining whose arc is not known
        yet (its score job has not finished) or that has no arc (fewer
        distinct candidates than the selection)."""
        base = os.path.join(self.study.output_dir, job.policy,
                            "seed_{}".format(job.seed))
        if job.kind != "retrain":
            return os.path.join(base, job.kind)
        arc = self.arc(job)
        return None if arc is None else os.path.join(
            base, "arc_" + arc_hash(arc))

    def selection(self, policy, seed):
        """The score job's selection (candidate dicts), or None when it
        has not finished."""
        marker = self.done_marker(Job("score", policy, seed))
        if marker is None:
            return None
        s = self.study
        return select(marker["result"]["candidates"], s.top_k, s.spread,
                      s.metric[1])

    def arc(self, job):
        chosen = self.selection(job.policy, job.seed)
        if chosen is None or job.index >= len(chosen):
            return None
        return chosen[job.index]["arc"]

    def command(self, job):
        """The job's argv, or None when its arc is not known."""
        s = self.study
        folder = self.folder(job)
        if folder is None:
            return None
        if job.kind == "search":
            return ([self.python, "-m", s.search_module,
                     "--flagfile=" + s.search_flagfile]
                    + s.search_overrides
                    + ["--search_policy=" + job.policy,
                       "--seed={}".format(job.seed),
                       "--output_dir=" + folder, "--noreset_output_dir"])
        if job.kind == "score":
            return [self.python, "-m", "src.study_score",
                    "--space=" + s.space,
                    "--run_dir=" + self.folder(job.after),
                    "--candidates={}".format(s.candidates),
                    "--out=" + os.path.join(folder, "scores.json")]
        extra = ([] if s.num_valids is None
                 else ["--num_valids={}".format(s.num_valids)])
        return ([self.python, "-m", s.final_module,
                 "--flagfile=" + s.final_flagfile] + extra
                + s.final_overrides
                + ["--{}={}".format(s.info.fixed_arc_flag, self.arc(job)),
                   "--{}={}".format(s.info.epochs_flag, s.retrain_epochs),
                   "--seed={}".format(job.seed),
                   "--output_dir=" + folder, "--noreset_output_dir"]
                + s.retrain_flags)

    def after_stamp(self, job):
        """{the job it follows: that job's finish time} (what done.json
        records), or None when that job has not finished."""
        if job.after is None:
            return {}
        marker = self.done_marker(job.after)
        if marker is None:
            return None
        return {job.after.name: marker["finished"]}

    def done_marker(self, job):
        """The job's done.json when it counts: same command, and written
        after the job it follows finished as it stands now."""
        folder = self.folder(job)
        if folder is None:
            return None
        marker = read_marker(folder)
        if marker is None:
            return None
        if (marker.get("command") != self._portable(self.command(job))
                or marker.get("after") != self.after_stamp(job)):
            return None
        return marker

    def _portable(self, command):
        # The interpreter's path is not part of what a job computes.
        return None if command is None else command[1:]

    def job_line(self, job):
        """The command line of jobs.txt that runs `job` by name."""
        args = job_line_args(self.study.argv)
        return "cd {} && {}".format(shlex.quote(self.cwd), shlex.join(
            [self.python, "-m", "src.study"] + args
            + ["--job=" + job.name]))

    # -- running

    def start(self, job, gpu=None):
        """Starts `job` (its folder made, a header in its log), seeing
        only GPU `gpu` when given; returns the Popen."""
        folder = self.folder(job)
        command = self.command(job)
        os.makedirs(folder, exist_ok=True)
        pid_path = os.path.join(folder, RUNNING)
        other = _running_pid(pid_path)
        if other is not None:
            raise UserError("job {} is already running (pid {}, {})".format(
                job.name, other, pid_path))
        log = open(os.path.join(folder, LOG), "a")
        log.write("== {} {}{}\n".format(
            _now(), "" if gpu is None else "CUDA_VISIBLE_DEVICES={} "
            .format(gpu), shlex.join(command)))
        log.flush()
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                cwd=self.cwd, env=env,
                                start_new_session=True)
        log.close()
        with open(pid_path, "w") as p:
            p.write("{}\n".format(proc.pid))
        proc.study_started = time.time()
        return proc

    def finish(self, job, proc):
        """After `job`'s process ended: its done.json when it succeeded
        and its result could be read. Returns None, or why it failed."""
        folder = self.folder(job)
        try:
            os.remove(os.path.join(folder, RUNNING))
        except OSError:
            pass
        log = os.path.join(folder, LOG)
        result = None
        if proc.returncode != 0 and job.kind == "retrain":
            line = diverged(log)
            if line is not None:
                # The arc does not train with the final recipe: a result
                # (no scores), not a failure to run again.
                result = {"arc": self.arc(job), "valid": None, "test": None,
                          "diverged": line}
        if proc.returncode != 0 and result is None:
            status = proc.returncode
            how = ("killed by signal {}".format(-status) if status < 0
                   else "exit status {}".format(status))
            return "{} ({}); see {}".format(_last_error(log) or "failed",
                                            how, log)
        try:
            result = result or self.result(job)
        except (OSError, ValueError, KeyError) as e:
            return "finished but its result cannot be read ({}); see {}" \
                .format(e, log)
        marker = {"job": job.name,
                  "command": self._portable(self.command(job)),
                  "after": self.after_stamp(job), "finished": _now(),
                  "seconds": round(time.time() - proc.study_started, 1),
                  "result": result}
        tmp = os.path.join(folder, DONE + ".tmp")
        with open(tmp, "w") as f:
            json.dump(marker, f, indent=1)
        os.replace(tmp, os.path.join(folder, DONE))
        return None

    def result(self, job):
        folder = self.folder(job)
        if job.kind == "search":
            return {}
        if job.kind == "score":
            with open(os.path.join(folder, "scores.json")) as f:
                return json.load(f)
        with open(os.path.join(folder, "stdout"), errors="replace") as f:
            events = parse_lines(f)
        key = study_report.LOG_KEYS[self.study.metric[0]]
        found = {}
        for e in events:
            if e["type"] == "eval":
                name = "{}_{}".format(e["split"], key)
                if name in e:
                    found[e["split"]] = e[name]
        missing = [s for s in ("valid", "test") if s not in found]
        if missing:
            raise ValueError(
                "its stdout has no {} score: did the run end before it "
                "evaluated? (enas_lm validates after each whole pass of "
                "its text, and its epochs are step budgets a little "
                "shorter than a pass: give it more --retrain_epochs)"
                .format(" or ".join(missing)))
        return {"arc": self.arc(job), "valid": found["valid"],
                "test": found["test"]}


def job_line_args(argv):
    """The study's arguments without the flags that say how to run its
    jobs here (NOT_IN_JOB_LINES), in either form (`--parallel=2`,
    `--parallel 2`, `--noprint_jobs`)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.lstrip("-").split("=", 1)[0]
        if not arg.startswith("-") or arg == "--":
            out.append(arg)
            continue
        base = name[2:] if name.startswith("no") else name
        if name in NOT_IN_JOB_LINES or base in NOT_IN_JOB_LINES:
            # `--parallel 2`: the value is the next argument.
            skip = "=" not in arg and name in NOT_IN_JOB_LINES \
                and name != "print_jobs"
            continue
        out.append(arg)
    return out


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def _running_pid(path):
    """The pid in a job's running.pid when that process still runs."""
    try:
        with open(path) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    # A zombie of this process (not yet waited for) is not running.
    try:
        with open("/proc/{}/stat".format(pid)) as f:
            if f.read().split(")")[-1].split()[0] == "Z":
                return None
    except OSError:
        pass
    return pid


_DIVERGED = re.compile(r"^error: (the child's .* is (?:nan|-?inf) at step "
                       r"\d+ \(epoch \d+\))")


def diverged(log):
    """The entry point's NaN/Inf stop in the last attempt of a job's log
    (`the child's loss is nan at step N (epoch E)`), or None."""
    try:
        with open(log, errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    last = text.rsplit("\n== ", 1)[-1]
    found = None
    for line in last.splitlines():
        m = _DIVERGED.match(line)
        if m:
            found = m.group(1)
    return found


def _last_error(log):
    """The last `error: ...` line of a job's log, if any."""
    try:
        with open(log, errors="replace") as f:
            lines = [l.strip() for l in f if l.startswith("error:")]
    except OSError:
        return None
    return lines[-1] if lines else None


# -- running the jobs ---------------------------------------------------------

class Stopped(Exception):
    pass


def _raise_stopped(signum, frame):
    raise Stopped(signum)


def run_jobs(plan, jobs, parallel, log=print, gpus=()):
    """Runs `jobs` (in order, each when the job it follows is done),
    `parallel` at a time, each on a GPU of `gpus` of its own when given;
    skips those already done. Returns {job name: why it failed or was not
    run} (empty when every job finished)."""
    state = {}
    running = {}
    problems = {}
    free_gpus = list(gpus)

    def ready(job):
        if job.after is None:
            return True
        return state.get(job.after.name) == "done" or (
            job.after.name not in state and plan.done_marker(job.after))

    previous = signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        while True:
            for job in jobs:
                if job.name in state or len(running) >= parallel:
                    continue
                dep = job.after
                if dep is not None and dep.name in problems:
                    problems[job.name] = "not run: it needs {}".format(
                        dep.name)
                    state[job.name] = "blocked"
                    log("{}: not run, it needs {} ({})".format(
                        job.name, dep.name, "failed"))
                    continue
                if not ready(job):
                    continue
                if plan.folder(job) is None:
                    state[job.name] = "none"
                    log("{}: no arc to retrain (fewer distinct candidates "
                        "than --top_k + --spread)".format(job.name))
                    continue
                if plan.done_marker(job):
                    state[job.name] = "done"
                    log("{}: done before, skipped".format(job.name))
                    continue
                gpu = free_gpus.pop(0) if free_gpus else None
                try:
                    proc = plan.start(job, gpu)
                except UserError as e:
                    if gpu is not None:
                        free_gpus.append(gpu)
                    state[job.name] = "failed"
                    problems[job.name] = str(e)
                    log("{}: FAILED: {}".format(job.name, e))
                    continue
                proc.study_gpu = gpu
                running[job.name] = (job, proc)
                state[job.name] = "running"
                log("{}: started ({}{})".format(
                    job.name, plan.folder(job),
                    "" if gpu is None else ", GPU {}".format(gpu)))
            if not running:
                break
            time.sleep(0.2)
            for name, (job, proc) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[name]
                if proc.study_gpu is not None:
                    free_gpus.append(proc.study_gpu)
                why = plan.finish(job, proc)
                if why is None:
                    state[name] = "done"
                    log("{}: done in {:.0f} s{}".format(
                        name, time.time() - proc.study_started,
                        "" if proc.returncode == 0 else
                        " (diverged: no scores, see its job.log)"))
                else:
                    state[name] = "failed"
                    problems[name] = why
                    log("{}: FAILED: {}".format(name, why))
    except (KeyboardInterrupt, Stopped):
        for name, (job, proc) in running.items():
            log("{}: stopping (SIGTERM: it saves a checkpoint)".format(name))
            proc.terminate()
        for name, (job, proc) in running.items():
            proc.wait()
            plan.finish(job, proc)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    return problems


# -- the report ---------------------------------------------------------------

def collect(plan):
    """(records, curves, notes) of what has finished."""
    study = plan.study
    records, curves, notes = [], {}, []
    unprinted, short = [], []
    for policy in study.policies:
        curves[policy] = {}
        for seed in study.seeds:
            search = Job("search", policy, seed)
            if plan.done_marker(search):
                rows = _curves(plan.folder(search))
                curves[policy][seed] = rows
                if not any(r["printed_mean"] is not None for r in rows):
                    unprinted.append(search.prefix)
                epochs = _search_epochs(plan, search)
                last = rows[-1]["epoch"] if rows else 0
                if epochs is not None and last < epochs:
                    short.append("{} (epoch {} of {})".format(
                        search.prefix, last, epochs))
            score = plan.done_marker(Job("score", policy, seed))
            if score is None:
                notes.append("{}/seed_{}: no scores (its search or scoring "
                             "has not finished)".format(policy, seed))
                continue
            result = score["result"]
            if result["distinct"] < study.candidates:
                notes.append("{}/seed_{}: {} distinct arcs in {} draws "
                             "(asked for {})".format(
                                 policy, seed, result["distinct"],
                                 result["draws"], study.candidates))
            retrained = {}
            for i in range(study.top_k + study.spread):
                job = Job("retrain", policy, seed, i)
                marker = plan.done_marker(job)
                if marker is not None:
                    retrained[marker["result"]["arc"]] = marker["result"]
                    if marker["result"].get("diverged"):
                        notes.append(
                            "{}: the retraining of `{}` diverged ({}): "
                            "its retrained scores are null".format(
                                job.name, marker["result"]["arc"],
                                marker["result"]["diverged"]))
                elif plan.folder(job) is not None:
                    notes.append("{}: not finished".format(job.name))
            for c in result["candidates"]:
                r = retrained.get(c["arc"], {})
                records.append({"policy": policy, "seed": seed,
                                "arc": c["arc"],
                                "shared_score": c["shared_score"],
                                "retrained_valid": r.get("valid"),
                                "retrained_test": r.get("test")})
    if unprinted:
        notes.append(
            "the search logs of {} print no architectures (no \"Here are "
            "10 architectures\"), so their curves have no printed arcs' "
            "mean: the search's own validation score after each epoch "
            "(search_valid) is their only score of every policy".format(
                ", ".join(unprinted)))
    if short:
        notes.append(
            "the search logs of {} end before their last epoch's "
            "controller phase and validation: the run's steps ran out "
            "first".format(", ".join(short)))
    if study.train_on_valid:
        notes.append("--train_on_valid: the searches and retrainings train "
                     "on the PTB valid text and validate and test on the "
                     "test text, so the validation and test scores are of "
                     "one text (not held out from each other), and none "
                     "is a PTB result")
    if study.num_valids is not None:
        notes.append("the retrainings hold out the search's last {} "
                     "training images (--num_valids={}): their validation "
                     "accuracy is on the images the candidates were scored "
                     "on".format(study.num_valids, study.num_valids))
    return records, curves, notes


def _search_epochs(plan, search):
    """The epochs a finished search ran (its flags.txt's epochs flag), or
    None when it cannot be read."""
    try:
        values = flagfile.read(os.path.join(plan.folder(search),
                                            "flags.txt"))
        return int(values[plan.study.info.epochs_flag])
    except (UserError, KeyError, ValueError):
        return None


def _curves(folder):
    try:
        with open(os.path.join(folder, "stdout"), errors="replace") as f:
            events = parse_lines(f)
    except OSError:
        events = []
    records = []
    try:
        with open(os.path.join(folder, "arcs.jsonl")) as f:
            for line in f:
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue
    except OSError:
        pass
    return study_report.search_curves(events, records)


def write_report(plan, extra_notes=()):
    """study.json, study.md and study.png in the study's folder; returns
    the report."""
    records, curves, notes = collect(plan)
    report = study_report.build_report(plan.study.settings(), records,
                                       curves, list(extra_notes) + notes)
    out = plan.study.output_dir
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "study.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(out, "study.md"), "w") as f:
        f.write(study_report.markdown(report))
    study_report.plot(report, os.path.join(out, "study.png"))
    return report


def write_jobs(plan, jobs):
    """jobs.txt: every job's command line, by stage."""
    stages = [("search", "the searches"),
              ("score", "the scoring (each after its search)"),
              ("retrain", "the retrainings (each after its scoring)")]
    lines = ["# The search study's jobs, one command a line. The jobs of a "
             "stage can run at once;",
             "# each needs its policy and seed's job of the stage before. "
             "Each writes done.json in its",
             "# folder when it succeeds. Then run the study command "
             "again: it skips the finished",
             "# jobs and writes study.json, study.md and study.png.",
             "# The study: " + shlex.join(["python", "-m", "src.study"]
                                          + plan.study.argv)]
    for kind, what in stages:
        lines += ["", "# {}".format(what)]
        for job in jobs:
            if job.kind != kind:
                continue
            command = plan.command(job)
            if command is not None:
                lines.append("#   runs: " + shlex.join(["python"]
                                                         + command[1:]))
            lines.append(plan.job_line(job))
    path = os.path.join(plan.study.output_dir, "jobs.txt")
    os.makedirs(plan.study.output_dir, exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


# -- the command line ---------------------------------------------------------

def main(f, argv, raw_argv=()):
    if len(argv) > 1:
        raise UserError("unexpected arguments {}: every option is a --flag"
                        .format(" ".join(argv[1:])))
    study = settings_from_flags(f, raw_argv)
    plan = Plan(study)
    jobs = all_jobs(study)
    if f.print_jobs:
        print("Wrote {} job lines to {}".format(len(jobs),
                                                write_jobs(plan, jobs)))
        return 0
    if f.job is not None:
        job = job_by_name(study, f.job)
        if job.after is not None and not plan.done_marker(job.after):
            raise UserError("job {} needs {} first: it has not finished"
                            .format(job.name, job.after.name))
        problems = run_jobs(plan, [job], 1, gpus=study.gpus[:1])
        return 1 if problems else 0
    os.makedirs(study.output_dir, exist_ok=True)
    print("Study of {} ({}): {} jobs, {} at a time, in {}".format(
        study.space, ", ".join(study.policies), len(jobs), study.parallel,
        study.output_dir))
    try:
        problems = run_jobs(plan, jobs, study.parallel, gpus=study.gpus)
    except (KeyboardInterrupt, Stopped):
        print("stopped: run the same command again to resume")
        return 130
    notes = ["{}: {}".format(name, why) for name, why in problems.items()]
    report = write_report(plan, notes)
    for policy, sm in report["summary"].items():
        print("{}: kendall_tau={} spearman_rho={} best valid {} (mean over "
              "seeds), its test {}".format(
                  policy, study_report.fmt(sm["kendall_tau"]),
                  study_report.fmt(sm["spearman_rho"]),
                  study_report.fmt(sm["best_valid_mean"]),
                  study_report.fmt(sm["best_test_mean"])))
    print("Wrote {}".format(", ".join(
        os.path.join(study.output_dir, n)
        for n in ("study.json", "study.md", "study.png"))))
    if problems:
        print("{} job(s) did not finish: {}; run the same command again to "
              "redo them".format(len(problems), ", ".join(problems)))
        return 1
    return 0


def call(argv=None):
    argv = list(sys.argv if argv is None else argv)
    return tool.call(define_flags,
                     lambda f, rest: main(f, rest, argv[1:]), argv, __doc__)


def run(argv=None):
    sys.exit(call(argv))


if __name__ == "__main__":
    run()
