"""Reading enas_lm's TF1 checkpoints (`tf.train.Saver` of every global
variable) into the port's models.

Names in an enas_lm fixed-model checkpoint and what they become here:
- `language_model/...` (the child's weights and carried states): the
  child's variables of the same paths; every one must be there.
- `global_step`: the optimiser's step counter.
- `moving_avg_flag/flag`, `avg_step/step`, `average/<i>`: the trainer's
  averaging state (`average/<i>` in the order of the trainable weights);
  when absent they keep their values.
- `start_idx`: the position of the training data stream (returned).
- `backup/<i>`: enas_lm's scratch copies for the weight swap: ignored.
Anything else is reported as unexpected.
"""

import re

import tensorflow as tf

from src.errors import UserError
from src.reference_checkpoint import resolve_checkpoint

CHILD_SCOPE = "language_model"
START_IDX = "start_idx"
_IGNORED = re.compile(r"^backup/\d+$")


def _reader(path):
    try:
        return tf.train.load_checkpoint(path)
    except (tf.errors.OpError, ValueError) as e:
        raise UserError("cannot read the checkpoint {}: {}".format(
            path, " ".join(str(e).split())[:200])) from None


def import_enas_lm_checkpoint(path, child, trainer=None):
    """Assigns `child` (and `trainer`'s step and averaging state, when
    given) their values in an enas_lm checkpoint. Nothing is assigned unless
    every child variable is there with its shape. Returns {"loaded": the
    number of variables assigned, "global_step": int or None, "start_idx":
    int or None}."""
    path = resolve_checkpoint(path)
    reader = _reader(path)
    shapes = reader.get_variable_to_shape_map()
    wanted = {v.path: v for v in child.weights
              if not v.path.endswith("seed_generator_state")}
    optional = {}
    if trainer is not None:
        optional["moving_avg_flag/flag"] = trainer.moving_avg_started
        optional["avg_step/step"] = trainer.avg_step
        for i, avg in enumerate(trainer.averages):
            optional["average/{}".format(i)] = avg
    missing = sorted(n for n in wanted if n not in shapes)
    problems = []
    if missing:
        problems.append("{} missing: {}".format(len(missing),
                                                 ", ".join(missing[:10])))
    mismatched = ["{} (here {}, checkpoint {})".format(
        n, list(v.shape), list(shapes[n]))
        for n, v in list(wanted.items()) + list(optional.items())
        if n in shapes and list(shapes[n]) != list(v.shape)]
    if mismatched:
        problems.append("{} with another shape: {}".format(
            len(mismatched), ", ".join(mismatched[:10])))
    known = set(wanted) | set(optional) | {"global_step", START_IDX}
    unexpected = sorted(
        n for n in shapes if n not in known and not _IGNORED.match(n)
        and not (trainer is None and n in ("moving_avg_flag/flag",
                                           "avg_step/step"))
        and not (trainer is None and n.startswith("average/")))
    if unexpected:
        problems.append("{} unexpected: {}".format(
            len(unexpected), ", ".join(unexpected[:10])))
    if problems:
        raise UserError("the enas_lm checkpoint {} does not fit this model: "
                        "{}".format(path, "; ".join(problems)))
    loaded = 0
    for name, v in list(wanted.items()) + list(optional.items()):
        if name in shapes:
            v.assign(tf.cast(reader.get_tensor(name), v.dtype))
            loaded += 1
    info = {"loaded": loaded, "global_step": None, "start_idx": None}
    if "global_step" in shapes:
        info["global_step"] = int(reader.get_tensor("global_step"))
        if trainer is not None:
            trainer.optimizer.iterations.assign(info["global_step"])
    if START_IDX in shapes:
        info["start_idx"] = int(reader.get_tensor(START_IDX))
    return info
