"""The search study's scoring job: `python -m src.study_score
--space=ptb --run_dir=<a finished search's --output_dir> --candidates=20
--out=<folder>/scores.json`.

Loads the search run as the entry point built it (its `flags.txt`, the
space's session, the newest checkpoint in --run_dir: child, controller or
uniform sampler, trainer state), draws --candidates distinct arcs from the
run's policy (`--search_policy=enas`: the trained controller;
`random`: the uniform sampler), and scores each with the shared weights
on the whole validation split:

- CIFAR-10: accuracy over every held-out image (`--num_valids` of the
  run), from the export's `predict_normalized_with_arc` (`src.export`:
  macro with the moving batch-norm statistics, micro with the statistics
  of each batch of 100 and no dropout, as the reference's valid graph
  without its dropout);
- PTB: perplexity over the whole validation stream in the run's
  `--batch_size` rows and `--child_bptt_steps` windows with the state
  carried (`PtbTrainer.evaluate` with the arc given; the moving averages
  of the weights when the run keeps them), as the run's own `valid_ppl`
  but with one arc for every window;
- enas_lm: perplexity over every validation window of the run's
  `--child_batch_size` rows and `--child_bptt_steps` steps, each from a
  zero state (`WindowPerplexity`: the trainer's `reward_nll`), as the
  search's own `valid_ppl` but with one arc for every window.

The run's flags.txt is read with its space's search entry point's flags
(`registry.SpaceInfo.search_entry`: enas_lm's `src.enas_lm.search`).

Each is one traced function taking the arc as a tensor: every candidate
reuses the same trace (`traces` in the output says how many there were).
The draws start from the policy's generator reseeded with
(`--draw_seed`, default the run's `--seed`; a counter the search never
reaches), so the same run gives the same candidates every time. Draws
are repeated until --candidates distinct arcs are found or
`--max_draws_per_candidate` x --candidates draws are made (a trained
controller repeats itself; the output's `distinct` says how many were
found).

Writes --out (JSON): space, run_dir, policy, metric, higher_is_better,
draws, distinct, traces, seconds, and `candidates`, one {"arc",
"shared_score"} per arc in the order drawn.
"""

import json
import os
import sys
import time

from absl import flags

from src import flagfile, registry, tool
from src.errors import UserError
from src.study_report import METRICS

# The reseeded draws' counter: a search draws one arc per step and never
# gets near it.
DRAW_COUNTER = 1 << 40


def define_flags(fv):
    d = dict(flag_values=fv)
    flags.DEFINE_enum("space", None, registry.names(),
                      "The search space of the run.", **d)
    flags.DEFINE_string("run_dir", None, "The finished search's "
                        "--output_dir (its flags.txt and checkpoint).", **d)
    flags.DEFINE_integer("candidates", 20, "Distinct arcs to draw and "
                         "score.", lower_bound=1, **d)
    flags.DEFINE_integer("draw_seed", None, "Seed of the draws (default: "
                         "the run's --seed).", **d)
    flags.DEFINE_integer("max_draws_per_candidate", 20, "Give up looking "
                         "for distinct arcs after this many draws per "
                         "candidate.", lower_bound=1, **d)
    flags.DEFINE_string("out", None, "Where the scores go (JSON).", **d)
    return fv


# -- loading the run --------------------------------------------------------------

class LoadedRun:
    """A search run rebuilt from its flags.txt and restored from its newest
    checkpoint: space, cfg, session, child, trainer, phase (its
    `controller` is the LSTM controller or the uniform sampler)."""

    def __init__(self, space_name, run_dir, log=print):
        import tensorflow as tf
        from src import entry_point
        from src.checkpoints import open_run_checkpoint

        flags_txt = os.path.join(run_dir, "flags.txt")
        if not os.path.isfile(flags_txt):
            raise UserError("--run_dir={} has no flags.txt: give a search "
                            "run's --output_dir".format(run_dir))
        self.space = registry.space(space_name)
        entry = registry.info(space_name).search_entry
        args = flagfile.expand(["--flagfile=" + flags_txt])
        try:
            fv, _ = entry_point.parse_flags(entry, ["study_score"] + args)
        except Exception as e:  # absl's flags.Error and its subclasses
            raise UserError("cannot read {} as {} flags: {}".format(
                flags_txt, entry, " ".join(str(e).split()))) from None
        cfg = self.space.config_from_flags(fv)
        if not cfg.searching:
            raise UserError("{} is a run of a fixed arc, not a search"
                            .format(run_dir))
        cfg.output_dir = run_dir
        # One device: the checkpoint is by variable path, whatever the
        # run's --distribution_strategy.
        cfg.distribution_strategy = "default"
        cfg.num_cpu_devices = 0
        self.cfg = cfg
        entry_point.prepare_run(cfg)
        self.session = self.space.open_session(cfg)
        self.child, self.trainer, self.phase, extra = self.session.build(
            None)
        _, restored = open_run_checkpoint(run_dir, self.child, self.trainer,
                                          self.phase, **extra)
        if restored is None:
            raise UserError("--run_dir={} holds no checkpoint: the search "
                            "has not finished an epoch".format(run_dir))
        self.checkpoint = restored
        self.step = int(self.trainer.global_step.numpy())
        log("Restored {} (step {}, policy {})".format(
            restored, self.step, cfg.search_policy))
        self._tf = tf

    def draw(self, count, seed, max_draws):
        """Up to `count` distinct arcs (lists of ints) from the policy,
        its generator reseeded with `seed`; (arcs, draws made)."""
        tf = self._tf
        controller = self.phase.controller
        state = controller.seed_generator.state
        state.assign(tf.constant([seed, DRAW_COUNTER], state.dtype))
        seen, arcs, draws = set(), [], 0
        while len(arcs) < count and draws < max_draws:
            arc = [int(v) for v in controller.sample()["arc"].numpy()]
            draws += 1
            key = tuple(arc)
            if key not in seen:
                seen.add(key)
                arcs.append(arc)
        return arcs, draws


# -- scoring ---------------------------------------------------------------------

def score_run(space_name, run_dir, candidates, draw_seed=None,
              max_draws_per_candidate=20, log=print):
    """Draws and scores the candidates of one search run; returns the
    record written to --out."""
    start = time.time()
    if space_name not in METRICS:
        raise UserError("the study cannot score {} runs yet: no metric for "
                        "that space".format(space_name))
    from src import precision
    with precision.mixed_precision_scope(_run_mixed_precision(run_dir)):
        return _score(space_name, run_dir, candidates, draw_seed,
                      max_draws_per_candidate, log, start)


def _run_mixed_precision(run_dir):
    """Whether the run trained under --mixed_precision (its flags.txt):
    its models are rebuilt under the same policy."""
    try:
        value = flagfile.read(os.path.join(run_dir, "flags.txt")).get(
            "mixed_precision")
    except UserError:
        return False
    return value == "True"


def _score(space_name, run_dir, candidates, draw_seed,
           max_draws_per_candidate, log, start):
    run = LoadedRun(space_name, run_dir, log)
    scorer = run.session.arc_scorer()
    seed = run.cfg.seed if draw_seed is None else draw_seed
    arcs, draws = run.draw(candidates, seed,
                           candidates * max_draws_per_candidate)
    if len(arcs) < candidates:
        log("note: {} distinct arcs in {} draws (asked for {})".format(
            len(arcs), draws, candidates))
    metric, higher = METRICS[space_name]
    log("Scoring {} arcs on {} ({})".format(len(arcs), scorer.what, metric))
    out = []
    for i, arc in enumerate(arcs):
        score = scorer(arc)
        text = str(run.space.parse_arc(arc, run.cfg.child))
        log("{:<4d} {}={:.4f} [{}]".format(i, metric, score, text))
        out.append({"arc": text, "shared_score": score})
    record = {"space": space_name, "run_dir": os.path.abspath(run_dir),
              "checkpoint": run.checkpoint, "step": run.step,
              "policy": run.cfg.search_policy, "metric": metric,
              "higher_is_better": higher, "draw_seed": seed,
              "draws": draws, "distinct": len(arcs),
              "traces": scorer.traces(),
              "seconds": round(time.time() - start, 2), "candidates": out}
    log("{} arcs scored with {} trace(s) in {:.1f} s".format(
        len(out), record["traces"], record["seconds"]))
    return record


def main(f, argv):
    if len(argv) > 1:
        raise UserError("unexpected arguments {}: every option is a --flag"
                        .format(" ".join(argv[1:])))
    for name in ("space", "run_dir", "out"):
        if f[name].value is None:
            raise UserError("--{} is required".format(name))
    from absl import logging
    logging.set_verbosity(logging.WARNING)
    record = score_run(f.space, f.run_dir, f.candidates, f.draw_seed,
                       f.max_draws_per_candidate)
    folder = os.path.dirname(os.path.abspath(f.out))
    os.makedirs(folder, exist_ok=True)
    tmp = f.out + ".tmp"
    with open(tmp, "w") as out:
        json.dump(record, out, indent=1)
    os.replace(tmp, f.out)
    return 0


def call(argv=None):
    return tool.call(define_flags, main, argv, __doc__)


def run(argv=None):
    sys.exit(call(argv))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run()
