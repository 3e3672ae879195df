"""The controller side of a PTB search.

`PtbSearch` holds the controller and its REINFORCE trainer, rewarded with
80 / perplexity of the child on one randomly placed validation window (the
reference's `valid_rl` graph), and prints the reference's "Here are 10
architectures" (one `[arc] rw=...` line each), also kept in `arcs.jsonl` and
`best_arc.txt` in the output folder.
"""

import json
import os
import time

import numpy as np
import tensorflow as tf

from src import run_log
from src.ptb import arcs
from src.ptb import data as ptb_data
from src.ptb.log_lines import controller_line
from src.reinforce import Reinforce


class PtbSearch:
    """Controller, REINFORCE and the architecture printout of a PTB search.

    trainer: the child's PtbTrainer (its `reward_nll` scores an arc).
    valid_rows: the validation stream cut into batch_size rows.
    """

    def __init__(self, cfg, trainer, valid_rows):
        from src.ptb.ptb_controller import PtbController
        self.cfg = cfg
        self.controller = PtbController(cfg.controller)
        self.valid_rows = valid_rows

        def reward(arc, x, y):
            # valid_ppl = exp(mean token NLL); the reference's 80 / valid_ppl.
            return 80.0 / tf.exp(trainer.reward_nll(x, y, arc))

        self.reinforce = Reinforce(self.controller, reward, cfg.reinforce)
        self._reward = reward

        def sample_and_score(x, y):
            sample = self.controller.sample()
            rw = reward(sample["arc"], x, y)
            if cfg.reinforce.entropy_weight is not None:
                rw += cfg.reinforce.entropy_weight * sample["entropy"]
            # Running the reference's `reward` tensor for the printout also
            # runs its baseline update (a control dependency); kept.
            b = self.reinforce.baseline
            b.assign_sub((1.0 - cfg.reinforce.bl_dec) * (b - rw))
            return sample["arc"], rw

        self._sample_and_score = tf.function(sample_and_score)
        self._rng = None
        self.arcs_path = os.path.join(cfg.output_dir, "arcs.jsonl")
        self.best_path = os.path.join(cfg.output_dir, "best_arc.txt")

    def sample_arc(self):
        """A fresh arc for a child step (inside the child's tf.function)."""
        return self.controller.sample()["arc"]

    def checkpoint_objects(self):
        return self.reinforce.checkpoint_objects()

    def start_epoch(self, epoch):
        """Reward windows of this epoch's controller phase: a numpy stream
        seeded by (seed, epoch), so a resumed run scores the same windows."""
        self._rng = np.random.default_rng([self.cfg.seed, epoch])

    def _window(self):
        x, y = ptb_data.random_window(self.valid_rows, self.cfg.bptt_steps,
                                      self._rng)
        return tf.constant(x, tf.int32), tf.constant(y, tf.int32)

    def train_controller(self, epoch, start_time, stop_on_nan, summaries):
        """The controller phase of an epoch; False if it hit a NaN."""
        print("Epoch {}: Training controller".format(epoch))
        cfg = self.cfg
        self.start_epoch(epoch)
        for ct_step in range(cfg.controller_train_steps
                             * cfg.controller_num_aggregate):
            out = {k: v.numpy() for k, v in
                   self.reinforce.run(*self._window()).items()}
            if stop_on_nan({"loss": out["loss"], "reward": out["reward"],
                            "gradient norm": out["grad_norm"]},
                           "controller", out["arc"]):
                return False
            controller_step = int(self.reinforce.train_step.numpy())
            if ct_step % cfg.log_every == 0:
                print(controller_line(
                    controller_step, out["loss"], out["entropy"], out["lr"],
                    out["grad_norm"], out["reward"], out["baseline"],
                    (time.time() - start_time) / 60))
                summaries.scalars(controller_step, {
                    "controller/loss": out["loss"],
                    "controller/entropy": out["entropy"],
                    "controller/reward": out["reward"],
                    "controller/valid_ppl": 80.0 / out["valid_acc"],
                    "controller/baseline": out["baseline"]})
        return True

    def print_architectures(self, epoch, count=10):
        """Prints `count` sampled arcs with their reward on a random window,
        as the reference; appends them to arcs.jsonl and keeps the best so
        far (highest reward) in best_arc.txt."""
        if self._rng is None:
            self.start_epoch(epoch)
        print("Here are {} architectures".format(count))
        best = run_log.best_recorded_arc(self.arcs_path)
        with open(self.arcs_path, "a") as f:
            for _ in range(count):
                arc, rw = self._sample_and_score(*self._window())
                rw = float(rw)
                values = arc.numpy()
                print("{} rw={:<.3f}".format(np.reshape(values, [-1]), rw))
                parsed = arcs.PtbArc.parse([int(v) for v in values],
                                           self.cfg.child.rhn_depth)
                record = {"epoch": epoch, "arc": str(parsed), "reward": rw,
                          "cell": parsed.describe()}
                f.write(json.dumps(record) + "\n")
                if best is None or rw > best[0]:
                    best = (rw, str(parsed))
                    with open(self.best_path, "w") as b:
                        b.write(best[1] + "\n")
