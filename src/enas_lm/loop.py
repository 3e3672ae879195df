"""The runs of the enas_lm entry points.

`run_fixed` (enas_lm's `fixed.train`): train window after window; at the
end of each pass over the data (the stream's `should_reset`) evaluate on
valid (on the averaged weights once averaging started), then the averaging
trigger and a checkpoint; after `num_train_batches * num_train_epochs`
steps the test evaluation. `run_search` (enas_lm's `search.train`): child
steps on sampled cells; at the end of each pass the controller's training,
the validation on sampled cells, a checkpoint.

enas_lm's epochs end when its random-length windows reach the end of the
data, so their number of steps varies; the shared `src.run_loop` counts
fixed epochs, hence these loops of their own (the same pieces: run folder,
checkpoint and resume, NaN policy, SIGINT/SIGTERM).
"""

import time

import numpy as np

from src import entry_point
from src.checkpoints import RunCheckpoint
from src.enas_lm.checkpoint import import_enas_lm_checkpoint
from src.interrupts import StopRequest
from src.nan_guard import NanGuard


def train_line(epoch, step, ppl, lr, grad_norm, averaging, minutes):
    """enas_lm's fixed-model log line."""
    return ("epoch={0:<5d}".format(epoch)
            + " step={0:<7d}".format(step)
            + " ppl={0:<10.2f}".format(ppl)
            + " lr={0:<6.3f}".format(lr)
            + " |g|={0:<6.3f}".format(grad_norm)
            + " avg={0:<2d}".format(averaging)
            + " mins={0:<.2f}".format(minutes))


def run_fixed(cfg, space, data=None):
    """Runs a fixed-model config; returns the exit status."""
    entry_point.prepare_run(cfg)
    session = space.open_session(cfg, data=data)
    models, objects = session.build()
    trainer = session.trainer
    ckpt = RunCheckpoint(cfg.output_dir, models=models, **objects)
    restored = ckpt.restore_latest()
    if restored is None and cfg.reference_checkpoint:
        info = import_enas_lm_checkpoint(cfg.reference_checkpoint,
                                         session.child, trainer)
        if info["start_idx"] is not None:
            session.start_idx.assign(info["start_idx"])
        print("Initialised from the reference checkpoint {} ({} variables)"
              .format(cfg.reference_checkpoint, info["loaded"]))
    step = int(trainer.global_step.numpy())
    ntb = session.num_train_batches
    if restored:
        print("Resuming from {} (step {})".format(restored, step))
    if step >= session.num_train_steps:
        print("The run has done its {} steps".format(session.num_train_steps))
        return 0
    start_time = time.time()
    accum_loss, accum_step = 0.0, 0
    epoch = int(ckpt.epoch.numpy())
    guard = NanGuard(cfg.nan_policy, lambda: (step, step // ntb),
                     lambda: ckpt.latest)
    with StopRequest() as stop:
        while True:
            x, y, should_reset = session.next_batch()
            out = session.train_step(x, y)
            step = int(trainer.global_step.numpy())
            if guard({"loss": out["loss"], "grad_norm": out["grad_norm"]},
                     "child"):
                return 1
            accum_loss += float(out["loss"])
            accum_step += 1
            if step % cfg.log_every == 0:
                print(train_line(step // ntb, step,
                                 np.exp(accum_loss / accum_step),
                                 float(out["lr"]), float(out["grad_norm"]),
                                 int(out["moving_avg_started"]),
                                 (time.time() - start_time) / 60.0))
            averaging = bool(out["moving_avg_started"])
            if averaging:
                trainer.update_average()
            if should_reset:
                trainer.reset_batch_state()
                accum_loss, accum_step = 0.0, 0
                valid_ppl = session.evaluate_valid(averaging)
                session.averaging_trigger(valid_ppl)
                epoch += 1
                path = ckpt.save(epoch, step)
                if stop.requested and step < session.num_train_steps:
                    print(stop.message(path))
                    return stop.exit_status()
            if step >= session.num_train_steps:
                session.evaluate_test(averaging)
                ckpt.save(epoch, step)
                return 0
            if stop.requested:
                print(stop.message(ckpt.save(epoch, step)))
                return stop.exit_status()


def search_line(epoch, step, ppl, lr, l2_reg, grad_norm, minutes):
    """enas_lm's search log line (|w| the decay term before its weight)."""
    return ("epoch={0:<5d}".format(epoch)
            + " step={0:<7d}".format(step)
            + " ppl={0:<9.2f}".format(ppl)
            + " lr={0:<7.2f}".format(lr)
            + " |w|={0:<6.2f}".format(l2_reg)
            + " |g|={0:<6.2f}".format(grad_norm)
            + " mins={0:<.2f}".format(minutes))


def run_search(cfg, space, data=None):
    """Runs a search config (enas_lm's `search.train`): child steps on
    sampled arcs; at the end of each epoch of the data the controller's
    training, the validation on sampled arcs, and a checkpoint. Returns the
    exit status."""
    entry_point.prepare_run(cfg)
    session = space.open_session(cfg, data=data)
    models, objects = session.build()
    trainer = session.trainer
    ckpt = RunCheckpoint(cfg.output_dir, models=models, **objects)
    restored = ckpt.restore_latest()
    if restored is None and cfg.reference_checkpoint:
        info = import_enas_lm_checkpoint(
            cfg.reference_checkpoint, session.child, trainer,
            controller=session.controller, reinforce=session.reinforce)
        if info["global_step"] is not None:
            trainer.optimizer.iterations.assign(info["global_step"])
        if info["start_idx"] is not None:
            session.start_idx.assign(info["start_idx"])
        print("Initialised from the reference checkpoint {} ({} variables)"
              .format(cfg.reference_checkpoint, info["loaded"]))
    step = int(trainer.global_step.numpy())
    if restored:
        print("Resuming from {} (step {})".format(restored, step))
    if step >= session.num_train_steps:
        print("The run has done its {} steps".format(session.num_train_steps))
        return 0
    start_time = time.time()
    accum_loss, accum_step = 0.0, 0
    guard = NanGuard(cfg.nan_policy,
                     lambda: (step, int(session.epoch.numpy())),
                     lambda: ckpt.latest)
    with StopRequest() as stop:
        while True:
            x, y, should_reset = session.next_batch()
            out = session.train_step(x, y)
            step = int(trainer.global_step.numpy())
            if guard({"loss": out["loss"], "grad_norm": out["grad_norm"]},
                     "child", out["arc"]):
                return 1
            accum_loss += float(out["loss"])
            accum_step += 1
            if step % cfg.log_every == 0:
                print(search_line(int(session.epoch.numpy()), step,
                                  np.exp(accum_loss / accum_step),
                                  float(out["lr"]), float(out["l2_reg_loss"]),
                                  float(out["grad_norm"]),
                                  (time.time() - start_time) / 60.0))
            if should_reset:
                last = session.train_controller()
                if guard({"reward": last["reward"], "loss": last["loss"]},
                         "controller", last["arc"]):
                    return 1
                session.epoch.assign_add(1)
                accum_loss, accum_step = 0.0, 0
                session.evaluate_valid()
                trainer.reset_batch_state()
                path = ckpt.save(int(session.epoch.numpy()), step)
                if stop.requested and step < session.num_train_steps:
                    print(stop.message(path))
                    return stop.exit_status()
            if step >= session.num_train_steps:
                ckpt.save(int(session.epoch.numpy()), step)
                return 0
            if stop.requested:
                print(stop.message(ckpt.save(int(session.epoch.numpy()),
                                             step)))
                return stop.exit_status()
