"""A run's record in `--output_dir`: the stdout copy, the resolved flags,
TensorBoard summaries, and the reference's log-line formats."""

import json
import os
import shutil
import sys

import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from src.errors import UserError


class Tee:
    """Copies everything written to a stream into a file (appended, so a
    resumed run keeps the earlier log), like the reference's `Logger`."""

    def __init__(self, stream, path):
        self.stream = stream
        self.file = open(path, "a", buffering=1)

    def write(self, message):
        self.stream.write(message)
        self.stream.flush()
        self.file.write(message)

    def flush(self):
        self.stream.flush()
        self.file.flush()

    def isatty(self):
        return False

    def close(self):
        self.file.close()


def prepare_output_dir(output_dir, reset):
    """Creates `output_dir` (or empties it when `reset`), printing what the
    reference prints. Raises UserError when it cannot be written."""
    if not output_dir:
        raise UserError("--output_dir is empty: give a folder for the "
                        "checkpoints and logs, e.g. --output_dir=outputs")
    print("-" * 80)
    try:
        if not os.path.isdir(output_dir):
            print("Path {} does not exist. Creating.".format(output_dir))
            os.makedirs(output_dir)
        elif reset:
            print("Path {} exists. Remove and remake.".format(output_dir))
            # Name the newest checkpoint thrown away, and its global step:
            # the optimiser's saved iteration count, or when that cannot be
            # read the number RunCheckpoint puts after `model.ckpt-`.
            newest = tf.train.latest_checkpoint(output_dir)
            if newest:
                step = newest.rsplit("-", 1)[-1]
                try:
                    step = int(tf.train.load_checkpoint(newest).get_tensor(
                        "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"))
                except (tf.errors.OpError, ValueError, KeyError, IndexError):
                    pass
            shutil.rmtree(output_dir)
            os.makedirs(output_dir)
            if newest:
                print("Removed the checkpoint {} (step {}) of the earlier "
                      "run.".format(os.path.basename(newest), step))
    except OSError as e:
        raise UserError("cannot create --output_dir={}: {}; choose a folder "
                        "you can write to".format(output_dir, e.strerror or e))
    if not os.access(output_dir, os.W_OK):
        raise UserError("--output_dir={} is not writable: choose a folder you "
                        "can write to".format(output_dir))


def start_stdout_copy(output_dir):
    """Sends a copy of stdout to `output_dir/stdout` from now on (until
    `end_stdout_copies`)."""
    log_file = os.path.join(output_dir, "stdout")
    print("-" * 80)
    print("Logging to {}".format(log_file))
    tee = Tee(sys.stdout, log_file)
    sys.stdout = tee
    return tee


def end_stdout_copies(stream):
    """Ends every stdout copy started over `stream`: sys.stdout is `stream`
    again and the copies' files are closed. A run in a Python caller's
    process (`entry_point.call`) thus leaves stdout as it found it, and a
    second run there does not write into the first one's folder."""
    while sys.stdout is not stream and isinstance(sys.stdout, Tee):
        tee = sys.stdout
        sys.stdout = tee.stream
        tee.close()


def dotted_flag_line(name, value, line_limit=80):
    """`name.......value`, 80 characters wide, as the reference prints flags."""
    value = "{}".format(value)
    return name + "." * (line_limit - len(name) - len(value)) + value


def print_flags(flag_values, names):
    """Prints every flag in `names`, sorted, in the reference's format."""
    print("-" * 80)
    for name in sorted(names):
        print(dotted_flag_line(name, getattr(flag_values, name)))


def flagfile_text(flag_values, names):
    """The flags in `names` as an absl flagfile (None values left out), so a
    run can be repeated with `--flagfile=<output_dir>/flags.txt`."""
    lines = []
    for name in sorted(names):
        value = getattr(flag_values, name)
        if value is None:
            continue
        if isinstance(value, bool):
            lines.append("--{}{}".format("" if value else "no", name))
        else:
            lines.append("--{}={}".format(name, value))
    return "\n".join(lines) + "\n"


def write_flagfile(output_dir, flag_values, names, filename="flags.txt"):
    path = os.path.join(output_dir, filename)
    with open(path, "w") as f:
        f.write(flagfile_text(flag_values, names))
    return path


def train_line(epoch, step, loss, lr, grad_norm, train_acc, batch_size,
               minutes):
    """The reference's child training log line."""
    return ("epoch={:<6d}".format(epoch)
            + "ch_step={:<6d}".format(step)
            + " loss={:<8.6f}".format(loss)
            + " lr={:<8.4f}".format(lr)
            + " |g|={:<8.4f}".format(grad_norm)
            + " tr_acc={:<3d}/{:>3d}".format(train_acc, batch_size)
            + " mins={:<10.2f}".format(minutes))


def controller_line(step, loss, entropy, lr, grad_norm, valid_acc, baseline,
                    minutes):
    """The reference's controller training log line."""
    return ("ctrl_step={:<6d}".format(step)
            + " loss={:<7.3f}".format(loss)
            + " ent={:<5.2f}".format(entropy)
            + " lr={:<6.4f}".format(lr)
            + " |g|={:<8.4f}".format(grad_norm)
            + " acc={:<6.4f}".format(valid_acc)
            + " bl={:<5.2f}".format(baseline)
            + " mins={:<.2f}".format(minutes))


def accuracy_line(split, accuracy):
    """`valid_accuracy: 0.1234` / `test_accuracy: ...`."""
    return "{}_accuracy: {:<6.4f}".format(split, accuracy)


class Summaries:
    """TensorBoard scalars under `output_dir` (new event files on resume,
    never truncating the old ones).

    Written with the core `tf.summary.write` and the "scalars" plugin
    metadata, which is what `tf.summary.scalar` writes, so the `tensorboard`
    package is not a dependency of training.
    """

    def __init__(self, output_dir):
        self.writer = tf.summary.create_file_writer(output_dir)
        metadata = summary_pb2.SummaryMetadata()
        metadata.plugin_data.plugin_name = "scalars"
        self._metadata = metadata.SerializeToString()

    def scalars(self, step, values):
        with self.writer.as_default():
            for name, value in values.items():
                tf.summary.write(name, tf.constant(float(value), tf.float32),
                                 step=int(step), metadata=self._metadata)

    def flush(self):
        self.writer.flush()


def best_recorded_arc(arcs_path):
    """(reward, arc string) of the best record in an `arcs.jsonl`, or None
    when there is none (unreadable lines are skipped)."""
    best = None
    if os.path.exists(arcs_path):
        with open(arcs_path) as f:
            for line in f:
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                if best is None or r["reward"] > best[0]:
                    best = (r["reward"], r["arc"])
    return best
