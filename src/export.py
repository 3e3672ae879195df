"""SavedModel export: `python -m src.export --flagfile=<run>/flags.txt
--export_dir=exported`.

Takes every flag of the entry point the run used (so a run's `flags.txt`
or the reference's own flags work unchanged), plus

  --checkpoint_dir     a run's `--output_dir` (its newest checkpoint) or a
                       checkpoint prefix; default: --output_dir
  --reference_checkpoint  a TF1 checkpoint written by the reference code
                       (instead of --checkpoint_dir)
  --export_dir         where the SavedModel goes
  --export_what        child, controller or both (default: child with a
                       fixed arc, both when searching)
  --export_overwrite   replace a SavedModel already in --export_dir
  --space              the entry point (cifar10, ptb, enas_lm_fixed or
                       enas_lm_search: `src.registry`); needed only when
                       --search_for is given nowhere (macro / micro mean
                       cifar10, enas ptb)

The entry points define flags with the same names and other defaults: the
entry point is read from the command line and its flagfiles before its
flags are defined.

One SavedModel holds what was asked for. Its signatures:

- CIFAR-10 child, fixed arc: `serving_default(images: uint8 [N, 32, 32, 3])`
  -> {"logits", "probabilities"}, the run's training mean and std baked in
  (computed from --data_path as the run computes them; without the data this
  signature is left out with a warning), and
  `predict_normalized(images: float32 [N, 32, 32, 3])` -> {"logits"}.
- CIFAR-10 search child (shared weights, every architecture of the space):
  `predict_normalized_with_arc(images, arc: int32 [A])` -> {"logits"}, the
  arc in the `--child_fixed_arc` encoding (micro: normal cell, then
  reduction cell). Batch norm as the reference's valid graph: moving
  statistics for macro; for micro (with the default
  --child_search_eval_training_mode) the statistics of the given batch,
  without dropout and without touching the moving statistics.
- PTB child: `serving_default(tokens: int32 [N, T], state: float32
  [num_layers, N, hidden])` -> {"logits": [N, T, vocab], "state"}, in
  evaluation mode; the search child `predict_with_arc(tokens, state, arc)`
  instead. With --child_optim_moving_average the averaged weights are
  exported (what the reference saves).
- enas_lm child: the same signatures with `state: float32 [N, hidden]`;
  a fixed model whose run started averaging exports its averaged weights
  (what enas_lm evaluates from then on). Its TF1 checkpoints are read with
  `src.enas_lm.checkpoint`.
- Controllers: `sample()` -> {"arc", "log_prob", "entropy"} and
  `log_prob(arc: int32 [A])` -> {"log_prob", "entropy"}; the macro
  controller's also "skip_count" and "skip_penalty". log_prob is the
  log-probability of the arc (negative; the reference's `sample_log_prob`
  is its negation); entropy and skip_penalty are the reference's quantities
  as it computes them. `sample()` draws from a generator whose state is part
  of the SavedModel: each call gives a new arc.

The export is always NHWC float32 (a run with --data_format=NCHW or
--mixed_precision has the same weights). `assets.extra/enas_export.json`
records what was exported, from where, the step and the arc length.
"""

import contextlib
import functools
import json
import os
import shutil
import sys

import keras
import tensorflow as tf
from absl import flags
from absl import logging

from src import entry_point, flagfile, registry
from src.checkpoints import has_checkpoint, variables_by_path
from src.cifar10 import data as cifar_data
from src.common_ops import traced
from src.errors import UserError
from src.reference_checkpoint import resolve_checkpoint
from src.run_loop import space_of
from src.space import ExportAveraging

CONTROLLER_KEYS = ("arc", "log_prob", "entropy", "skip_count", "skip_penalty")
INFO_FILE = os.path.join("assets.extra", "enas_export.json")

# -- which entry point's flags ------------------------------------------------

def choose_space(argv):
    """The entry point whose flags apply ("cifar10", "ptb", ...; a key of
    `registry.ENTRY_POINTS`): from --space, else from --search_for (the
    entry point of the space it names), looked up in argv and its
    flagfiles (the last value wins, as absl reads them). UserError when
    neither is given."""
    args = flagfile.expand(list(argv[1:]))
    values = {name: flagfile.last_value(args, name)
              for name in ("space", "search_for")}
    entries = " or ".join(registry.ENTRY_POINTS)
    if values.get("space"):
        if values["space"] not in registry.ENTRY_POINTS:
            raise UserError("--space={!r} is unknown: use {}".format(
                values["space"], entries))
        return values["space"]
    search_for = values.get("search_for")
    for name in registry.SPACES:
        if registry.info(name).search_for == search_for:
            return registry.info(name).entry
    if search_for:
        raise UserError("--search_for={!r} is unknown: use {}".format(
            search_for, ", ".join(
                "{} ({})".format(registry.info(n).search_for,
                                 registry.info(n).entry)
                for n in registry.SPACES)))
    raise UserError(
        "--search_for is not given, so the entry point's flags are unknown: "
        "pass the run's flags (--flagfile=<output_dir>/flags.txt) or the "
        "reference's, or --space={} with --search_for".format(
            "|".join(registry.ENTRY_POINTS)))


def define_export_flags(fv):
    """The export's own flags, defined into `fv` (beside the entry
    point's)."""
    flags.DEFINE_string("checkpoint_dir", None,
                        "A run's --output_dir (its newest checkpoint) or a "
                        "checkpoint prefix. Default: --output_dir.",
                        flag_values=fv)
    flags.DEFINE_string("export_dir", None, "Where the SavedModel goes.",
                        flag_values=fv)
    flags.DEFINE_enum("export_what", None, ["child", "controller", "both"],
                      "What to export. Default: child with a fixed arc, both "
                      "when searching.", flag_values=fv)
    flags.DEFINE_boolean("export_overwrite", False,
                         "Replace a SavedModel already in --export_dir.",
                         flag_values=fv)
    flags.DEFINE_enum("space", None, list(registry.ENTRY_POINTS),
                      "The entry point whose flags apply; read from "
                      "--search_for when not given.", flag_values=fv)


# -- building the models ---------------------------------------------------

def build_child(space, child_cfg):
    """The child of `space` (a SearchSpace) for a config, built (its
    variables exist)."""
    child = space.build_child(child_cfg)
    space.build_variables(child)
    return child


def _object_key(model, path):
    """The key of the variable at `path` in a run checkpoint's `model`
    dict (tf.train.Checkpoint escapes "." and "/" in dict keys)."""
    return "{}/{}/.ATTRIBUTES/VARIABLE_VALUE".format(
        model, path.replace(".", "..").replace("/", ".S"))


def ptb_vocab_size(path, reference):
    """The vocabulary size of the PTB child in a checkpoint (the rows of
    its embedding), or None when it holds no child."""
    shapes = tf.train.load_checkpoint(path).get_variable_to_shape_map()
    name = "ptb_enas_model/embedding/w"
    key = name if reference else _object_key("child", name)
    return shapes[key][0] if key in shapes else None


def restore_run_checkpoint(path, child=None, controller=None, objects=None):
    """Restores the given parts from a checkpoint of one of our runs
    (`RunCheckpoint`): child and controller by variable path, and
    `objects` ({checkpoint name: trackable}: a trainer's averages). Parts
    not given are not read, so a checkpoint holding only the controller is
    enough for the controller. Returns {"global_step", "controller_step"}:
    the two optimisers' update counts (None when absent). UserError when a
    part does not fit."""

    objects = dict(objects or {})
    if child is not None:
        objects["child"] = variables_by_path(child)
    if controller is not None:
        objects["controller"] = variables_by_path(controller)
    try:
        status = tf.train.Checkpoint(**objects).restore(path)
        status.expect_partial()
        status.assert_existing_objects_matched()
    except (ValueError, AssertionError, tf.errors.OpError) as e:
        detail = " ".join(str(e).split())[:300]
        raise UserError(
            "the checkpoint {} does not match these flags ({}): pass the "
            "run's own flags (--flagfile=<output_dir>/flags.txt)".format(
                path, detail)) from None
    reader = tf.train.load_checkpoint(path)
    steps = {}
    for name, optimizer in (("global_step", "optimizer"),
                            ("controller_step", "controller_optimizer")):
        key = optimizer + "/_iterations/.ATTRIBUTES/VARIABLE_VALUE"
        steps[name] = (int(reader.get_tensor(key)) if reader.has_tensor(key)
                       else None)
    return steps


# -- the SavedModel ----------------------------------------------------------

def _batch_statistics_logits(child, images, arc):
    """The micro search child's logits with batch norm on the statistics of
    `images` (the reference's training-mode valid graph), without dropout;
    the moving statistics the training-mode pass updates are put back."""
    state = list(child.non_trainable_weights)
    saved = [tf.convert_to_tensor(v) for v in state]
    outputs = child.layer_outputs(images, training=True, arc=arc)
    logits = child.head(outputs, training=False).logits
    with tf.control_dependencies([logits]):
        restores = [v.assign(s) for v, s in zip(state, saved)]
    with tf.control_dependencies(restores):
        return tf.identity(logits)


def child_signatures(child, mean=None, std=None, batch_statistics=False):
    """{signature name: tf.function} of a child (see the module doc).

    mean, std: the CIFAR-10 training statistics ([3] each) for
    `serving_default` (fixed arc only; None: not exported).
    batch_statistics: the CIFAR-10 search child normalises with the
    statistics of the batch (micro search's valid graph)."""

    searching = child.searching
    arc_spec = (tf.TensorSpec([child.cfg.arc_length], tf.int32, name="arc")
                if searching else None)
    out = {}
    if child.serving_inputs == "tokens":
        tokens = tf.TensorSpec([None, None], tf.int32, name="tokens")
        state = child.state_spec()

        def forward(tokens, state, arc=None):
            outputs, next_state = child(tokens, state, arc=arc,
                                        training=False)
            return {"logits": child.logits(outputs), "state": next_state}

        if searching:
            out["predict_with_arc"] = traced(
                forward, input_signature=[tokens, state, arc_spec])
        else:
            out["serving_default"] = traced(
                lambda tokens, state: forward(tokens, state),
                input_signature=[tokens, state])
        return out

    floats = tf.TensorSpec([None, 32, 32, 3], tf.float32, name="images")
    if searching:
        def with_arc(images, arc):
            if batch_statistics:
                return {"logits": _batch_statistics_logits(child, images,
                                                           arc)}
            return {"logits": child(images, training=False,
                                    arc=arc).logits}

        out["predict_normalized_with_arc"] = traced(
            with_arc, input_signature=[floats, arc_spec])
        return out

    def normalized(images):
        return {"logits": child(images, training=False).logits}

    out["predict_normalized"] = traced(normalized,
                                       input_signature=[floats])
    if mean is not None and std is not None:
        mean = [float(v) for v in mean]
        std = [float(v) for v in std]

        def serving(images):
            logits = child(cifar_data.normalize(images, mean, std),
                           training=False).logits
            return {"logits": logits, "probabilities": tf.nn.softmax(logits)}

        out["serving_default"] = traced(
            serving, input_signature=[
                tf.TensorSpec([None, 32, 32, 3], tf.uint8, name="images")])
    return out


def controller_signatures(controller):
    """{"sample", "log_prob"} tf.functions of a controller."""

    def sample():
        result = controller.sample()
        return {k: result[k] for k in CONTROLLER_KEYS if k in result}

    def log_prob(arc):
        result = controller.log_prob(arc)
        return {k: result[k] for k in CONTROLLER_KEYS[1:] if k in result}

    arc = tf.TensorSpec([controller.config.arc_length], tf.int32, name="arc")
    return {"sample": traced(sample, input_signature=[]),
            "log_prob": traced(log_prob, input_signature=[arc])}


def save_export(export_dir, child=None, controller=None, mean=None, std=None,
                batch_statistics=False, info=None):
    """Writes a SavedModel of `child` and/or `controller` (built Keras
    layers holding the weights to export) into `export_dir`. Returns the
    sorted signature names. info: extra entries for
    `assets.extra/enas_export.json`."""

    module = tf.Module()
    signatures = {}
    record = dict(info or {})
    if child is not None:
        module.child_variables = variables_by_path(child)
        signatures.update(child_signatures(child, mean, std,
                                           batch_statistics))
        record["child_arc_length"] = (child.cfg.arc_length
                                      if child.searching else None)
    if controller is not None:
        module.controller_variables = variables_by_path(controller)
        signatures.update(controller_signatures(controller))
        record["controller_arc_length"] = controller.config.arc_length
    if not signatures:
        raise ValueError("nothing to export: give a child or a controller")
    for name, fn in signatures.items():
        setattr(module, name, fn)
    tf.saved_model.save(module, export_dir, signatures=signatures)
    record["signatures"] = sorted(signatures)
    if mean is not None and std is not None and child is not None:
        record["mean"] = [float(v) for v in mean]
        record["std"] = [float(v) for v in std]
    path = os.path.join(export_dir, INFO_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)
    return sorted(signatures)


# -- from a run's configuration ---------------------------------------------

def _check_export_dir(export_dir, overwrite, remove=False):
    """UserError unless `export_dir` is new, empty, or (with `overwrite`) a
    SavedModel; remove: then delete that SavedModel."""
    if not export_dir:
        raise UserError("--export_dir is required: the folder the SavedModel "
                        "goes to")
    if os.path.isdir(export_dir) and os.listdir(export_dir):
        is_saved_model = os.path.exists(os.path.join(export_dir,
                                                     "saved_model.pb"))
        if not (overwrite and is_saved_model):
            raise UserError(
                "--export_dir={} is not empty: {}".format(
                    export_dir,
                    "pass --export_overwrite to replace the SavedModel there"
                    if is_saved_model else "choose an empty or new folder"))
        if remove:
            shutil.rmtree(export_dir)


def export_from_config(cfg, space, export_dir, what=None, checkpoint=None,
                       reference_checkpoint=None, overwrite=False, log=print,
                       entry=None):
    """Builds the models of a run's config (`space.config_from_flags`,
    `space` a SearchSpace), restores them from `checkpoint` (one of our
    runs: a folder or prefix) or `reference_checkpoint` (a TF1 checkpoint of
    the reference code), and saves the SavedModel. Returns the record
    written to `assets.extra/enas_export.json` (its "space": `entry`, the
    entry point whose flags were read, default the space's)."""

    searching = cfg.searching
    what = what or ("both" if searching else "child")
    if what in ("controller", "both") and not searching:
        raise UserError(
            "--export_what={} needs a controller, but --child_fixed_arc is "
            "given (no search): use --export_what=child".format(what))
    if (checkpoint is None) == (reference_checkpoint is None):
        raise UserError("give one source: --checkpoint_dir (one of our runs) "
                        "or --reference_checkpoint (the reference's)")
    source = resolve_checkpoint(reference_checkpoint or checkpoint)
    _check_export_dir(export_dir, overwrite)
    keras.utils.set_random_seed(cfg.seed)
    # Exported in float32 whatever the run's --mixed_precision.
    keras.mixed_precision.set_global_policy("float32")

    child = controller = None
    if what in ("child", "both"):
        space.prepare_export(cfg, source, reference_checkpoint is not None,
                             log)
        child = build_child(space, cfg.child)
    if what in ("controller", "both"):
        controller = space.build_controller(cfg.controller)

    if reference_checkpoint is not None:
        steps, averaging = space.import_reference(cfg, source, child,
                                                  controller)
    else:
        averaging = (space.export_averaging(cfg, child) if child is not None
                     else ExportAveraging())
        steps = restore_run_checkpoint(source, child=child,
                                       controller=controller,
                                       objects=averaging.objects)
    step, ctrl_step = steps["global_step"], steps["controller_step"]

    mean = std = None
    if child is not None and not searching:
        mean, std = space.serving_statistics(cfg, log)
    batch_statistics = bool(getattr(cfg, "eval_training_mode", False))
    info = {"space": entry or space.entry, "search_for": space.search_for,
            "what": what, "source": os.path.abspath(source),
            "reference_checkpoint": reference_checkpoint is not None,
            "global_step": step, "controller_step": ctrl_step,
            "batch_statistics": batch_statistics and child is not None,
            "moving_average": bool(averaging.active())}
    _check_export_dir(export_dir, overwrite, remove=True)
    with (averaging.weights() if info["moving_average"]
          else contextlib.nullcontext()):
        names = save_export(export_dir, child=child, controller=controller,
                            mean=mean, std=std,
                            batch_statistics=batch_statistics, info=info)
    info["signatures"] = names
    steps = ["{} {}".format(name, value) for name, value in
             (("step", step), ("controller step", ctrl_step))
             if value is not None]
    log("Exported {} from {}{} to {}: {}".format(
        what, source, " ({})".format(", ".join(steps)) if steps else "",
        export_dir, ", ".join(names)))
    return info


# -- the command line --------------------------------------------------------

def _main(entry, f, argv):
    if len(argv) > 1:
        raise UserError("unexpected arguments {}: every option is a --flag"
                        .format(" ".join(argv[1:])))
    logging.set_verbosity(logging.WARNING)
    space = space_of(entry, f)
    cfg = space.config_from_flags(f)
    checkpoint = f.checkpoint_dir
    if checkpoint is None and f.reference_checkpoint is None:
        if not (cfg.output_dir and has_checkpoint(cfg.output_dir)):
            raise UserError(
                "no source: pass --checkpoint_dir (a run's output folder) or "
                "--reference_checkpoint (a checkpoint of the reference "
                "code){}".format(
                    "" if not cfg.output_dir else
                    "; --output_dir={} holds no checkpoint".format(
                        cfg.output_dir)))
        checkpoint = cfg.output_dir
    export_from_config(cfg, space, f.export_dir, what=f.export_what,
                       checkpoint=checkpoint,
                       reference_checkpoint=f.reference_checkpoint,
                       overwrite=f.export_overwrite, entry=entry)
    return 0


def call(argv=None):
    """Picks the entry point's flag set from argv, defines it and the
    export's flags, and exports; returns the exit status."""
    argv = list(sys.argv if argv is None else argv)
    try:
        entry = choose_space(argv)
    except UserError as e:
        print("error: {}".format(e), file=sys.stderr)
        return 2
    return entry_point.call(entry, functools.partial(_main, entry), argv,
                            define_extra=define_export_flags, doc=__doc__)


def run(argv=None):
    """`python -m src.export`: `call(argv)`, then exit with its status."""
    sys.exit(call(argv))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run()
