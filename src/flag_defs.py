"""Defining absl flags into an entry point's own `flags.FlagValues` (not
absl's global one, so that every entry point and tool can live in one
process); the flags' names are the FlagValues' keys, in definition order
(the entry points print and save exactly the flags they define)."""

from absl import flags


def definer(flag_values):
    """A `define(kind, name, default, help, **kwargs)` that calls absl's
    `DEFINE_<kind>` into `flag_values`."""
    def define(kind, name, default, help_text, **kwargs):
        kwargs["flag_values"] = flag_values
        if kind == "enum":
            flags.DEFINE_enum(name, default, kwargs.pop("enum_values"),
                              help_text, **kwargs)
        else:
            getattr(flags, "DEFINE_" + kind)(name, default, help_text,
                                             **kwargs)
    define.flag_values = flag_values
    return define


def names(flag_values):
    """The flags of `flag_values` in definition order."""
    return list(flag_values)


def define_shared_port_flags(d):
    """The port's flags that both entry points take (fidelity, speed,
    reliability), defined with `d` (a `definer`)."""
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
    d("enum", "distribution_strategy", "default",
      "(port) tf.distribute strategy of the child's training step: default "
      "(one device), mirrored (every local GPU, or every logical CPU "
      "device), multi_worker_mirrored (the workers of TF_CONFIG). Each step "
      "splits its batch over the replicas, all running the same arc; batch "
      "norm uses the whole batch's moments; the controller trains on the "
      "chief.",
      enum_values=["default", "mirrored", "multi_worker_mirrored"])
    d("enum", "search_policy", "enas",
      "(port) Who picks a search's architectures: enas (the controller, "
      "trained by REINFORCE, as the reference) or random (random search "
      "with weight sharing: every op and input drawn uniformly among the "
      "legal choices, the macro space's skip bits 1 with probability "
      "--controller_skip_target; the child trains as in an ENAS search, "
      "there is no controller and no controller training, and the "
      "architectures are printed and scored as ENAS's). Not with "
      "--child_fixed_arc or --reference_checkpoint.",
      enum_values=["enas", "random"])
    _only_enas(d.flag_values, "child_fixed_arc",
               "--child_fixed_arc trains one fixed arc and "
               "--search_policy=random searches: drop one of them")
    _only_enas(d.flag_values, "reference_checkpoint",
               "--reference_checkpoint starts the controller and REINFORCE "
               "from the reference's, and --search_policy=random has "
               "neither: drop one of them")
    d("integer", "num_cpu_devices", 0,
      "(port) Split the CPU into this many logical devices (0: as found), "
      "so --distribution_strategy=mirrored runs several replicas without a "
      "GPU (for testing; it adds no compute).", lower_bound=0)


def _only_enas(flag_values, name, message):
    """A parse-time check (before any other, so that it is the one error
    a user sees): --search_policy=random with flag `name` set is an error
    with `message`."""
    flags.register_multi_flags_validator(
        ["search_policy", name],
        lambda v: v["search_policy"] != "random" or v[name] is None,
        message=message, flag_values=flag_values)


def port_options(f):
    """The RunConfig fields of `define_shared_port_flags`' flags, read from
    the parsed flags `f` (both entry points' configs have them)."""
    return dict(reference_checkpoint=f.reference_checkpoint,
                jit_compile=f.jit_compile, mixed_precision=f.mixed_precision,
                deterministic=f.deterministic, nan_policy=f.nan_policy,
                distribution_strategy=f.distribution_strategy,
                num_cpu_devices=f.num_cpu_devices,
                search_policy=f.search_policy)
