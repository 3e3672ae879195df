"""Per-epoch checkpoints of a run in `--output_dir` (tf.train.Checkpoint).

Like the reference, the two newest checkpoints are kept and a run started
again with the same `--output_dir` resumes from the newest one.
"""

import os

import tensorflow as tf

from src.errors import UserError


class RunCheckpoint:
    """Saves and restores the trackable objects of a run.

    objects: name -> trackable (the child, its optimiser, ...). An int64
    `epoch` counter (epochs completed) is added; the data order is a function
    of (seed, epoch), so resuming at an epoch boundary replays the same data.
    """

    def __init__(self, output_dir, max_to_keep=2, **objects):
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False,
                                 name="epoch")
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
