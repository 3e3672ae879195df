"""The reference's TF1 checkpoints: reading them into our models, and
writing our weights under the reference's names.

Our variable paths are the reference's variable names (`child/layer_0/
conv_1x1/w`, `controller/lstm/layer_0/w`, `ptb_enas_model/rnn/layer_0/
w_prev`) except for the batch norm's zero-debiasing state, which TF1 keeps
under a doubled scope (`<scope>/bn/<scope>/bn/moving_mean/biased`) and Keras
cannot name with slashes (`<scope>/bn/moving_mean_biased`). No layout
differs: every variable has the reference's shape and element order (the
golden tests load the recorded checkpoints as they are and reproduce the
reference's outputs).

What else a reference checkpoint holds (`tf.train.Saver` of every global
variable):
- optimiser slots (`.../Momentum`, `.../Adam`, `.../Adam_1`,
  `beta1_power`, `beta2_power`) and the shadows of TF1's moving-average
  optimiser (`.../ExponentialMovingAverage`): ignored. (With
  `--child_optim_moving_average` the reference's saver writes the averages
  under the weights' own names, so importing gives the averaged weights.)
- the cosine schedule's state `T_i`, `last_reset`: ignored (the port
  computes the schedule from the step);
- step counters: `global_step` (the child's updates), `train_step` (the
  controller's);
- the controller's moving baseline, a scalar float named `Variable`.
"""

import os
import re

import numpy as np
import tensorflow as tf

from src.errors import UserError

_DEBIAS = re.compile(
    r"^(?P<scope>.*/(?:bn|batch_norm))/(?P<stat>moving_mean|moving_variance)_"
    r"(?P<part>biased|local_step)$")

# Top-level scopes of the reference's models.
CHILD_SCOPES = ("child", "ptb_enas_model")
CONTROLLER_SCOPE = "controller"

# Names (or name endings) of state the import leaves aside.
_SLOT_SUFFIXES = ("/Momentum", "/Adam", "/Adam_1", "/ExponentialMovingAverage")
_IGNORED_NAMES = ("beta1_power", "beta2_power", "T_i", "last_reset")
GLOBAL_STEP = "global_step"
CONTROLLER_STEP = "train_step"
BASELINE = "Variable"

# How many names an error message lists per kind of problem.
_LIST_AT_MOST = 10


def reference_name(path):
    """The reference's checkpoint name of the variable at `path`."""
    m = _DEBIAS.match(path)
    if m:
        return "{0}/{0}/{1}/{2}".format(m["scope"], m["stat"], m["part"])
    return path


def load_reference_weights(variables, checkpoint_path):
    """Assigns each variable its value in a reference TF1 checkpoint.

    Every variable must be present with the same shape; a UserError lists
    the ones missing or mismatched. Other names in the checkpoint are not
    looked at (`import_reference_checkpoint` checks both directions).
    """
    reader = _reader(checkpoint_path)
    shapes = reader.get_variable_to_shape_map()
    problems = []
    for v in variables:
        name = reference_name(v.path)
        if name not in shapes:
            problems.append("missing {}".format(name))
        elif tuple(shapes[name]) != tuple(v.shape):
            problems.append("{} has shape {} here, {} in the checkpoint"
                            .format(name, tuple(v.shape), tuple(shapes[name])))
    if problems:
        raise UserError("the reference checkpoint {} does not fit this model: "
                        "{}".format(checkpoint_path, "; ".join(problems[:10])))
    for v in variables:
        v.assign(reader.get_tensor(reference_name(v.path)))


# -- reading -----------------------------------------------------------------

def resolve_checkpoint(path):
    """The checkpoint prefix `path` names: a prefix itself (`.../model.ckpt-3`)
    or a folder, whose newest checkpoint is taken. UserError when there is
    none."""
    path = os.fspath(path)
    if os.path.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise UserError(
                "{} holds no checkpoint (no `checkpoint` file naming one): "
                "pass the checkpoint's prefix, e.g. {}/model.ckpt-100"
                .format(path, path.rstrip("/")))
        return latest
    if not os.path.exists(path + ".index"):
        raise UserError(
            "no checkpoint at {} ({}.index does not exist): pass a folder "
            "holding a checkpoint or a prefix such as .../model.ckpt-100"
            .format(path, path))
    return path


def _reader(path):
    path = resolve_checkpoint(path)
    try:
        return tf.train.load_checkpoint(path)
    except (tf.errors.OpError, ValueError) as e:
        detail = " ".join(str(e).split())[:200]
        raise UserError("cannot read the checkpoint {}: {}".format(
            path, detail)) from None


def _is_ignored(name):
    return name in _IGNORED_NAMES or name.endswith(_SLOT_SUFFIXES)


def _scope_of(name):
    top = name.split("/", 1)[0]
    if "/" in name and top in CHILD_SCOPES:
        return "child"
    if "/" in name and top == CONTROLLER_SCOPE:
        return "controller"
    return None


def _listed(kind, names):
    shown = ", ".join(names[:_LIST_AT_MOST])
    more = len(names) - _LIST_AT_MOST
    return "{} {}: {}{}".format(len(names), kind, shown,
                                " and {} more".format(more) if more > 0
                                else "")


def _model_variables(model):
    """A model's variables as the reference names them: weights, batch-norm
    statistics and their debias state, carried states (no seed-generator
    state: the reference has none)."""
    out = {}
    for v in model.weights:
        name = reference_name(v.path)
        if name in out:
            raise ValueError("two variables map to the reference name " + name)
        out[name] = v
    return out


def import_reference_checkpoint(path, child=None, controller=None,
                                baseline=None):
    """Initialises `child` and/or `controller` from a TF1 checkpoint written
    by the reference code, and `baseline` (a scalar tf.Variable, the
    controller's moving baseline) when the checkpoint holds one.

    path: a checkpoint prefix or a folder (its newest checkpoint).
    child, controller: built Keras layers (None: not imported; the
    checkpoint's variables of that model are then ignored). A checkpoint
    holding only the controller's variables is enough for the controller.

    Every variable of the checkpoint's model scopes (`child/`,
    `ptb_enas_model/`, `controller/`) must map to exactly one of ours with
    the same shape and dtype, and every one of ours must be there; otherwise
    a UserError (one line) lists the missing, unexpected and mismatched
    names. Nothing is assigned unless everything fits.

    Returns {"global_step": the child's step (int) or None when absent,
    "train_step": the controller's step or None, "baseline": the baseline's
    value or None, "loaded": the number of variables assigned, "ignored":
    the checkpoint names left aside (optimiser slots, schedule state, the
    scopes of models not imported)}.
    """
    path = resolve_checkpoint(path)
    reader = _reader(path)
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    wanted = {}
    for model, kind in ((child, "child"), (controller, "controller")):
        if model is None:
            continue
        for name, v in _model_variables(model).items():
            wanted[name] = (v, kind)

    unexpected, mismatched, ignored = [], [], []
    for name in sorted(shapes):
        if name in wanted:
            v, _ = wanted[name]
            if tuple(shapes[name]) != tuple(v.shape):
                mismatched.append("{} (here {}, checkpoint {})".format(
                    name, list(v.shape), list(shapes[name])))
            elif dtypes[name].base_dtype != tf.as_dtype(v.dtype):
                mismatched.append("{} (here {}, checkpoint {})".format(
                    name, tf.as_dtype(v.dtype).name, dtypes[name].name))
            continue
        scope = _scope_of(name)
        loading = ((scope == "child" and child is not None)
                   or (scope == "controller" and controller is not None))
        if _is_ignored(name):
            ignored.append(name)
        elif name in (GLOBAL_STEP, CONTROLLER_STEP):
            continue
        elif name == BASELINE and not shapes[name]:
            if baseline is None:
                ignored.append(name)
        elif scope is not None and not loading:
            ignored.append(name)
        else:
            unexpected.append(name)
    missing = sorted(name for name in wanted if name not in shapes)
    found = {kind for name, (_, kind) in wanted.items() if name in shapes}
    absent = sorted({kind for _, kind in wanted.values()} - found)

    if missing or unexpected or mismatched:
        parts = []
        if missing:
            note = ""
            if absent:
                note = " (it holds none of the {}'s variables)".format(
                    " or ".join(absent))
            parts.append(_listed("missing", missing) + note)
        if unexpected:
            parts.append(_listed("unexpected", unexpected))
        if mismatched:
            parts.append(_listed("with another shape or dtype", mismatched))
        raise UserError(
            "the reference checkpoint {} does not fit this model: {}".format(
                path, "; ".join(parts)))

    for name, (v, _) in wanted.items():
        v.assign(reader.get_tensor(name))
    info = {"global_step": None, "train_step": None, "baseline": None,
            "loaded": len(wanted), "ignored": ignored}
    for key, name in (("global_step", GLOBAL_STEP),
                      ("train_step", CONTROLLER_STEP)):
        if name in shapes and not shapes[name]:
            info[key] = int(reader.get_tensor(name))
    if baseline is not None and BASELINE in shapes and not shapes[BASELINE]:
        value = reader.get_tensor(BASELINE)
        baseline.assign(tf.cast(value, baseline.dtype))
        info["baseline"] = float(value)
        info["loaded"] += 1
    return info


# -- writing -----------------------------------------------------------------

def reference_checkpoint_tensors(child=None, controller=None, baseline=None,
                                 global_step=None, train_step=None):
    """{reference name: numpy value} of the given models and counters, as
    the reference's saver would write them (steps as int32, the baseline as
    a float32 scalar `Variable`)."""
    tensors = {}
    for model in (child, controller):
        if model is not None:
            for name, v in _model_variables(model).items():
                tensors[name] = v.numpy()
    if baseline is not None:
        tensors[BASELINE] = np.float32(tf.convert_to_tensor(baseline).numpy())
    for name, step in ((GLOBAL_STEP, global_step),
                       (CONTROLLER_STEP, train_step)):
        if step is not None:
            tensors[name] = np.int32(int(step))
    return tensors


def write_reference_checkpoint(prefix, tensors):
    """Writes `tensors` ({name: array}) as a TF1 name-based checkpoint at
    `prefix` (`prefix.index`, `prefix.data-00000-of-00001`) and names it in
    the folder's `checkpoint` file, as `tf.train.Saver` does. Returns the
    prefix."""
    prefix = os.fspath(prefix)
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    names = sorted(tensors)
    tf.raw_ops.SaveV2(
        prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
        tensors=[tf.convert_to_tensor(tensors[n]) for n in names])
    folder = os.path.dirname(os.path.abspath(prefix))
    with open(os.path.join(folder, "checkpoint"), "w") as f:
        base = os.path.basename(prefix)
        f.write('model_checkpoint_path: "{0}"\n'
                'all_model_checkpoint_paths: "{0}"\n'.format(base))
    return prefix


def start_run_from(path, trainer, search=None):
    """Starts an entry point's run from a checkpoint written by the
    reference: the trainer's child, and when searching (`search`: the
    run's search object) the controller, its baseline and step, the global
    step, and the moving averages of the weights when the trainer keeps
    them."""
    info = import_reference_checkpoint(
        path, child=trainer.child,
        controller=search.controller if search else None,
        baseline=search.reinforce.baseline if search else None)
    if info["global_step"] is not None:
        trainer.optimizer.iterations.assign(info["global_step"])
    if search and info["train_step"] is not None:
        search.reinforce.optimizer.iterations.assign(info["train_step"])
    for shadow, v in zip(getattr(trainer, "shadows", None) or (),
                         trainer.variables):
        # The reference saved the averages under the weights' names.
        shadow.assign(v)
    print("Initialised from the reference checkpoint {} ({} variables)"
          .format(path, info["loaded"]))
