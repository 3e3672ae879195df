"""The controller side of a CIFAR-10 search (macro or micro).

`ArchitectureSearch` holds the controller, its REINFORCE trainer fed by
shuffled validation batches, and the reference's "Here are 10 architectures"
printout, also kept in `arcs.jsonl` and `best_arc.txt` in the output folder.
The two search spaces differ only in the controller they build and in how an
arc is parsed, printed and recorded (`MACRO_SPACE`, `MICRO_SPACE`).
"""

import json
import os
import time

import numpy as np
import tensorflow as tf

from src import run_log
from src.cifar10 import arcs
from src.cifar10 import data as cifar_data
from src.cifar10.child_trainer import num_correct
from src.reinforce import Reinforce


class MacroSpace:
    """Macro arcs: one printed line per layer (op or slices, then skips)."""
    name = "macro"

    @staticmethod
    def controller(cfg):
        from src.cifar10.macro_controller import MacroController
        return MacroController(cfg)

    @staticmethod
    def parse(values, child_cfg):
        return arcs.MacroArc.parse(values, child_cfg.num_layers,
                                   child_cfg.num_branches,
                                   child_cfg.whole_channels)

    @staticmethod
    def lines(arc):
        return arc.layer_lines()

    @staticmethod
    def record(arc):
        out = {"layers": arc.describe()}
        if arc.whole_channels:
            out["ops"] = [arcs.MACRO_OPS[o] for o in arc.ops]
        return out


class MicroSpace:
    """Micro arcs: the normal cell on one line, the reduction cell on the
    next."""
    name = "micro"

    @staticmethod
    def controller(cfg):
        from src.cifar10.micro_controller import MicroController
        return MicroController(cfg)

    @staticmethod
    def parse(values, child_cfg):
        return arcs.MicroArc.parse(values, child_cfg.num_cells)

    @staticmethod
    def lines(arc):
        return arc.cell_lines()

    @staticmethod
    def record(arc):
        normal, reduce_ = arc.cell_lines()
        return {"normal": " ".join(map(str, normal)),
                "reduce": " ".join(map(str, reduce_)),
                "cells": arc.describe()}


SPACES = {"macro": MacroSpace, "micro": MicroSpace}


class ArchitectureSearch:
    """Controller, REINFORCE and the architecture printout of one search.

    reward_training_mode: score the reward (and sampled) arcs with the child
    in training mode, as the reference's micro search does.
    """

    def __init__(self, cfg, child, data, reward_training_mode=False):
        self.cfg = cfg
        self.space = SPACES[cfg.search_for]
        self.child = child
        self.controller = self.space.controller(cfg.controller)
        batch_size = float(cfg.batch_size)

        def reward(arc, images, labels):
            # The reference's build_valid_rl: the child on a shuffled
            # validation batch, accuracy over batch_size.
            out = child(images, training=reward_training_mode, arc=arc)
            logits = out[0] if isinstance(out, tuple) else out
            return tf.cast(num_correct(logits, labels), tf.float32) / batch_size

        self.reinforce = Reinforce(self.controller, reward, cfg.reinforce)
        self._data = data
        self._valid = None

        def sample_and_score(images, labels):
            arc = self.controller.sample()["arc"]
            return arc, reward(arc, images, labels)

        self._sample_and_score = tf.function(sample_and_score)
        self.arcs_path = os.path.join(cfg.output_dir, "arcs.jsonl")
        self.best_path = os.path.join(cfg.output_dir, "best_arc.txt")

    def sample_arc(self):
        """A fresh arc for a child step (inside the child's tf.function)."""
        return self.controller.sample()["arc"]

    def checkpoint_objects(self):
        return self.reinforce.checkpoint_objects()

    def start_epoch(self, epoch):
        """Validation batches of this epoch's controller phase: a stream
        seeded by (seed, epoch), so a run resumed at an epoch boundary
        scores the same batches."""
        self._valid = iter(cifar_data.valid_rl_batches(
            self._data, self.cfg.batch_size,
            self.cfg.seed * 1000003 + epoch))

    def train_controller(self, epoch, start_time, summaries, stop_on_nan):
        """The controller phase of an epoch; False if it hit a NaN."""
        print("Epoch {}: Training controller".format(epoch))
        cfg = self.cfg
        self.start_epoch(epoch)
        for ct_step in range(cfg.controller_train_steps
                             * cfg.controller_num_aggregate):
            images, labels = next(self._valid)
            out = {k: v.numpy() for k, v in
                   self.reinforce.run(images, labels).items()}
            if stop_on_nan({"loss": out["loss"], "reward": out["reward"],
                            "gradient norm": out["grad_norm"]},
                           "controller", out["arc"]):
                return False
            controller_step = int(self.reinforce.train_step.numpy())
            if ct_step % cfg.log_every == 0:
                print(run_log.controller_line(
                    controller_step, out["loss"], out["entropy"], out["lr"],
                    out["grad_norm"], out["valid_acc"], out["baseline"],
                    (time.time() - start_time) / 60))
                scalars = {"controller/loss": out["loss"],
                           "controller/entropy": out["entropy"],
                           "controller/valid_acc": out["valid_acc"],
                           "controller/baseline": out["baseline"]}
                if "skip_rate" in out:
                    scalars["controller/skip_rate"] = out["skip_rate"]
                summaries.scalars(controller_step, scalars)
        return True

    def print_architectures(self, epoch, count=10):
        """Prints `count` sampled arcs in the reference's layout with their
        accuracy on one validation batch; appends them to arcs.jsonl and
        keeps the best so far in best_arc.txt."""
        if self._valid is None:
            self.start_epoch(epoch)
        print("Here are {} architectures".format(count))
        best = run_log.best_recorded_arc(self.arcs_path)
        with open(self.arcs_path, "a") as f:
            for _ in range(count):
                images, labels = next(self._valid)
                arc, acc = self._sample_and_score(images, labels)
                acc = float(acc)
                parsed = self.space.parse([int(v) for v in arc.numpy()],
                                          self.cfg.child)
                for line in self.space.lines(parsed):
                    print(np.reshape(np.array(line), [-1]))
                print("val_acc={:<6.4f}".format(acc))
                print("-" * 80)
                record = {"epoch": epoch, "arc": str(parsed), "reward": acc}
                record.update(self.space.record(parsed))
                f.write(json.dumps(record) + "\n")
                if best is None or acc > best[0]:
                    best = (acc, str(parsed))
                    with open(self.best_path, "w") as b:
                        b.write(best[1] + "\n")
