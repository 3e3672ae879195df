"""Penn Treebank entry point: `python -m src.ptb.main --search_for=enas ...`.

Recurrent-cell search (no --child_fixed_arc: the controller samples a cell
per step) and final training of a fixed cell, with the reference's flags,
log lines and evaluation printout.

Known errata: the reference's README says this language model is wrong
("please do not use it") and points to the authors' corrected code,
google-research/google-research enas_lm. This port reproduces the
reference's model, because that is what scripts/ptb_search.sh and
scripts/ptb_final.sh run. What differs from the corrected model (BUILD.md
gives the details and evidence): the controller samples only 2 of the cell's
4 activations (--controller_num_funcs=4 searches all of them); node 0's
activation is searched (enas_lm fixes it to tanh); the cell outputs the mean
of its loose ends (enas_lm: the mean of every node but the first); search
mode batch-normalises every node and the output with epsilon 1.0 (enas_lm
has no normalisation); the dropout scheme differs (no embedding-row or
weight dropout); BPTT windows have a fixed length; the reward is scored on
one random validation window.
"""

import contextlib
import dataclasses
import os
import time

from absl import flags

from src import flag_defs
from src.ptb import flags as ptb_flags
from src.ptb.log_lines import print_evaluation, train_line

ptb_flags.define_flags()
FLAGS = flags.FLAGS

# The reference tests the model whenever the validation perplexity beats
# this (and once at the end).
BEST_VALID_PPL_START = 67.00


@dataclasses.dataclass
class RunConfig:
    """Everything a PTB run needs, read from the flags once."""
    data_path: str
    output_dir: str
    reset_output_dir: bool
    train_on_valid: bool
    batch_size: int
    bptt_steps: int
    num_epochs: int
    log_every: int
    eval_every_epochs: int
    seed: int
    download: bool
    reset_train_states: float
    child: object              # PtbChildConfig (vocab_size set later)
    train: object              # PtbTrainConfig (lr steps set later)
    lr_dec_start_epochs: int
    lr_dec_every_epochs: int
    controller: object = None  # PtbControllerConfig
    reinforce: object = None   # ReinforceConfig
    controller_training: bool = False
    controller_train_every: int = 2
    controller_train_steps: int = 50
    controller_num_aggregate: int = 1
    # Port options shared with the CIFAR entry point.
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


def config_from_flags(f):
    """Validates the flags and turns them into a RunConfig."""
    from src.errors import UserError
    from src.ptb import arcs
    from src.ptb.ptb_child import PtbChildConfig
    from src.ptb.ptb_trainer import PtbTrainConfig
    from src.reinforce import ReinforceConfig
    from src import schedules

    if f.search_for is None:
        raise UserError("--search_for is required: pass --search_for=enas")
    if f.search_for != "enas":
        raise UserError("--search_for={!r} is unknown: the PTB search space "
                        "is enas (the reference's rhn and base were never "
                        "implemented)".format(f.search_for))
    if f.child_fixed_arc is not None and f.controller_training:
        raise UserError("--child_fixed_arc is given, so the controller cannot "
                        "be trained: add --nocontroller_training")
    minimums = {"batch_size": 1, "num_epochs": 1, "log_every": 1,
                "eval_every_epochs": 1, "child_bptt_steps": 1,
                "child_lstm_hidden_size": 1, "child_num_layers": 1,
                "child_rhn_depth": 1, "child_lr_dec_every": 1,
                "controller_train_every": 1, "controller_num_aggregate": 1}
    for name, least in minimums.items():
        if getattr(f, name) < least:
            raise UserError("--{} must be at least {}, got {}".format(
                name, least, getattr(f, name)))
    if f.child_lstm_hidden_size % f.child_block_size != 0:
        raise UserError("--child_block_size={} has to divide "
                        "--child_lstm_hidden_size={}".format(
                            f.child_block_size, f.child_lstm_hidden_size))
    if f.child_optim_algo != "sgd":
        print("note: --child_optim_algo={} is ignored: the reference's PTB "
              "child always trains with sgd".format(f.child_optim_algo))
    if f.child_sync_replicas:
        raise UserError("--child_sync_replicas is not supported for the PTB "
                        "child (the reference crashes on it: "
                        "FLAGS.num_aggregate is undefined); drop the flag")

    searching = f.child_fixed_arc is None
    fixed_arc = None
    if not searching:
        fixed_arc = arcs.PtbArc.parse(f.child_fixed_arc, f.child_rhn_depth)
    child = PtbChildConfig(
        vocab_size=None, hidden_size=f.child_lstm_hidden_size,
        num_layers=f.child_num_layers, rhn_depth=f.child_rhn_depth,
        fixed_arc=fixed_arc, batch_size=f.batch_size,
        bptt_steps=f.child_bptt_steps, e_keep=f.child_lstm_e_keep,
        x_keep=f.child_lstm_x_keep, h_keep=f.child_lstm_h_keep,
        o_keep=f.child_lstm_o_keep, l_skip=f.child_lstm_l_skip, seed=f.seed)
    lr = schedules.LrConfig(
        lr_init=f.child_lr, lr_dec_rate=f.child_lr_dec_rate,
        lr_dec_min=f.child_lr_dec_min, lr_warmup_val=f.child_lr_warmup_val,
        lr_warmup_steps=f.child_lr_warmup_steps)
    train = PtbTrainConfig(
        l2_reg=f.child_l2_reg or 0.0, grad_bound=f.child_grad_bound, lr=lr,
        rnn_l2_reg=f.child_rnn_l2_reg,
        rnn_slowness_reg=f.child_rnn_slowness_reg,
        moving_average=f.child_optim_moving_average)

    controller = reinforce = None
    if searching:
        from src.ptb.ptb_controller import PtbControllerConfig
        controller = PtbControllerConfig(
            rhn_depth=f.child_rhn_depth, num_funcs=f.controller_num_funcs,
            lstm_size=100, lstm_num_layers=1,
            tanh_constant=f.controller_tanh_constant,
            temperature=f.controller_temperature, seed=f.seed)
        controller.validate()
        reinforce = ReinforceConfig(
            lr=f.controller_lr, l2_reg=f.controller_l2_reg,
            bl_dec=f.controller_bl_dec,
            entropy_weight=f.controller_entropy_weight,
            sync_replicas=f.controller_sync_replicas,
            num_aggregate=f.controller_num_aggregate)
    return RunConfig(
        data_path=f.data_path, output_dir=f.output_dir,
        reset_output_dir=f.reset_output_dir,
        train_on_valid=f.train_on_valid,
        batch_size=f.batch_size, bptt_steps=f.child_bptt_steps,
        num_epochs=f.num_epochs, log_every=f.log_every,
        eval_every_epochs=f.eval_every_epochs, seed=f.seed,
        download=f.download, reset_train_states=f.child_reset_train_states,
        child=child, train=train, lr_dec_start_epochs=f.child_lr_dec_start,
        lr_dec_every_epochs=f.child_lr_dec_every, controller=controller,
        reinforce=reinforce,
        controller_training=bool(f.controller_training and searching),
        controller_train_every=f.controller_train_every,
        controller_train_steps=f.controller_train_steps,
        controller_num_aggregate=f.controller_num_aggregate,
        **flag_defs.port_options(f))


def train(cfg):
    """Runs `_train(cfg)` under the run's dtype policy (mixed_float16 with
    --mixed_precision), restoring the previous policy afterwards."""
    from src import precision
    with precision.mixed_precision_scope(cfg.mixed_precision):
        return _train(cfg)


def _train(cfg):
    """The reference's `train()` loop: child steps with its log line, and
    every `--eval_every_epochs` epochs the controller's training and its 10
    sample architectures (when searching), the validation perplexity, the
    test perplexity when validation improves, and a checkpoint; the test
    perplexity again at the end."""
    import numpy as np
    import tensorflow as tf

    from src import entry_point, precision, run_log
    from src.checkpoints import open_run_checkpoint
    from src.interrupts import StopRequest
    from src.nan_guard import NanGuard
    from src.ptb import data as ptb_data
    from src.ptb.ptb_child import PtbChild
    from src.ptb.ptb_trainer import PtbTrainer

    strategy = entry_point.prepare_run(cfg)
    if cfg.train_on_valid:
        print("note: --train_on_valid: training on the valid text, "
              "validating and testing on the test text")
        data = ptb_data.read_dev_data(cfg.data_path)
    else:
        data = ptb_data.read_data(cfg.data_path, download=cfg.download)
    ptb_data.print_sizes(data)
    train_stream = data.train
    ptb_data.check_stream(train_stream, cfg.batch_size, cfg.bptt_steps,
                          "train")
    ptb_data.check_stream(data.valid, cfg.batch_size, cfg.bptt_steps, "valid")
    ptb_data.check_stream(data.test, 1, 1, "test")
    valid_rows = ptb_data.batch_rows(data.valid, cfg.batch_size)
    num_train_batches = ptb_data.num_windows(train_stream, cfg.batch_size,
                                             cfg.bptt_steps)
    cfg.child.vocab_size = data.vocab_size
    cfg.child.validate()
    cfg.train.lr.lr_dec_start = cfg.lr_dec_start_epochs * num_train_batches
    cfg.train.lr.lr_dec_every = cfg.lr_dec_every_epochs * num_train_batches

    print("-" * 80)
    print("Build model ptb_enas_model")
    with strategy.scope() if strategy else contextlib.nullcontext():
        child = PtbChild(cfg.child)
        search = None
        trainer_arc_fn = None
        if cfg.searching:
            # The search needs the trainer's reward pass and the trainer the
            # controller's samples: build the trainer with a late-bound arc_fn.
            def trainer_arc_fn():
                return search.sample_arc()
        trainer = PtbTrainer(child, cfg.train, arc_fn=trainer_arc_fn,
                             jit_compile=precision.resolve_jit_compile(
                                 cfg.jit_compile, cfg.searching, "ptb"),
                             mixed_precision=cfg.mixed_precision,
                             # The reward pass compiles once for every arc;
                             # --jit_compile=false turns XLA off there too.
                             reward_jit_compile=cfg.jit_compile != "false",
                             strategy=strategy)
        if cfg.searching:
            from src.ptb.search import PtbSearch
            with precision.float32_policy():  # controllers stay float32
                search = PtbSearch(cfg, trainer, valid_rows)
        print("-" * 80)
        print("Model has {} parameters".format(
            sum(int(np.prod(v.shape)) for v in trainer.variables)))

        best_valid_ppl = tf.Variable(BEST_VALID_PPL_START, dtype=tf.float64,
                                     trainable=False, name="best_valid_ppl")
        ckpt, restored = open_run_checkpoint(
            cfg.output_dir, child, trainer, search, cfg.reference_checkpoint,
            best_valid_ppl=best_valid_ppl)
    step = int(trainer.global_step.numpy())
    epoch = step // num_train_batches
    if restored:
        print("Resuming from {} (epoch {}, step {})".format(
            restored, epoch, step))
    summaries = run_log.Summaries(cfg.output_dir)
    windows = ptb_data.WindowStream(train_stream, cfg.batch_size,
                                    cfg.bptt_steps,
                                    position=step % num_train_batches)
    # The reference's random training-state resets (--child_reset_train_
    # states) draw from numpy; seeded by (seed, epoch) for resumption.
    reset_rng = np.random.default_rng([cfg.seed, epoch, 7])

    print("-" * 80)
    print("Starting session")
    start_time = time.time()

    stop_on_nan = NanGuard(cfg.nan_policy, lambda: (step, epoch),
                           lambda: ckpt.latest, on_stop=summaries.flush)

    def evaluate(name, verbose):
        if name == "valid":
            result = trainer.evaluate(data.valid, cfg.batch_size,
                                      cfg.bptt_steps)
        elif search:
            # One arc per as many words as a validation window holds (the
            # reference samples one per word here).
            result = trainer.evaluate(
                data.test, 1, 1, arc_window=cfg.batch_size * cfg.bptt_steps)
        else:
            result = trainer.evaluate(data.test, 1, 1)
        print_evaluation(name, step, result, verbose)
        summaries.scalars(step, {"{}_ppl".format(name): result["ppl"]})
        return result["ppl"]

    num_batches = 0
    total_tr_ppl = 0.0
    eval_every = num_train_batches * cfg.eval_every_epochs
    with StopRequest() as stop:
        while epoch < cfg.num_epochs:
            x, y = windows.next()
            out = {k: v.numpy() for k, v in trainer.train_step(x, y).items()}
            step += 1
            num_batches += 1
            total_tr_ppl += out["loss"] / cfg.bptt_steps
            epoch = step // num_train_batches
            if stop_on_nan(precision.values_to_check(out), "child",
                           out.get("arc")):
                return 1
            if step % cfg.log_every == 0:
                print(train_line(epoch, step, out["loss"], out["lr"],
                                 out["grad_norm"],
                                 np.exp(total_tr_ppl / num_batches),
                                 (time.time() - start_time) / 60))
                summaries.scalars(step, {
                    "child/loss": out["loss"], "child/lr": out["lr"],
                    "child/grad_norm": out["grad_norm"],
                    "child/train_ppl": out["train_ppl"]})
            if (cfg.reset_train_states is not None
                    and reset_rng.uniform(0, 1) < cfg.reset_train_states):
                print("reset train states")
                trainer.reset_train_state()
            if stop.requested and step % num_train_batches != 0:
                print(stop.message(ckpt.save(epoch, step)))
                summaries.flush()
                return stop.exit_status()
            if step % num_train_batches != 0:
                continue
            if step % eval_every == 0:
                trainer.reset_train_state()
                if (search and cfg.controller_training
                        and epoch % cfg.controller_train_every == 0):
                    if not search.train_controller(
                            epoch, start_time, stop_on_nan, summaries):
                        return 1
                    search.print_architectures(epoch)
                print("Epoch {}: Eval".format(epoch))
                valid_ppl = evaluate("valid", verbose=False)
                if valid_ppl < float(best_valid_ppl.numpy()):
                    best_valid_ppl.assign(valid_ppl)
                    evaluate("test", verbose=True)
                total_tr_ppl = 0.0
                num_batches = 0
                print("-" * 80)
            reset_rng = np.random.default_rng([cfg.seed, epoch, 7])
            path = ckpt.save(epoch, step)
            summaries.flush()
            if stop.requested:
                print(stop.message(path))
                return stop.exit_status()
    evaluate("test", verbose=True)
    summaries.flush()
    return 0


def main(argv):
    from src import entry_point
    return train(entry_point.start_run(argv, FLAGS, ptb_flags.USER_FLAGS,
                                       config_from_flags))


def run(argv=None):
    """Runs `main` under absl; user errors become one line and exit 2."""
    from src import entry_point
    entry_point.run(main, argv)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run()
