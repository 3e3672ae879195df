"""The controller phase of a search, for every search space.

`ControllerPhase` holds the controller and its REINFORCE trainer, runs the
reference's controller training of an epoch (its log line every
`--log_every` steps), and prints its "Here are 10 architectures", also
kept in `arcs.jsonl` (every printed arc) and `best_arc.txt` (the best so
far) in the output folder. What differs between spaces comes from the
space: the reward, the stream of reward batches, the log line, and how an
arc is printed and recorded.

With `--search_policy=random` the "controller" is the space's uniform
sampler (src.random_policy): there is no REINFORCE, `train_controller`
does nothing, and the printout scores the sampler's arcs with the same
reward.
"""

import dataclasses
import json
import os
import time

import tensorflow as tf

from src.common_ops import traced
from src import run_log
from src.random_policy import UniformSampler
from src.reinforce import Reinforce


@dataclasses.dataclass
class PhaseHooks:
    """A space's part of the controller phase.

    reward(arc, *batch) -> float32 scalar tensor: the controller's reward
      (no entropy bonus).
    reward_batches(epoch) -> an iterator of batches (tuples of tensors):
      the epoch's reward stream, a function of (seed, epoch) so that a
      resumed run scores the same batches.
    line(out, step, minutes) -> the reference's controller log line of a
      REINFORCE step's output `out` (numpy values).
    scalars(out) -> the step's TensorBoard scalars.
    printout_adds_bonus: the printout's score is the reward with the
      entropy bonus, and scoring it moves the baseline (the PTB reference
      runs its `reward` tensor, which carries the baseline's update);
      otherwise the bare reward. (The random policy has neither a bonus
      nor a baseline: its printout is always the bare reward.)
    """
    reward: object
    reward_batches: object
    line: object
    scalars: object
    printout_adds_bonus: bool = False


class ControllerPhase:
    """Controller, REINFORCE and the architecture printout of a search.

    space: the SearchSpace (`parse_arc`, `printout`, `arc_record`);
    cfg: the run's RunConfig; controller: the space's controller (built;
    with cfg.search_policy "random", its UniformSampler); hooks: the
    space's PhaseHooks.
    """

    def __init__(self, space, cfg, controller, hooks):
        self.space = space
        self.cfg = cfg
        self.controller = controller
        self.hooks = hooks
        self.random = isinstance(controller, UniformSampler)
        policy = getattr(cfg, "search_policy", "enas")
        if self.random != (policy == "random"):
            raise ValueError(
                "search_policy={!r} but the controller is a {}: with "
                "random, cfg.controller must be the space's "
                "random_policy(...)".format(policy,
                                            type(controller).__name__))
        # The random policy learns nothing: no REINFORCE, no baseline.
        self.reinforce = (None if self.random else
                          Reinforce(controller, hooks.reward, cfg.reinforce))
        self._batches = None
        self._score = traced(self._sample_and_score)
        self.arcs_path = os.path.join(cfg.output_dir, "arcs.jsonl")
        self.best_path = os.path.join(cfg.output_dir, "best_arc.txt")

    def sample_arc(self):
        """A fresh arc for a child step (inside the child's tf.function)."""
        return self.controller.sample()["arc"]

    def checkpoint_objects(self):
        # The controller itself (with the random policy: the sampler's seed
        # generator) is checkpointed as a model (src.checkpoints).
        return {} if self.random else self.reinforce.checkpoint_objects()

    def start_epoch(self, epoch):
        """Starts the epoch's stream of reward batches."""
        self._batches = iter(self.hooks.reward_batches(epoch))

    def _sample_and_score(self, *batch):
        sample = self.controller.sample()
        score = self.hooks.reward(sample["arc"], *batch)
        rcfg = self.cfg.reinforce
        if self.hooks.printout_adds_bonus and not self.random:
            if rcfg.entropy_weight is not None:
                score += rcfg.entropy_weight * sample["entropy"]
            b = self.reinforce.baseline
            b.assign_sub((1.0 - rcfg.bl_dec) * (b - score))
        return sample["arc"], score

    def train_controller(self, epoch, start_time, summaries, stop_on_nan):
        """The controller phase of an epoch; False if it hit a NaN. With
        the random policy: no controller to train and no lines, only the
        epoch's reward stream started for the printout (as it is here for
        ENAS's; a function of (seed, epoch), so a resumed run scores the
        same batches)."""
        if self.random:
            self.start_epoch(epoch)
            return True
        print("Epoch {}: Training controller".format(epoch))
        cfg = self.cfg
        self.start_epoch(epoch)
        for ct_step in range(cfg.controller_train_steps
                             * cfg.controller_num_aggregate):
            out = {k: v.numpy() for k, v in
                   self.reinforce.run(*next(self._batches)).items()}
            if stop_on_nan({"loss": out["loss"], "reward": out["reward"],
                            "gradient norm": out["grad_norm"]},
                           "controller", out["arc"]):
                return False
            controller_step = int(self.reinforce.train_step.numpy())
            if ct_step % cfg.log_every == 0:
                print(self.hooks.line(out, controller_step,
                                      (time.time() - start_time) / 60))
                summaries.scalars(controller_step, self.hooks.scalars(out))
        return True

    def print_architectures(self, epoch, count=10):
        """Prints `count` sampled arcs with their scores as the reference
        does; appends them to arcs.jsonl and keeps the best so far (highest
        score) in best_arc.txt."""
        if self._batches is None:
            self.start_epoch(epoch)
        print("Here are {} architectures".format(count))
        best = run_log.best_recorded_arc(self.arcs_path)
        with open(self.arcs_path, "a") as f:
            for _ in range(count):
                arc, score = self._score(*next(self._batches))
                score = float(score)
                parsed = self.space.parse_arc(
                    [int(v) for v in arc.numpy()], self.cfg.child)
                for line in self.space.printout(parsed, score):
                    print(line)
                record = {"epoch": epoch, "arc": str(parsed),
                          "reward": score}
                record.update(self.space.arc_record(parsed))
                f.write(json.dumps(record) + "\n")
                if best is None or score > best[0]:
                    best = (score, str(parsed))
                    with open(self.best_path, "w") as b:
                        b.write(best[1] + "\n")
