"""CIFAR-10 entry point: `python -m src.cifar10.main --search_for=macro ...`.

Reads the reference's flags (see `src/cifar10/flags.py`), builds plain
config objects from them, and runs the training loop of the reference's
`train()`: child steps with the reference's log line every `--log_every`
steps, an evaluation every `--eval_every_epochs` epochs, a checkpoint per
epoch, resuming from `--output_dir` when it already holds one.
"""

import contextlib
import dataclasses
import math
import os
import time

from absl import flags

from src import flag_defs
from src.cifar10 import flags as cifar_flags

cifar_flags.define_flags()
FLAGS = flags.FLAGS


@dataclasses.dataclass
class RunConfig:
    """Everything a CIFAR-10 run needs, read from the flags once."""
    search_for: str
    data_path: str
    output_dir: str
    reset_output_dir: bool
    num_valids: int
    batch_size: int
    num_epochs: int
    log_every: int
    eval_every_epochs: int
    seed: int
    cutout_size: int
    download: bool
    child: object          # MacroConfig
    train: object          # TrainConfig; lr.num_train_batches set later
    lr_dec_every_epochs: int
    # Search only (None / unused with a fixed arc).
    controller: object = None      # MacroControllerConfig
    reinforce: object = None       # ReinforceConfig
    controller_training: bool = False
    controller_train_every: int = 2
    controller_train_steps: int = 50
    controller_num_aggregate: int = 1
    # Micro search runs its valid, test and reward passes in training mode.
    eval_training_mode: bool = False
    train_aux_head: bool = False
    # Port options shared with the PTB entry point.
    reference_checkpoint: str = None
    jit_compile: str = "auto"
    mixed_precision: bool = False
    deterministic: bool = False
    nan_policy: str = "stop"
    distribution_strategy: str = "default"
    num_cpu_devices: int = 0

    @property
    def searching(self):
        return self.child.fixed_arc is None


def gpu_available():
    import tensorflow as tf
    return bool(tf.config.list_physical_devices("GPU"))


def _macro_configs(f, out_filters, data_format, searching):
    """Child and controller configs of the macro search space."""
    from src.cifar10 import arcs
    from src.cifar10.macro_child import MacroConfig
    from src.errors import UserError

    arc = None
    if not searching:
        arc = arcs.MacroArc.parse(
            f.child_fixed_arc, f.child_num_layers, f.child_num_branches,
            f.controller_search_whole_channels)
    elif not 4 <= f.child_num_branches <= 6:
        raise UserError("--child_num_branches={} cannot be searched: the macro "
                        "search space has 4, 5 or 6 branches".format(
                            f.child_num_branches))
    child = MacroConfig(
        num_layers=f.child_num_layers, out_filters=out_filters,
        num_branches=f.child_num_branches,
        whole_channels=f.controller_search_whole_channels, fixed_arc=arc,
        keep_prob=f.child_keep_prob, data_format=data_format,
        fixed_separable=f.child_fixed_separable, seed=f.seed)
    child.validate()
    if max(arcs.pool_layers(f.child_num_layers)) < 0:
        print("note: --child_num_layers={} < 3, so the network has no pool "
              "layers (as in the reference)".format(f.child_num_layers))
    controller = None
    if searching:
        from src.cifar10.macro_controller import MacroControllerConfig
        controller = MacroControllerConfig(
            num_layers=f.child_num_layers, num_branches=f.child_num_branches,
            out_filters=out_filters, lstm_size=64, lstm_num_layers=1,
            tanh_constant=f.controller_tanh_constant,
            op_tanh_reduce=f.controller_op_tanh_reduce,
            temperature=f.controller_temperature,
            search_whole_channels=f.controller_search_whole_channels,
            skip_target=f.controller_skip_target,
            skip_weight=f.controller_skip_weight, seed=f.seed)
        controller.validate()
    return child, controller


def _micro_configs(f, out_filters, data_format, searching):
    """Child and controller configs of the micro (cell) search space."""
    from src.cifar10 import arcs
    from src.cifar10.micro_child import MicroConfig

    arc = None
    if not searching:
        arc = arcs.MicroArc.parse(f.child_fixed_arc, f.child_num_cells)
    child = MicroConfig(
        num_layers=f.child_num_layers, num_cells=f.child_num_cells,
        out_filters=out_filters, keep_prob=f.child_keep_prob,
        drop_path_keep_prob=f.child_drop_path_keep_prob,
        use_aux_heads=f.child_use_aux_heads, fixed_arc=arc,
        # In epochs until train() knows the batches per epoch.
        num_train_steps=f.num_epochs,
        data_format=data_format, seed=f.seed)
    child.validate()
    controller = None
    if searching:
        from src.cifar10.micro_controller import MicroControllerConfig
        controller = MicroControllerConfig(
            num_cells=f.child_num_cells, num_branches=f.child_num_branches,
            lstm_size=64, lstm_num_layers=1,
            tanh_constant=f.controller_tanh_constant,
            op_tanh_reduce=f.controller_op_tanh_reduce,
            temperature=f.controller_temperature, seed=f.seed)
        controller.validate()
    return child, controller


def config_from_flags(f):
    """Validates the flags and turns them into a RunConfig."""
    from src import schedules
    from src.errors import UserError
    from src.reinforce import ReinforceConfig
    from src.train_ops import TrainConfig

    if f.search_for is None:
        raise UserError("--search_for is required: pass --search_for=macro "
                        "or --search_for=micro")
    if f.search_for not in ("macro", "micro"):
        raise UserError("--search_for={!r} is unknown: use macro or micro"
                        .format(f.search_for))
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
                "child_num_layers": 0 if f.search_for == "micro" else 1}
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
    make_configs = (_micro_configs if f.search_for == "micro"
                    else _macro_configs)
    child, controller = make_configs(f, out_filters, data_format, searching)

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
                         if f.search_for == "macro" else None),
            sync_replicas=f.controller_sync_replicas,
            num_aggregate=f.controller_num_aggregate)
    return RunConfig(
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
        eval_training_mode=bool(searching and f.search_for == "micro"
                                and f.child_search_eval_training_mode),
        train_aux_head=f.child_train_aux_head,
        **flag_defs.port_options(f))


def train(cfg):
    """Runs `_train(cfg)` under the run's dtype policy (mixed_float16 with
    --mixed_precision), restoring the previous policy afterwards."""
    from src import precision
    with precision.mixed_precision_scope(cfg.mixed_precision):
        return _train(cfg)


def _train(cfg):
    """The reference's `train()` loop: child epochs, then (when searching)
    the controller's training and its 10 sample architectures, then the
    evaluations, then a checkpoint."""
    import numpy as np

    from src import entry_point, precision, run_log
    from src.checkpoints import open_run_checkpoint
    from src.cifar10 import data as cifar_data
    from src.cifar10.child_trainer import ChildTrainer
    from src.interrupts import StopRequest
    from src.nan_guard import NanGuard
    from src.cifar10.macro_child import MacroChild

    strategy = entry_point.prepare_run(cfg)
    data = cifar_data.read_data(cfg.data_path, num_valids=cfg.num_valids,
                                download=cfg.download)
    num_train = data.num_examples("train")
    num_train_batches = math.ceil(num_train / cfg.batch_size)
    cfg.train.lr.num_train_batches = num_train_batches
    cfg.train.lr.lr_dec_every = cfg.lr_dec_every_epochs * num_train_batches

    if hasattr(cfg.child, "num_train_steps"):  # drop-path's progress
        cfg.child.num_train_steps = cfg.num_epochs * num_train_batches

    print("-" * 80)
    print("Build model child")
    with strategy.scope() if strategy else contextlib.nullcontext():
        if cfg.search_for == "micro":
            from src.cifar10.micro_child import MicroChild
            child = MicroChild(cfg.child)
        else:
            child = MacroChild(cfg.child)
        search = None
        if cfg.searching:
            from src.cifar10.search import ArchitectureSearch
            with precision.float32_policy():  # controllers stay float32
                search = ArchitectureSearch(
                    cfg, child, data,
                    reward_training_mode=cfg.eval_training_mode)
        trainer = ChildTrainer(child, cfg.train,
                               jit_compile=precision.resolve_jit_compile(
                                   cfg.jit_compile, cfg.searching,
                                   cfg.search_for,
                                   whole_channels=getattr(
                                       cfg.child, "whole_channels", True)),
                               mixed_precision=cfg.mixed_precision,
                               arc_fn=search.sample_arc if search else None,
                               strategy=strategy,
                               eval_training_mode=cfg.eval_training_mode,
                               train_aux_head=cfg.train_aux_head)
        # As the reference: the variables its optimiser updates (no aux head).
        print("Model has {} params".format(
            sum(int(np.prod(v.shape)) for v in trainer.variables)))

        ckpt, restored = open_run_checkpoint(
            cfg.output_dir, child, trainer, search, cfg.reference_checkpoint)
    step = int(trainer.global_step.numpy())
    epoch = step // num_train_batches
    if restored:
        print("Resuming from {} (epoch {}, step {})".format(
            restored, epoch, step))
    summaries = run_log.Summaries(cfg.output_dir)

    print("-" * 80)
    print("Starting session")
    start_time = time.time()

    stop_on_nan = NanGuard(cfg.nan_policy, lambda: (step, epoch),
                           lambda: ckpt.latest, on_stop=summaries.flush)

    with StopRequest() as stop:
        while epoch < cfg.num_epochs:
            # Not 0 only when resuming from a checkpoint saved mid-epoch.
            start_batch = step - epoch * num_train_batches
            for images, labels in cifar_data.train_dataset(
                    data, cfg.batch_size, epoch, cfg.seed,
                    cutout_size=cfg.cutout_size, start_batch=start_batch):
                out = {k: v.numpy() for k, v in
                       trainer.train_step(images, labels).items()}
                step += 1
                if stop_on_nan(precision.values_to_check(out), "child",
                               out.get("arc")):
                    return 1
                if step % cfg.log_every == 0:
                    print(run_log.train_line(
                        step // num_train_batches, step, out["loss"],
                        out["lr"], out["grad_norm"], int(out["train_acc"]),
                        cfg.batch_size, (time.time() - start_time) / 60))
                    summaries.scalars(step, {
                        "child/loss": out["loss"], "child/lr": out["lr"],
                        "child/grad_norm": out["grad_norm"],
                        "child/train_acc":
                            out["train_acc"] / images.shape[0]})
                if stop.requested:
                    print(stop.message(ckpt.save(epoch, step)))
                    summaries.flush()
                    return stop.exit_status()
            epoch = step // num_train_batches
            if epoch % cfg.eval_every_epochs == 0:
                if (search and cfg.controller_training
                        and epoch % cfg.controller_train_every == 0):
                    if not search.train_controller(epoch, start_time,
                                                   summaries, stop_on_nan):
                        return 1
                    search.print_architectures(epoch)
                print("Epoch {}: Eval".format(epoch))
                splits = ["valid"] if data.images["valid"] is not None else []
                for split in splits + ["test"]:
                    print("Eval at {}".format(step))
                    acc = trainer.evaluate(cifar_data.eval_dataset(data,
                                                                   split))
                    print(run_log.accuracy_line(split, acc))
                    summaries.scalars(step,
                                      {"{}_accuracy".format(split): acc})
            path = ckpt.save(epoch, step)
            summaries.flush()
            if stop.requested:
                print(stop.message(path))
                return stop.exit_status()
    return 0


def main(argv):
    from src import entry_point
    return train(entry_point.start_run(argv, FLAGS, cifar_flags.USER_FLAGS,
                                       config_from_flags))


def run(argv=None):
    """Runs `main` under absl; user errors become one line and exit 2."""
    from src import entry_point
    entry_point.run(main, argv)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run()
