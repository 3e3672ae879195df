"""Benchmark: `python -m src.bench --config=NAME --json=PATH`.

Times one named configuration: graph build time (model construction plus
the first, tracing call of the step), then `--warmup` warm-up steps
(default 5), then the median, min and max of `--steps` timed steps (default
20; the published numbers use the defaults), and the peak resident memory
of the process. Steps are fed by the real tf.data pipeline over
synthetic images (the timings do not depend on pixel values).
`--config=all` runs every configuration in its own process (so each peak
memory is its own) and prints a table.

`--jit_compile` (auto, true, false) and `--mixed_precision` build the
children and trainers as the entry points do with those flags: auto is
`precision.resolve_jit_compile`'s choice for the space and mode (the PTB
reward pass compiles unless false); mixed precision builds the children
under the mixed_float16 policy with loss-scaled trainers, the controllers in
float32. Each result records both (`jit_compile`: whether the timed step or
pass ran under XLA, None where the flag does not apply; `mixed_precision`),
and the table prints them in its `xla` and `mixed` columns.

Each configuration is a function returning a `Case`: a `step()` callable
that runs one step and blocks until it is done. Later issues add theirs to
CONFIGS.
"""

import contextlib
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from absl import flags


def define_flags(flag_values=flags.FLAGS):
    """The benchmark's flags, defined when it runs (not on import: the
    entry points define flags of the same names, and tests import both)."""
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


FLAGS = flags.FLAGS


@dataclasses.dataclass
class BenchOptions:
    """The entry points' speed flags as a configuration is built with them:
    jit_compile "auto", "true" or "false"; mixed_precision a bool."""
    jit_compile: str = "auto"
    mixed_precision: bool = False


# The options of the configuration being built (set by `time_config`).
OPTIONS = BenchOptions()


def _jit(space, searching, whole_channels=True):
    """XLA for a trainer's step under OPTIONS, as the entry points resolve
    it (a UserError for a step XLA cannot compile)."""
    from src import precision
    return precision.resolve_jit_compile(OPTIONS.jit_compile, searching,
                                         space, whole_channels)


def _ptb_reward_jit():
    """The PTB reward pass's XLA under OPTIONS: None (the trainer's
    default, on) for auto, else the flag."""
    if OPTIONS.jit_compile == "auto":
        return None
    return OPTIONS.jit_compile == "true"


def _float32():
    """Controllers (and their REINFORCE) are built float32, as the entry
    points build them under --mixed_precision."""
    from src import precision
    return precision.float32_policy()

# The reference's seconds per step on this kind of machine (2 cores, NHWC,
# median of 25 steps), from ../shared/reference/README.md. macro_search_cpu:
# 0.110 with its closure bug fixed (all six branches run), 0.062 as
# published (only max pool ran).
REFERENCE_S_PER_STEP = {
    "macro_fixed_cpu": 0.089,
    "macro_search_cpu": 0.110,
    "macro_controller_cpu": 0.016,
    "micro_search_cpu": 0.562,
    "micro_fixed_cpu": 0.209,
    "micro_controller_cpu": 0.102,
    "ptb_search_cpu": 0.171,
    "ptb_fixed_cpu": 0.068,
    "ptb_controller_cpu": 0.037,
}

# The first 6 layers of the arc of the reference's cifar10_macro_final.sh.
MACRO_FIXED_CPU_ARC = "0 3 0 0 1 0 2 0 0 1 2 0 0 0 0 3 1 1 0 1 0"


@dataclasses.dataclass
class Case:
    """step(): runs one step and blocks until it is done. extra(): optional,
    run after the timing, returns more result fields (e.g. gating ratio).
    warmup, steps: fixed counts for a long "step" (a whole evaluation pass)
    instead of the defaults. jit_compile: whether the timed step runs under
    XLA (None: the option does not apply to it)."""
    step: callable
    description: str
    extra: callable = None
    warmup: int = None
    steps: int = None
    jit_compile: bool = None


def _synthetic_cifar(num_train, seed=0):
    import numpy as np

    from src.cifar10.data import CifarData
    rng = np.random.default_rng(seed)
    images = {
        "train": rng.integers(0, 256, (num_train, 32, 32, 3), dtype=np.uint8),
        "valid": None,
        "test": rng.integers(0, 256, (100, 32, 32, 3), dtype=np.uint8),
    }
    labels = {
        "train": rng.integers(0, 10, num_train).astype(np.int32),
        "valid": None,
        "test": rng.integers(0, 10, 100).astype(np.int32),
    }
    mean = np.full([3], 0.47, np.float32)
    std = np.full([3], 0.25, np.float32)
    return CifarData(images=images, labels=labels, mean=mean, std=std)


def _fixed_macro_case(arc, num_layers, out_filters, num_branches, batch_size,
                      keep_prob, lr_cosine=True):
    from src import schedules
    from src.cifar10 import arcs
    from src.cifar10.child_trainer import ChildTrainer
    from src.cifar10.macro_child import MacroChild, MacroConfig
    from src.train_ops import TrainConfig

    data = _synthetic_cifar(max(2000, 40 * batch_size))
    cfg = MacroConfig(
        num_layers=num_layers, out_filters=out_filters,
        num_branches=num_branches, whole_channels=True,
        fixed_arc=arcs.MacroArc.parse(arc, num_layers, num_branches, True),
        keep_prob=keep_prob)
    nb = -(-data.num_examples("train") // batch_size)
    lr = schedules.LrConfig(lr_cosine=lr_cosine, lr_max=0.05, lr_min=0.001,
                            lr_T_0=10, lr_T_mul=2, num_train_batches=nb)
    trainer = ChildTrainer(MacroChild(cfg), TrainConfig(
        l2_reg=2e-4, clip_mode="norm", grad_bound=5.0, lr=lr),
        jit_compile=_jit("macro", False),
        mixed_precision=OPTIONS.mixed_precision)

    step = _step_over(_batches(data, batch_size), trainer.train_step)

    return Case(step, "macro fixed child training step, {} layers, {} "
                "filters, batch {}".format(num_layers, out_filters,
                                           batch_size),
                jit_compile=trainer.jit_compile)


def _step_over(batches, step_fn):
    """A Case step: the next (images, labels) of `batches` through
    `step_fn`, blocking on its loss."""
    it = iter(batches)

    def step():
        images, labels = next(it)
        step_fn(images, labels)["loss"].numpy()

    return step


def _batches(data, batch_size):
    """Endless full training batches through the real pipeline."""
    from src.cifar10 import data as cifar_data
    epoch = 0
    while True:
        for batch in cifar_data.train_dataset(data, batch_size, epoch, 0):
            if batch[0].shape[0] == batch_size:
                yield batch
        epoch += 1


def _macro_search_parts(num_layers, out_filters, batch_size, num_branches=6):
    """A search-mode macro child with its trainer and the search script's
    controller, as the search loop builds them."""
    from src import schedules
    from src.cifar10.child_trainer import ChildTrainer
    from src.cifar10.macro_child import MacroChild, MacroConfig
    from src.cifar10.macro_controller import (MacroController,
                                              MacroControllerConfig)
    from src.train_ops import TrainConfig

    data = _synthetic_cifar(max(2000, 40 * batch_size))
    child = MacroChild(MacroConfig(
        num_layers=num_layers, out_filters=out_filters,
        num_branches=num_branches, whole_channels=True, fixed_arc=None,
        keep_prob=0.9))
    with _float32():
        controller = MacroController(MacroControllerConfig(
            num_layers=num_layers, num_branches=num_branches,
            out_filters=out_filters, tanh_constant=1.5, op_tanh_reduce=2.5,
            skip_target=0.4, skip_weight=0.8, seed=0))
    nb = -(-data.num_examples("train") // batch_size)
    train_cfg = TrainConfig(
        l2_reg=2.5e-4, clip_mode="norm", grad_bound=5.0,
        lr=schedules.LrConfig(lr_cosine=True, lr_max=0.05, lr_min=0.0005,
                              lr_T_0=10, lr_T_mul=2, num_train_batches=nb))
    trainer = ChildTrainer(child, train_cfg,
                           arc_fn=lambda: controller.sample()["arc"],
                           jit_compile=_jit("macro", True),
                           mixed_precision=OPTIONS.mixed_precision)
    return data, child, controller, trainer


def _gating_floor(data, child, controller, trainer, batch_size, num_arcs=5,
                  steps_per_arc=5):
    """Times the gated search step (arc as a tensor, tf.switch_case) and the
    same child with each arc baked in at trace time, for the same arcs
    (both with the trainer's XLA choice and loss scaling). Returns the
    medians and their ratio."""
    import tensorflow as tf

    from src import precision
    from src.cifar10.child_trainer import cross_entropy
    from src.cifar10.macro_child import BakedArc
    from src.train_ops import apply_train_step

    def make_step(baked=None):
        def step(images, labels, arc):
            with tf.GradientTape() as tape:
                out = child(images, training=True,
                            arc=arc if baked is None else baked)
                if isinstance(out, tuple):  # with an aux head
                    loss = (cross_entropy(out[0], labels)
                            + 0.4 * cross_entropy(out[1], labels))
                else:
                    loss = cross_entropy(out, labels)
            if trainer.loss_scale is None:
                apply_train_step(tape, loss, trainer.variables,
                                 trainer.optimizer, trainer.cfg)
            else:
                precision.apply_scaled_train_step(
                    tape, loss, trainer.variables, trainer.optimizer,
                    trainer.cfg, trainer.loss_scale)
            return loss
        return tf.function(step, jit_compile=trainer.jit_compile)

    arcs = [controller.sample()["arc"] for _ in range(num_arcs)]
    batches = _batches(data, batch_size)
    gated = make_step()
    timings = {"gated": [], "baked": []}
    for arc in arcs:
        baked = make_step(BakedArc(arc.numpy()))
        for name, fn in (("gated", gated), ("baked", baked)):
            for i in range(steps_per_arc + 1):
                images, labels = next(batches)
                t = time.perf_counter()
                fn(images, labels, arc).numpy()
                if i:  # the first call of each may trace
                    timings[name].append(time.perf_counter() - t)
    gated_s = statistics.median(timings["gated"])
    baked_s = statistics.median(timings["baked"])
    return {"gated_step_s_median": gated_s, "baked_step_s_median": baked_s,
            "gating_ratio": gated_s / baked_s,
            "gating_arcs": num_arcs, "gating_steps_per_arc": steps_per_arc}


def _search_case(parts, batch_size, description):
    """A search child step with a new controller-sampled arc every step,
    plus the gating floor (`_gating_floor`) as extra results."""
    data, child, controller, trainer = parts
    step = _step_over(_batches(data, batch_size), trainer.train_step)

    def extra():
        return _gating_floor(data, child, controller, trainer, batch_size)

    return Case(step, description, extra, jit_compile=trainer.jit_compile)


def _macro_search_case(num_layers, out_filters, batch_size):
    return _search_case(
        _macro_search_parts(num_layers, out_filters, batch_size), batch_size,
        "macro search child training step with a new sampled arc every "
        "step, {} layers, {} filters, 6 branches, batch {}".format(
            num_layers, out_filters, batch_size))


def macro_search_cpu():
    return _macro_search_case(6, 16, 32)


def macro_search_full():
    return _macro_search_case(12, 36, 128)


def macro_controller_cpu():
    import tensorflow as tf

    from src.cifar10 import data as cifar_data
    from src.cifar10.child_trainer import num_correct
    from src.reinforce import Reinforce, ReinforceConfig

    data, child, controller, _ = _macro_search_parts(6, 16, 32)
    data.images["valid"] = data.images["train"][:320]
    data.labels["valid"] = data.labels["train"][:320]

    def reward(arc, images, labels):
        logits = child(images, training=False, arc=arc)
        return tf.cast(num_correct(logits, labels), tf.float32) / 32.0

    with _float32():
        trainer = Reinforce(controller, reward, ReinforceConfig(
            lr=1e-3, bl_dec=0.99, entropy_weight=1e-4, skip_weight=0.8))
    step = _step_over(cifar_data.valid_rl_batches(data, 32, 0), trainer.run)

    return Case(step, "one macro controller update: sample an arc, its "
                "reward on a validation batch of 32 (6 layers, 16 filters), "
                "baseline, Adam")


MICRO_FINAL_ARC = ("0 2 0 0 0 4 0 1 0 4 1 1 1 0 0 1 0 2 1 1 "
                   "1 0 1 0 0 3 0 2 1 1 3 1 1 0 0 4 0 3 1 1")


def _micro_parts(num_layers, out_filters, batch_size, fixed_arc=None,
                 keep_prob=0.9, drop_path_keep_prob=0.6):
    """A micro child (search mode unless `fixed_arc`) with its trainer and,
    when searching, the search script's controller."""
    from src import schedules
    from src.cifar10 import arcs
    from src.cifar10.child_trainer import ChildTrainer
    from src.cifar10.micro_child import MicroChild, MicroConfig
    from src.train_ops import TrainConfig

    data = _synthetic_cifar(max(2000, 40 * batch_size))
    nb = -(-data.num_examples("train") // batch_size)
    cfg = MicroConfig(
        num_layers=num_layers, num_cells=5, out_filters=out_filters,
        keep_prob=keep_prob, drop_path_keep_prob=drop_path_keep_prob,
        use_aux_heads=True, num_train_steps=100 * nb,
        fixed_arc=(arcs.MicroArc.parse(fixed_arc, 5) if fixed_arc else None))
    child = MicroChild(cfg)
    controller = None
    arc_fn = None
    if fixed_arc is None:
        from src.cifar10.micro_controller import (MicroController,
                                                  MicroControllerConfig)
        with _float32():
            controller = MicroController(MicroControllerConfig(
                num_cells=5, num_branches=5, tanh_constant=1.10,
                op_tanh_reduce=2.5, seed=0))
        arc_fn = lambda: controller.sample()["arc"]  # noqa: E731
    train_cfg = TrainConfig(
        l2_reg=1e-4, clip_mode="norm", grad_bound=5.0,
        lr=schedules.LrConfig(lr_cosine=True, lr_max=0.05, lr_min=0.0005,
                              lr_T_0=10, lr_T_mul=2, num_train_batches=nb))
    trainer = ChildTrainer(child, train_cfg, arc_fn=arc_fn,
                           eval_training_mode=fixed_arc is None,
                           jit_compile=_jit("micro", fixed_arc is None),
                           mixed_precision=OPTIONS.mixed_precision)
    return data, child, controller, trainer


def _micro_search_case(num_layers, out_filters, batch_size):
    return _search_case(
        _micro_parts(num_layers, out_filters, batch_size), batch_size,
        "micro search child training step with a new sampled arc every "
        "step, child_num_layers={}, 5 cells, {} filters, aux head, batch {}"
        .format(num_layers, out_filters, batch_size))


def _micro_fixed_case(num_layers, out_filters, batch_size, keep_prob):
    data, _, _, trainer = _micro_parts(num_layers, out_filters, batch_size,
                                       fixed_arc=MICRO_FINAL_ARC,
                                       keep_prob=keep_prob)
    step = _step_over(_batches(data, batch_size), trainer.train_step)

    return Case(step, "micro fixed child training step, the arc of "
                "cifar10_micro_final.sh, child_num_layers={}, {} filters, "
                "aux head, drop-path, batch {}".format(
                    num_layers, out_filters, batch_size),
                jit_compile=trainer.jit_compile)


def micro_search_cpu():
    return _micro_search_case(2, 16, 32)


def micro_search_full():
    return _micro_search_case(6, 20, 160)


def micro_fixed_cpu():
    return _micro_fixed_case(2, 16, 32, 0.8)


def micro_fixed_full():
    return _micro_fixed_case(15, 36, 144, 0.8)


def micro_controller_cpu():
    import tensorflow as tf

    from src.cifar10 import data as cifar_data
    from src.cifar10.child_trainer import num_correct
    from src.reinforce import Reinforce, ReinforceConfig

    data, child, controller, _ = _micro_parts(2, 16, 32)
    data.images["valid"] = data.images["train"][:320]
    data.labels["valid"] = data.labels["train"][:320]

    def reward(arc, images, labels):
        out = child(images, training=True, arc=arc)
        logits = out[0] if isinstance(out, tuple) else out
        return tf.cast(num_correct(logits, labels), tf.float32) / 32.0

    with _float32():
        trainer = Reinforce(controller, reward, ReinforceConfig(
            lr=3.5e-3, bl_dec=0.99, entropy_weight=1e-4))
    step = _step_over(cifar_data.valid_rl_batches(data, 32, 0), trainer.run)

    return Case(step, "one micro controller update: sample a normal and a "
                "reduction cell, their reward on a validation batch of 32 "
                "(training-mode child, child_num_layers=2, 16 filters), "
                "baseline, Adam")


def macro_fixed_cpu():
    return _fixed_macro_case(MACRO_FIXED_CPU_ARC, 6, 16, 4, 32, 0.5)


def macro_fixed_full():
    from src.cifar10.arcs import MacroArc  # noqa: F401 (documents the arc)
    arc = open(os.path.join(os.path.dirname(__file__), os.pardir, "flags",
                            "cifar10_macro_final.flags")).read()
    arc = [line for line in arc.splitlines()
           if line.startswith("--child_fixed_arc=")][0].split("=", 1)[1]
    return _fixed_macro_case(arc, 24, 96, 4, 100, 0.5)


PTB_FINAL_ARC = "0 0 0 1 1 2 1 2 0 2 0 5 1 1 0 6 1 8 1 8 1 8 1"


def _ptb_windows(vocab_size, batch_size, bptt_steps, num_tokens=200000,
                 seed=0):
    """Endless training windows over a synthetic token stream (timings do
    not depend on the word ids)."""
    import numpy as np

    from src.ptb import data as ptb_data
    stream = np.random.default_rng(seed).integers(
        0, vocab_size, num_tokens).astype(np.int32)
    return stream, ptb_data.WindowStream(stream, batch_size, bptt_steps)


def _ptb_parts(hidden_size, batch_size, fixed_arc=None, bptt_steps=35,
               rhn_depth=12, vocab_size=10000):
    """A PTB child (search mode unless `fixed_arc`) with its trainer and,
    when searching, the search script's controller; the keep probabilities
    and training settings of ptb_search.sh / ptb_final.sh."""
    from src import schedules
    from src.ptb.arcs import PtbArc
    from src.ptb.ptb_child import PtbChild, PtbChildConfig
    from src.ptb.ptb_trainer import PtbTrainConfig, PtbTrainer

    searching = fixed_arc is None
    keeps = (0.75, 0.25, 0.75, 0.25) if searching else (0.79, 0.25, 0.75,
                                                        0.24)
    child = PtbChild(PtbChildConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, num_layers=1,
        rhn_depth=rhn_depth,
        fixed_arc=None if searching else PtbArc.parse(fixed_arc, rhn_depth),
        batch_size=batch_size, bptt_steps=bptt_steps, e_keep=keeps[0],
        x_keep=keeps[1], h_keep=keeps[2], o_keep=keeps[3], seed=0))
    controller = None
    arc_fn = None
    if searching:
        from src.ptb.ptb_controller import PtbController, PtbControllerConfig
        with _float32():
            controller = PtbController(PtbControllerConfig(
                rhn_depth=rhn_depth, tanh_constant=2.5, temperature=5.0,
                seed=0))
        arc_fn = lambda: controller.sample()["arc"]  # noqa: E731
        cfg = PtbTrainConfig(
            l2_reg=1e-7, grad_bound=10.0,
            lr=schedules.LrConfig(lr_init=0.25, lr_dec_start=12 * 1000,
                                  lr_dec_every=1000, lr_dec_rate=0.95,
                                  lr_dec_min=0.0005))
    else:
        cfg = PtbTrainConfig(
            l2_reg=5e-7, grad_bound=0.25, rnn_slowness_reg=1e-3,
            lr=schedules.LrConfig(lr_init=20.0, lr_dec_start=14 * 1000,
                                  lr_dec_every=1000, lr_dec_rate=0.9991,
                                  lr_dec_min=0.001))
    trainer = PtbTrainer(child, cfg, arc_fn=arc_fn,
                         jit_compile=_jit("ptb", searching),
                         mixed_precision=OPTIONS.mixed_precision,
                         reward_jit_compile=_ptb_reward_jit())
    return child, controller, trainer


def _ptb_step_over(windows, step_fn):
    def step():
        x, y = windows.next()
        step_fn(x, y)["loss"].numpy()
    return step


def _ptb_gating_floor(child, controller, trainer, windows, num_arcs=5,
                      steps_per_arc=5):
    """The gated PTB search step (arc tensor, tf.switch_case) against the
    same child with each arc baked in at trace time (BakedArc), for the
    same arcs (both with the trainer's XLA choice and loss scaling):
    medians and their ratio."""
    from src.ptb.ptb_child import BakedArc
    from src.ptb.ptb_trainer import PtbTrainer

    def make(arc_fn):
        return PtbTrainer(child, trainer.cfg, arc_fn=arc_fn,
                          jit_compile=trainer.jit_compile,
                          mixed_precision=trainer.loss_scale is not None)

    arcs = [controller.sample()["arc"].numpy() for _ in range(num_arcs)]
    current = {"arc": None}
    gated = make(lambda: tf_constant(current["arc"]))
    timings = {"gated": [], "baked": []}
    for values in arcs:
        current["arc"] = values
        baked = make(lambda v=values: BakedArc(v))
        for name, t in (("gated", gated), ("baked", baked)):
            for i in range(steps_per_arc + 1):
                x, y = windows.next()
                start = time.perf_counter()
                t.train_step(x, y)["loss"].numpy()
                if i:  # the first call of each may trace
                    timings[name].append(time.perf_counter() - start)
    gated_s = statistics.median(timings["gated"])
    baked_s = statistics.median(timings["baked"])
    return {"gated_step_s_median": gated_s, "baked_step_s_median": baked_s,
            "gating_ratio": gated_s / baked_s,
            "gating_arcs": num_arcs, "gating_steps_per_arc": steps_per_arc}


def tf_constant(values):
    import tensorflow as tf
    return tf.constant(values, tf.int32)


def _ptb_search_case(hidden_size, batch_size):
    child, controller, trainer = _ptb_parts(hidden_size, batch_size)
    _, windows = _ptb_windows(10000, batch_size, 35)
    step = _ptb_step_over(windows, trainer.train_step)

    def extra():
        return _ptb_gating_floor(child, controller, trainer, windows)

    return Case(step, "PTB search child training step with a new sampled "
                "arc every step, hidden {}, bptt 35, batch {}, depth 12"
                .format(hidden_size, batch_size), extra,
                jit_compile=trainer.jit_compile)


def _ptb_fixed_case(hidden_size, batch_size):
    _, _, trainer = _ptb_parts(hidden_size, batch_size,
                               fixed_arc=PTB_FINAL_ARC)
    _, windows = _ptb_windows(10000, batch_size, 35)
    return Case(_ptb_step_over(windows, trainer.train_step),
                "PTB fixed child training step, the arc of ptb_final.sh, "
                "hidden {}, bptt 35, batch {}, depth 12".format(
                    hidden_size, batch_size),
                jit_compile=trainer.jit_compile)


def ptb_search_cpu():
    return _ptb_search_case(64, 20)


def ptb_search_full():
    return _ptb_search_case(720, 20)


def ptb_fixed_cpu():
    return _ptb_fixed_case(64, 20)


def ptb_fixed_full():
    return _ptb_fixed_case(748, 64)


def ptb_controller_cpu():
    import numpy as np
    import tensorflow as tf

    from src.ptb import data as ptb_data
    from src.reinforce import Reinforce, ReinforceConfig

    _, controller, trainer = _ptb_parts(64, 20)
    stream, _ = _ptb_windows(10000, 20, 35, num_tokens=80000)
    rows = ptb_data.batch_rows(stream, 20)
    rng = np.random.default_rng(0)

    def reward(arc, x, y):
        return 80.0 / tf.exp(trainer.reward_nll(x, y, arc))

    with _float32():
        reinforce = Reinforce(controller, reward, ReinforceConfig(
            lr=1e-3, bl_dec=0.99, entropy_weight=1e-3))

    def step():
        x, y = ptb_data.random_window(rows, 35, rng)
        reinforce.run(tf.constant(x), tf.constant(y))["loss"].numpy()

    return Case(step, "one PTB controller update: sample a cell, its reward "
                "80 / ppl on a random validation window [20, 35] (hidden "
                "64, depth 12), baseline, Adam",
                jit_compile=trainer.reward_jit_compile)


def ptb_test_eval_cpu():
    """The test-set evaluation (batch 1, 82430 words, hidden 64, the arc of
    ptb_final.sh): one 'step' is the whole pass the fast way; `extra`
    times the reference's way (one word per call) on 2000 words and
    scales it to the whole set."""
    import tensorflow as tf

    _, _, trainer = _ptb_parts(64, 20, fixed_arc=PTB_FINAL_ARC)
    stream, _ = _ptb_windows(10000, 1, 1, num_tokens=82430, seed=1)

    def step():
        trainer.evaluate(stream, 1, 1)

    def extra():
        n = 2000
        state = trainer.child.zero_state(1)
        times = []
        for i in range(n):
            x = tf.constant(stream[None, i:i + 1])
            y = tf.constant(stream[None, i + 1:i + 2])
            t = time.perf_counter()
            nll, state = trainer._eval_fn(x, y, state)
            nll.numpy()
            times.append(time.perf_counter() - t)
        per_word = statistics.median(times[100:])
        return {"one_word_per_call_s_per_word": per_word,
                "one_word_per_call_s_estimated": per_word * (stream.size - 1),
                "words": int(stream.size - 1)}

    return Case(step, "PTB test-set evaluation, batch 1, {} words, hidden "
                "64: long windows with the state carried".format(
                    stream.size - 1), extra, warmup=1, steps=3,
                jit_compile=False)


CONFIGS = {
    "macro_fixed_cpu": macro_fixed_cpu,
    "macro_search_cpu": macro_search_cpu,
    "macro_controller_cpu": macro_controller_cpu,
    "micro_search_cpu": micro_search_cpu,
    "micro_fixed_cpu": micro_fixed_cpu,
    "micro_controller_cpu": micro_controller_cpu,
    "macro_fixed_full": macro_fixed_full,
    "macro_search_full": macro_search_full,
    "micro_search_full": micro_search_full,
    "micro_fixed_full": micro_fixed_full,
    "ptb_search_cpu": ptb_search_cpu,
    "ptb_fixed_cpu": ptb_fixed_cpu,
    "ptb_controller_cpu": ptb_controller_cpu,
    "ptb_test_eval_cpu": ptb_test_eval_cpu,
    "ptb_search_full": ptb_search_full,
    "ptb_fixed_full": ptb_fixed_full,
}


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@contextlib.contextmanager
def _options(options):
    """OPTIONS and Keras' dtype policy for the duration of a block."""
    from src import precision
    global OPTIONS
    previous = OPTIONS
    OPTIONS = options
    try:
        with precision.mixed_precision_scope(options.mixed_precision):
            yield
    finally:
        OPTIONS = previous


def time_config(name, warmup=5, steps=20, jit_compile="auto",
                mixed_precision=False):
    """Builds and times one configuration with the entry points'
    `--jit_compile` and `--mixed_precision`; returns the result dict."""
    from src.errors import UserError
    if name not in CONFIGS:
        raise UserError("unknown --config={!r}: use one of {} or all".format(
            name, ", ".join(sorted(CONFIGS))))
    jit_compile = str(jit_compile).strip().lower()
    if jit_compile not in ("auto", "true", "false"):
        raise UserError("--jit_compile={!r} is unknown: use auto, true or "
                        "false".format(jit_compile))
    options = BenchOptions(jit_compile, bool(mixed_precision))
    with _options(options):
        return _time_case(name, CONFIGS[name], max(0, int(warmup)),
                          max(1, int(steps)), options)


def _time_case(name, build, warmup, steps, options):
    t0 = time.perf_counter()
    case = build()
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
        result.update(case.extra())
        result["peak_rss_mb"] = peak_rss_mb()
    ref = REFERENCE_S_PER_STEP.get(name)
    if ref:
        result["reference_step_s"] = ref
        result["ratio_to_reference"] = result["step_s_median"] / ref
    return result


def _yes_no(value):
    if value is None:
        return "-"
    return "yes" if value else "no"


def format_row(r):
    ratio = r.get("ratio_to_reference")
    gating = r.get("gating_ratio")
    return ("{:<22s} {:>9.4f} {:>9.4f} {:>9.4f} {:>8.1f} {:>9.0f} {:>7s} "
            "{:>7s} {:>4s} {:>6s}").format(
        r["config"], r["step_s_median"], r["step_s_min"], r["step_s_max"],
        r["build_s"], r["peak_rss_mb"],
        "{:.2f}".format(ratio) if ratio else "-",
        "{:.2f}".format(gating) if gating else "-",
        _yes_no(r.get("jit_compile")), _yes_no(r.get("mixed_precision")))


HEADER = ("{:<22s} {:>9s} {:>9s} {:>9s} {:>8s} {:>9s} {:>7s} {:>7s} {:>4s} "
          "{:>6s}").format(
    "config", "median_s", "min_s", "max_s", "build_s", "peak_MB", "vs_ref",
    "gating", "xla", "mixed")


def header(jit_compile, mixed_precision):
    """The table's header: the options, then the column names."""
    return "# --jit_compile={} --{}mixed_precision\n{}".format(
        jit_compile, "" if mixed_precision else "no", HEADER)


def main(argv):
    from src.errors import UserError
    if len(argv) > 1:
        raise UserError("unexpected arguments {}: every option is a --flag"
                        .format(" ".join(argv[1:])))
    mixed = "--{}mixed_precision".format(
        "" if FLAGS.mixed_precision else "no")
    if FLAGS.config == "all":
        results = []
        for name in CONFIGS:
            out = subprocess.run(
                [sys.executable, "-m", "src.bench", "--config=" + name,
                 "--warmup={}".format(FLAGS.warmup),
                 "--steps={}".format(FLAGS.steps),
                 "--jit_compile=" + FLAGS.jit_compile, mixed,
                 "--json=/dev/stdout"],
                capture_output=True, text=True)
            lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
            if out.returncode or not lines:
                print("{}: failed\n{}".format(name, out.stderr[-2000:]))
                continue
            results.append(json.loads(lines[-1]))
        print(header(FLAGS.jit_compile, FLAGS.mixed_precision))
        for r in results:
            print(format_row(r))
        payload = results
    else:
        payload = time_config(FLAGS.config, FLAGS.warmup, FLAGS.steps,
                              FLAGS.jit_compile, FLAGS.mixed_precision)
        if FLAGS.json != "/dev/stdout":
            print(header(FLAGS.jit_compile, FLAGS.mixed_precision))
            print(format_row(payload))
    if FLAGS.json:
        text = json.dumps(payload)
        if FLAGS.json == "/dev/stdout":
            print(text)
        else:
            with open(FLAGS.json, "w") as f:
                f.write(text + "\n")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from src import entry_point
    define_flags()
    entry_point.run(main)
