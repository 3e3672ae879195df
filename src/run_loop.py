"""The run loop every search space shares: the reference's `train()`.

    data -> child, trainer, controller -> checkpoint -> per epoch:
        child steps (log line every --log_every steps)
        every --eval_every_epochs epochs: the controller phase and its
            10 architectures (searching, every --controller_train_every
            epochs), then the evaluation
        checkpoint

What differs between spaces (the data, the step, the log line, the
evaluation printout) comes from the space's `Session` (src.space).
"""

import contextlib
import functools
import sys
import time

import numpy as np

from src import distribute, entry_point, precision, registry, run_log
from src.checkpoints import open_run_checkpoint
from src.errors import UserError
from src.interrupts import StopRequest
from src.nan_guard import NanGuard


def call(entry, argv=None, doc=""):
    """Runs entry point `entry` (`python -m <its module>`) in this process
    on argv; returns its exit status."""
    return entry_point.call(entry, functools.partial(main, entry), argv,
                            doc=doc)


def run(entry, doc=""):
    """`python -m`'s form of `call`: exits with the status."""
    sys.exit(call(entry, doc=doc))


def main(entry, flag_values, argv):
    """An entry point's main: the config from the flags, the run folder
    started, then `train`."""
    space = space_of(entry, flag_values)
    return train(entry_point.start_run(argv, flag_values,
                                       space.config_from_flags), space)


def space_of(entry, flag_values):
    """The SearchSpace that entry point `entry` runs for its flags."""
    names = registry.entry(entry).spaces
    if len(names) == 1:
        return registry.space(names[0])
    value = flag_values.search_for
    choices = " or ".join("--search_for=" + registry.info(n).search_for
                          for n in names)
    if value is None:
        raise UserError("--search_for is required: pass {}".format(choices))
    name = registry.space_for(entry, value)
    if name is None:
        raise UserError("--search_for={!r} is unknown: use {}".format(
            value, " or ".join(registry.info(n).search_for for n in names)))
    return registry.space(name)


def train(cfg, space=None):
    """Runs the loop for `cfg` under its dtype policy (mixed_float16 with
    --mixed_precision), restoring the previous policy afterwards. Returns
    the exit status. In a multi-worker run a lost worker is a RunStopped
    naming it (one line, status 1), not a collective op's traceback."""
    space = space or registry.space(cfg.space)
    with precision.mixed_precision_scope(cfg.mixed_precision):
        try:
            return _train(space, cfg)
        except distribute.LOST_WORKER_ERRORS as e:
            if cfg.distribution_strategy != "multi_worker_mirrored":
                raise
            raise distribute.lost_worker(e, cfg.output_dir) from None


def _train(space, cfg):
    strategy = entry_point.prepare_run(cfg)
    session = space.open_session(cfg)

    session.announce_build(space.model_name)
    with strategy.scope() if strategy else contextlib.nullcontext():
        child, trainer, phase, extra = session.build(strategy)
        ckpt, restored = open_run_checkpoint(cfg.output_dir, child, trainer,
                                             phase, **extra)
        if restored is None and cfg.reference_checkpoint:
            session.start_from_reference(cfg.reference_checkpoint, trainer,
                                         phase)
    step = int(trainer.global_step.numpy())
    epoch = session.start_epoch(step, int(ckpt.epoch.numpy()))
    if restored:
        print("Resuming from {} (epoch {}, step {})".format(
            restored, epoch, step))
    session.resumed_at(epoch, step)
    summaries = run_log.Summaries(cfg.output_dir)

    session.announce_start()
    start_time = time.time()
    stop_on_nan = NanGuard(cfg.nan_policy, lambda: (step, epoch),
                           lambda: ckpt.latest, on_stop=summaries.flush)
    saved_at = step if restored else None

    with StopRequest() as stop:
        while not session.finished(epoch, step):
            for batch in session.epoch_batches(epoch, step):
                out = session.train_step(batch)
                step += 1
                if stop_on_nan(precision.values_to_check(out), "child",
                               out.get("arc")):
                    return 1
                session.observe(out)
                if step % cfg.log_every == 0:
                    # The reference's epoch of a log line: the last step
                    # of an epoch prints the next.
                    line, scalars = session.train_log(
                        out, step // session.num_train_batches, step,
                        (time.time() - start_time) / 60)
                    print(line)
                    summaries.scalars(step, scalars)
                session.after_step()
                if stop.requested and not session.at_epoch_end(step):
                    # Mid-epoch: save where it stands and stop.
                    print(stop.message(ckpt.save(epoch, step)))
                    summaries.flush()
                    return stop.exit_status()
            following = session.epoch_after(epoch, step)
            if following == epoch:
                break  # the run's steps ran out before the epoch's end
            epoch = following
            if epoch % cfg.eval_every_epochs == 0:
                session.before_eval()
                if (phase and cfg.controller_training
                        and epoch % cfg.controller_train_every == 0):
                    if not phase.train_controller(epoch, start_time,
                                                  summaries, stop_on_nan):
                        return 1
                    phase.print_architectures(epoch)
                session.announce_eval(epoch)
                session.evaluate(step, summaries)
            session.end_epoch(epoch)
            path = ckpt.save(epoch, step)
            saved_at = step
            summaries.flush()
            if stop.requested:
                print(stop.message(path))
                return stop.exit_status()
    session.finish(step, summaries)
    if saved_at != step:
        ckpt.save(epoch, step)
    summaries.flush()
    return 0


def parameter_count(variables):
    """The number of weights in `variables` (the "Model has N" line)."""
    return sum(int(np.prod(v.shape)) for v in variables)
