"""Defining absl flags while keeping their names in definition order (the
entry points print and save exactly the flags they define)."""

from absl import flags


def definer(names):
    """A `define(kind, name, default, help, **kwargs)` that calls absl's
    `DEFINE_<kind>` and appends the name to the list `names`."""
    def define(kind, name, default, help_text, **kwargs):
        if kind == "enum":
            flags.DEFINE_enum(name, default, kwargs.pop("enum_values"),
                              help_text, **kwargs)
        else:
            getattr(flags, "DEFINE_" + kind)(name, default, help_text,
                                             **kwargs)
        names.append(name)
    return define


def define_shared_port_flags(d):
    """The port's flags that both entry points take (fidelity, speed,
    reliability), defined with `d` (a `definer`)."""
    # reliability).
    d("string", "reference_checkpoint", None,
      "(port) Initialise the child (and the controller when searching) "
      "from a TF1 checkpoint written by the reference code; ignored when "
      "--output_dir already holds a checkpoint of this run.")
    d("enum", "jit_compile", "auto",
      "(port) XLA for the training step: auto (what measured faster: on for "
      "fixed PTB cells, off elsewhere), true, false.",
      enum_values=["auto", "true", "false"])
    d("boolean", "mixed_precision", False,
      "(port) Train under the mixed_float16 policy (for GPUs; batch norm "
      "and softmax stay float32, the loss is scaled).")
    d("boolean", "deterministic", False,
      "(port) Deterministic TensorFlow ops "
      "(tf.config.experimental.enable_op_determinism): the same --seed gives "
      "the same numbers run after run, at some cost in speed.")
    d("enum", "nan_policy", "stop",
      "(port) On a NaN or Inf loss, reward or gradient norm: stop (naming "
      "the step, the arc and the last good checkpoint) or skip_arc (drop "
      "that update, log it and go on).",
      enum_values=["stop", "skip_arc"])
