"""Per-epoch checkpoints of a run in `--output_dir` (tf.train.Checkpoint).

Like the reference, the two newest checkpoints are kept and a run started
again with the same `--output_dir` resumes from the newest one.
"""

import os

import tensorflow as tf

from src import distribute
from src.errors import UserError


def variables_by_path(layer):
    """Every variable of a Keras layer (weights, batch-norm statistics, seed
    generator states) keyed by its path, e.g. `child/layer_3/skip/w`.

    Checkpointing this dict instead of the layer itself keeps every variable
    (Keras 3 layers held in Python lists are invisible to tf.train.Checkpoint's
    object graph) and names each one by the reference's scope.
    """
    out = {}
    seeds = 0
    for v in layer.variables:
        if v.path.endswith("seed_generator_state"):
            # Keras numbers seed generators process-wide (seed_generator_1,
            # ...); key them by their order in the layer instead.
            key = "{}/seed_generator_{}".format(layer.name, seeds)
            seeds += 1
        else:
            key = v.path
        if key in out:
            raise ValueError("two variables share the path " + key)
        out[key] = v
    return out


class RunCheckpoint:
    """Saves and restores the state of a run.

    models: name -> Keras layer, saved through `variables_by_path`;
    objects: name -> other trackables (optimisers, counters). An int64
    `epoch` counter (epochs completed) is added; the data order is a function
    of (seed, epoch), so resuming at an epoch boundary replays the same data.
    """

    def __init__(self, output_dir, models=None, max_to_keep=2, **objects):
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False,
                                 name="epoch")
        for name, layer in (models or {}).items():
            objects[name] = variables_by_path(layer)
        self.checkpoint = tf.train.Checkpoint(epoch=self.epoch, **objects)
        self.output_dir = output_dir
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, output_dir, max_to_keep=max_to_keep,
            checkpoint_name="model.ckpt")

    @property
    def latest(self):
        return self.manager.latest_checkpoint

    def restore_latest(self):
        """Restores the newest readable checkpoint if there is one; returns
        its path or None.

        TensorFlow writes a checkpoint's files first and only then names it
        in the `checkpoint` index (atomically), so a torn write is never
        "the latest"; a newest checkpoint whose files were damaged later is
        skipped, with a note, for the one before it. A checkpoint of another
        configuration (names or shapes differ) is a UserError.
        """
        paths = list(reversed(self.manager.checkpoints))
        shared = distribute.shared_output_dir(self.output_dir)
        if shared != self.output_dir:
            # A non-chief worker: the chief's checkpoints, in the run's
            # folder (this worker's own folder is write-only).
            state = tf.train.get_checkpoint_state(shared)
            paths = list(reversed(state.all_model_checkpoint_paths)
                         if state else [])
        for i, path in enumerate(paths):
            status = None
            try:
                status = self.checkpoint.restore(path)
                status.assert_existing_objects_matched()
                return path
            except (tf.errors.DataLossError, tf.errors.NotFoundError,
                    tf.errors.OutOfRangeError, IndexError) as e:
                # Damaged or missing files (the reader reports a truncated
                # data file as an IndexError).
                if i + 1 == len(paths):
                    raise UserError(
                        "no readable checkpoint in {}: {} is damaged ({}); "
                        "pass --reset_output_dir to start afresh".format(
                            os.path.dirname(path), path,
                            _first_line(e))) from None
                print("note: the checkpoint {} is unreadable ({}); resuming "
                      "from {} instead".format(path, _first_line(e),
                                               paths[i + 1]))
            except (ValueError, AssertionError, tf.errors.OpError) as e:
                if status is not None:
                    status.expect_partial()  # no warnings at exit
                raise UserError(
                    "the checkpoint {} does not match this configuration "
                    "({}): pass --reset_output_dir to start afresh, or "
                    "another --output_dir".format(path, _first_line(e))
                ) from None
        return None

    def save(self, epoch, step):
        """Writes a checkpoint for `epoch` epochs completed at `step`."""
        self.epoch.assign(epoch)
        return self.manager.save(checkpoint_number=step)


def _first_line(error):
    return str(error).strip().splitlines()[0][:300]


def has_checkpoint(output_dir):
    return (os.path.isdir(output_dir)
            and tf.train.latest_checkpoint(output_dir) is not None)


def open_run_checkpoint(output_dir, child, trainer, search=None, **extra):
    """The checkpoint of an entry point's run: the child, the trainer's
    objects, the controller's when searching (`search`), and `extra`
    trackables. Restores the newest save in `output_dir`. Returns
    (RunCheckpoint, the restored path or None)."""
    models = {"child": child}
    objects = dict(trainer.checkpoint_objects(), **extra)
    if search:
        models["controller"] = search.controller
        objects.update(search.checkpoint_objects())
    ckpt = RunCheckpoint(output_dir, models=models, **objects)
    restored = ckpt.restore_latest()
    return ckpt, restored
