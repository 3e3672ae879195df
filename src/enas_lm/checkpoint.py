"""Reading enas_lm's TF1 checkpoints (`tf.train.Saver` of every global
variable) into the port's models.

Names in an enas_lm checkpoint and what they become here:
- `language_model/...` (fixed model) or `child/...` (search child): the
  child's variables of the same paths; every weight must be there, the
  carried states (`.../init_states/...`) keep their values when absent.
- `controller/...`: the controller's weights, when a controller is given
  (every one must be there); otherwise ignored.
- `global_step`: the child optimiser's step counter.
- `moving_avg_flag/flag`, `avg_step/step`, `average/<i>`: the fixed
  trainer's averaging state (`average/<i>` in the order of the trainable
  weights); kept as they are when absent.
- `Variable` (the controller's baseline), `train_step` (its updates),
  `sync_rep_local_step` (its SyncReplicas local step): the REINFORCE
  trainer's, when given.
- `start_idx`: the position of the training data stream (returned).
- ignored: `backup/<i>` (enas_lm's scratch copies for the weight swap),
  Adam's slots `.../Adam`, `.../Adam_1`, `beta1_power`, `beta2_power`.
Anything else is reported as unexpected.
"""

import re

import tensorflow as tf

from src.errors import UserError
from src.reference_checkpoint import resolve_checkpoint

START_IDX = "start_idx"
_ALWAYS_IGNORED = re.compile(
    r"^(backup/\d+|beta1_power|beta2_power|.*/Adam|.*/Adam_1)$")
_AVERAGING = re.compile(r"^(moving_avg_flag/flag|avg_step/step|average/\d+)$")
_CONTROLLER = ("Variable", "train_step", "sync_rep_local_step")


def _reader(path):
    try:
        return tf.train.load_checkpoint(path)
    except (tf.errors.OpError, ValueError) as e:
        raise UserError("cannot read the checkpoint {}: {}".format(
            path, " ".join(str(e).split())[:200])) from None


def _paths(model):
    return {v.path: v for v in model.weights
            if not v.path.endswith("seed_generator_state")}


def _listed(kind, names):
    more = len(names) - 10
    return "{} {}: {}{}".format(len(names), kind, ", ".join(names[:10]),
                                " and {} more".format(more) if more > 0
                                else "")


def import_enas_lm_checkpoint(path, child=None, trainer=None,
                              controller=None, reinforce=None):
    """Assigns `child` (None: a controller-only import), and when given the
    fixed `trainer`'s step and averaging state, the `controller`'s weights
    and the `reinforce` trainer's baseline and counters, their values in an
    enas_lm checkpoint. Nothing is
    assigned unless every child (and controller) variable is there with its
    shape. Returns {"loaded": the number of variables assigned,
    "global_step": int or None, "start_idx": int or None, "train_step": the
    controller's updates, int or None}."""
    path = resolve_checkpoint(path)
    reader = _reader(path)
    shapes = reader.get_variable_to_shape_map()
    required = _paths(child) if child is not None else {}
    optional = {n: v for n, v in required.items() if not v.trainable}
    required = {n: v for n, v in required.items() if v.trainable}
    if controller is not None:
        required.update(_paths(controller))
    averages = getattr(trainer, "averages", None)
    if averages is not None:
        optional["moving_avg_flag/flag"] = trainer.moving_avg_started
        optional["avg_step/step"] = trainer.avg_step
        for i, avg in enumerate(averages):
            optional["average/{}".format(i)] = avg
    if reinforce is not None:
        optional["Variable"] = reinforce.baseline
        optional["train_step"] = reinforce.optimizer.iterations
        if hasattr(reinforce, "local_step"):
            optional["sync_rep_local_step"] = reinforce.local_step

    problems = []
    missing = sorted(n for n in required if n not in shapes)
    if missing:
        problems.append(_listed("missing", missing))
    mismatched = ["{} (here {}, checkpoint {})".format(
        n, list(v.shape), list(shapes[n]))
        for n, v in list(required.items()) + list(optional.items())
        if n in shapes and list(shapes[n]) != list(v.shape)]
    if mismatched:
        problems.append(_listed("with another shape", mismatched))

    def ignored(name):
        return (_ALWAYS_IGNORED.match(name)
                or (averages is None and _AVERAGING.match(name))
                or (controller is None and name.startswith("controller/"))
                or (child is None and name.startswith(("child/",
                                                       "language_model/")))
                or (reinforce is None and name in _CONTROLLER))

    known = set(required) | set(optional) | {"global_step", START_IDX}
    unexpected = sorted(n for n in shapes
                        if n not in known and not ignored(n))
    if unexpected:
        problems.append(_listed("unexpected", unexpected))
    if problems:
        raise UserError("the enas_lm checkpoint {} does not fit this model: "
                        "{}".format(path, "; ".join(problems)))
    loaded = 0
    for name, v in list(required.items()) + list(optional.items()):
        if name in shapes:
            v.assign(tf.cast(reader.get_tensor(name), v.dtype))
            loaded += 1
    info = {"loaded": loaded, "global_step": None, "start_idx": None,
            "train_step": None}
    if "train_step" in shapes:  # the controller's updates
        info["train_step"] = int(reader.get_tensor("train_step"))
    if "global_step" in shapes:
        info["global_step"] = int(reader.get_tensor("global_step"))
        if trainer is not None:
            trainer.optimizer.iterations.assign(info["global_step"])
    if START_IDX in shapes:
        info["start_idx"] = int(reader.get_tensor(START_IDX))
    return info
