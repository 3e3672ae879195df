"""Per-epoch checkpoints of a run in `--output_dir` (tf.train.Checkpoint).

Like the reference, the two newest checkpoints are kept and a run started
again with the same `--output_dir` resumes from the newest one.
"""

import os

import tensorflow as tf

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
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, output_dir, max_to_keep=max_to_keep,
            checkpoint_name="model.ckpt")

    @property
    def latest(self):
        return self.manager.latest_checkpoint

    def restore_latest(self):
        """Restores the newest checkpoint if there is one; returns its path or
        None. A checkpoint of another configuration is a UserError."""
        path = self.manager.latest_checkpoint
        if path is None:
            return None
        try:
            status = self.checkpoint.restore(path)
            status.assert_existing_objects_matched()
        except (ValueError, AssertionError, tf.errors.OpError) as e:
            detail = str(e).strip().splitlines()[0][:300]
            raise UserError(
                "the checkpoint {} does not match this configuration ({}): "
                "pass --reset_output_dir to start afresh, or another "
                "--output_dir".format(path, detail)) from None
        return path

    def save(self, epoch, step):
        """Writes a checkpoint for `epoch` epochs completed at `step`."""
        self.epoch.assign(epoch)
        return self.manager.save(checkpoint_number=step)


def has_checkpoint(output_dir):
    return (os.path.isdir(output_dir)
            and tf.train.latest_checkpoint(output_dir) is not None)
