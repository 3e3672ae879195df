"""What the two CIFAR-10 search spaces (macro, micro) share: their run
config, the checks of the CIFAR-10 entry point's flags, and the `Session`
of a CIFAR-10 run (data, child steps with the reference's log line, the
valid and test accuracies).

A CIFAR-10 space (`CifarSpace` subclass) adds its child and controller
configs, models and arc printout.
"""

import dataclasses
import math

import numpy as np
import tensorflow as tf

from src import precision, run_loop, run_log, schedules
from src.cifar10 import data as cifar_data
from src.cifar10.child_trainer import ChildTrainer, num_correct
from src.errors import UserError
from src.export import child_signatures
from src.flag_defs import port_options
from src.reinforce import ReinforceConfig
from src.search import ControllerPhase, PhaseHooks
from src.space import RunConfig, SearchSpace, Session
from src.train_ops import TrainConfig


@dataclasses.dataclass(kw_only=True)
class CifarRunConfig(RunConfig):
    """A CIFAR-10 run's config."""
    search_for: str
    num_valids: int
    cutout_size: int = None
    lr_dec_every_epochs: int
    # Micro search runs its valid, test and reward passes in training mode.
    eval_training_mode: bool = False
    train_aux_head: bool = False

    @property
    def space(self):
        return self.search_for


def gpu_available():
    return bool(tf.config.list_physical_devices("GPU"))


class CifarSpace(SearchSpace):
    """A CIFAR-10 search space: subclasses set `name`, `search_for`,
    `arc_class`, `fixed_child`, `search_child` and implement `configs`,
    `build_lstm_controller`, `parse_arc`, `printout`, `arc_record`."""
    entry = "cifar10"
    model_name = "child"
    # The reinforce config's skip penalty weight comes from the flags.
    uses_skip_weight = False

    def configs(self, f, out_filters, data_format, searching):
        """(child config, controller config or None) from the flags."""
        raise NotImplementedError

    def jit_compile(self, cfg):
        """`--jit_compile` resolved for this space and mode."""
        return precision.resolve_jit_compile(
            cfg.jit_compile, cfg.searching, self.name,
            whole_channels=getattr(cfg.child, "whole_channels", True))

    def config_from_flags(self, f):
        return config_from_flags(self, f)

    def build_variables(self, child):
        # Zeros are a valid arc of every space (op 0, input 0, no skips).
        kwargs = {}
        if child.searching:
            kwargs["arc"] = tf.zeros([child.cfg.arc_length], tf.int32)
        child(tf.zeros([1, 32, 32, 3]), training=False, **kwargs)

    def prepare_export(self, cfg, source, reference, log):
        if cfg.child.data_format != "NHWC":
            log("note: exporting in NHWC (the weights are the same)")
            cfg.child.data_format = "NHWC"

    def serving_statistics(self, cfg, log):
        """The run's training mean and std, read from --data_path as the
        run does; (None, None) with a warning when the data cannot be
        read."""
        try:
            data = cifar_data.read_data(cfg.data_path,
                                        num_valids=cfg.num_valids,
                                        download=False, log=lambda *_: None)
        except (UserError, OSError) as e:
            reason = ("no --data_path is given" if not cfg.data_path
                      else "its data cannot be read: {}".format(
                          str(e).rstrip(".")))
            log("warning: serving_default (uint8 images with the training "
                "mean and std baked in) is not exported: the statistics come "
                "from the run's training images and {}. predict_normalized "
                "is exported; pass the run's --data_path to add "
                "serving_default".format(reason))
            return None, None
        return data.mean, data.std

    def open_session(self, cfg, data=None):
        return CifarSession(self, cfg, data=data)


def config_from_flags(space, f):
    """Validates the CIFAR-10 flags and turns them into a CifarRunConfig."""
    if f.child_fixed_arc is not None and f.controller_training:
        raise UserError("--child_fixed_arc is given, so the controller cannot "
                        "be trained: add --nocontroller_training")
    if f.data_format not in ("NHWC", "NCHW"):
        raise UserError("--data_format={!r} is unknown: use NHWC or NCHW"
                        .format(f.data_format))
    if f.child_sync_replicas:
        raise UserError("--child_sync_replicas (TF1's SyncReplicasOptimizer "
                        "over parameter-server workers) is not ported: use "
                        "--distribution_strategy=mirrored or "
                        "multi_worker_mirrored")
    minimums = {"batch_size": 1, "num_epochs": 1, "log_every": 1,
                "eval_every_epochs": 1, "child_out_filters": 1,
                "child_num_cells": 1,
                # A micro network has child_num_layers + 2 layers.
                "child_num_layers": 0 if space.name == "micro" else 1}
    for name, least in minimums.items():
        if getattr(f, name) < least:
            raise UserError("--{} must be at least {}, got {}".format(
                name, least, getattr(f, name)))
    if not 0.0 < f.child_keep_prob <= 1.0:
        raise UserError("--child_keep_prob must be in (0, 1], got {}".format(
            f.child_keep_prob))

    data_format = f.data_format
    if data_format == "NCHW" and not gpu_available():
        print("data_format NCHW: TensorFlow has no NCHW convolutions or pools "
              "on CPU and no GPU is visible, so this run computes in NHWC "
              "(the numbers are the same)")
        data_format = "NHWC"

    searching = f.child_fixed_arc is None
    out_filters = f.child_out_filters * f.child_out_filters_scale
    child, controller = space.configs(f, out_filters, data_format, searching)

    lr = schedules.LrConfig(
        lr_init=f.child_lr, lr_dec_start=0, lr_dec_rate=f.child_lr_dec_rate,
        lr_cosine=f.child_lr_cosine, lr_max=f.child_lr_max,
        lr_min=f.child_lr_min, lr_T_0=f.child_lr_T_0,
        lr_T_mul=f.child_lr_T_mul, num_train_batches=1)
    train = TrainConfig(l2_reg=f.child_l2_reg, clip_mode="norm",
                        grad_bound=f.child_grad_bound, optim_algo="momentum",
                        lr=lr)
    num_valids = f.num_valids
    if num_valids is None:
        num_valids = 5000 if searching else 0
    reinforce = None
    if searching:
        if num_valids < 1:
            raise UserError("searching needs validation images for the "
                            "controller's reward: set --num_valids > 0")
        reinforce = ReinforceConfig(
            lr=f.controller_lr, l2_reg=f.controller_l2_reg,
            bl_dec=f.controller_bl_dec,
            entropy_weight=f.controller_entropy_weight,
            skip_weight=(f.controller_skip_weight
                         if space.uses_skip_weight else None),
            sync_replicas=f.controller_sync_replicas,
            num_aggregate=f.controller_num_aggregate)
    return CifarRunConfig(
        search_for=f.search_for, data_path=f.data_path,
        output_dir=f.output_dir, reset_output_dir=f.reset_output_dir,
        num_valids=num_valids, batch_size=f.batch_size,
        num_epochs=f.num_epochs, log_every=f.log_every,
        eval_every_epochs=f.eval_every_epochs, seed=f.seed,
        cutout_size=f.child_cutout_size, download=f.download, child=child,
        train=train, lr_dec_every_epochs=f.child_lr_dec_every,
        controller=controller, reinforce=reinforce,
        controller_training=bool(f.controller_training and searching),
        controller_train_every=f.controller_train_every,
        controller_train_steps=f.controller_train_steps,
        controller_num_aggregate=f.controller_num_aggregate,
        eval_training_mode=bool(searching and space.name == "micro"
                                and f.child_search_eval_training_mode),
        train_aux_head=f.child_train_aux_head,
        **port_options(f))


def phase_hooks(cfg, child, data):
    """The CIFAR-10 part of the controller phase (src.search.PhaseHooks):
    accuracy on shuffled validation batches of `data`."""
    batch_size = float(cfg.batch_size)

    def reward(arc, images, labels):
        # The reference's build_valid_rl: the child on a shuffled
        # validation batch, accuracy over batch_size.
        logits = child(images, training=cfg.eval_training_mode,
                       arc=arc).logits
        return tf.cast(num_correct(logits, labels),
                       tf.float32) / batch_size

    def reward_batches(epoch):
        return cifar_data.valid_rl_batches(
            data, cfg.batch_size, cfg.seed * 1000003 + epoch)

    def line(out, step, minutes):
        return run_log.controller_line(
            step, out["loss"], out["entropy"], out["lr"],
            out["grad_norm"], out["valid_acc"], out["baseline"], minutes)

    def scalars(out):
        values = {"controller/loss": out["loss"],
                  "controller/entropy": out["entropy"],
                  "controller/valid_acc": out["valid_acc"],
                  "controller/baseline": out["baseline"]}
        if "skip_rate" in out:
            values["controller/skip_rate"] = out["skip_rate"]
        return values

    return PhaseHooks(reward, reward_batches, line, scalars)


class CifarSession(Session):
    """A CIFAR-10 run (src.space.Session): the data read, the learning
    rate's and drop-path's step counts set from the batches per epoch.
    data: a CifarData already read (src.bench's synthetic images), else
    read from cfg.data_path."""

    def __init__(self, space, cfg, data=None):
        self.space = space
        self.cfg = cfg
        if data is None:
            data = cifar_data.read_data(cfg.data_path,
                                        num_valids=cfg.num_valids,
                                        download=cfg.download)
        self.data = data
        num_train = self.data.num_examples("train")
        self.num_train_batches = math.ceil(num_train / cfg.batch_size)
        cfg.train.lr.num_train_batches = self.num_train_batches
        cfg.train.lr.lr_dec_every = (cfg.lr_dec_every_epochs
                                     * self.num_train_batches)
        if hasattr(cfg.child, "num_train_steps"):  # drop-path's progress
            cfg.child.num_train_steps = (cfg.num_epochs
                                         * self.num_train_batches)
        self.trainer = None
        self._batch_size = cfg.batch_size

    def build(self, strategy):
        cfg, space = self.cfg, self.space
        child = space.build_child(cfg.child)
        phase = None
        if cfg.searching:
            with precision.float32_policy():  # controllers stay float32
                phase = ControllerPhase(
                    space, cfg, space.build_controller(cfg.controller),
                    phase_hooks(cfg, child, self.data))
        self.trainer = self.trainer_for(
            child, phase.sample_arc if phase else None, strategy)
        # As the reference: the variables its optimiser updates (no aux head).
        print("Model has {} params".format(
            run_loop.parameter_count(self.trainer.variables)))
        return child, self.trainer, phase, {}

    def trainer_for(self, child, arc_fn, strategy=None):
        """A ChildTrainer of `child` with the run's settings, its arcs
        from `arc_fn` (None: a fixed arc)."""
        cfg = self.cfg
        return ChildTrainer(
            child, cfg.train, jit_compile=self.space.jit_compile(cfg),
            mixed_precision=cfg.mixed_precision, arc_fn=arc_fn,
            strategy=strategy, eval_training_mode=cfg.eval_training_mode,
            train_aux_head=cfg.train_aux_head)

    def arc_scorer(self):
        """The validation accuracy of an arc with the built child's
        weights (`ValidationAccuracy`: the search study's score)."""
        return ValidationAccuracy(self.trainer.child, self.data,
                                  self.cfg.eval_training_mode)

    def epoch_batches(self, epoch, step):
        # Not 0 only when resuming from a checkpoint saved mid-epoch.
        start_batch = step - epoch * self.num_train_batches
        return cifar_data.train_dataset(
            self.data, self.cfg.batch_size, epoch, self.cfg.seed,
            cutout_size=self.cfg.cutout_size, start_batch=start_batch)

    def train_step(self, batch):
        images, labels = batch
        self._batch_size = images.shape[0]
        return {k: v.numpy() for k, v in
                self.trainer.train_step(images, labels).items()}

    def train_log(self, out, epoch, step, minutes):
        line = run_log.train_line(epoch, step, out["loss"], out["lr"],
                                  out["grad_norm"], int(out["train_acc"]),
                                  self.cfg.batch_size, minutes)
        return line, {"child/loss": out["loss"], "child/lr": out["lr"],
                      "child/grad_norm": out["grad_norm"],
                      "child/train_acc": out["train_acc"] / self._batch_size}

    def evaluate(self, step, summaries):
        splits = ["valid"] if self.data.images["valid"] is not None else []
        for split in splits + ["test"]:
            print("Eval at {}".format(step))
            acc = self.trainer.evaluate(cifar_data.eval_dataset(self.data,
                                                                split))
            print(run_log.accuracy_line(split, acc))
            summaries.scalars(step, {"{}_accuracy".format(split): acc})


class ValidationAccuracy:
    """`scorer(arc)`: the accuracy of a search child with the arc (a list
    of ints) on every held-out validation image, through one traced
    function (`predict_normalized_with_arc` of src.export: the moving
    batch-norm statistics, or each batch's with `batch_statistics`) for
    every arc; `traces()` counts its traces. `what` names the split."""

    def __init__(self, child, data, batch_statistics):
        if data.num_examples("valid") == 0:
            raise UserError("the run holds out no validation images "
                            "(--num_valids=0)")
        self.fn = child_signatures(
            child, batch_statistics=bool(batch_statistics))[
                "predict_normalized_with_arc"]
        # The split's batches, normalised once (the same tensors for
        # every arc).
        self.batches = [(images, labels.numpy()) for images, labels in
                        cifar_data.eval_dataset(data, "valid")]
        self.size = data.num_examples("valid")
        self.what = "{} validation images".format(self.size)

    def __call__(self, arc):
        arc = tf.constant(arc, tf.int32)
        correct = 0
        for images, labels in self.batches:
            logits = self.fn(images, arc)["logits"].numpy()
            correct += int(np.sum(np.argmax(logits, axis=1) == labels))
        return correct / self.size

    def traces(self):
        return self.fn.experimental_get_tracing_count()
