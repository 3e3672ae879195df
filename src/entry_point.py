"""What every entry point shares: parsing its flags into a `FlagValues` of
its own, a user's mistake (`UserError`) reported as one `error: ...` line
with exit status 2 (a run that cannot go on, `RunStopped`: status 1), and
the start of a run (output folder, stdout copy, flags, CPU split, seeds,
determinism, distribution strategy).

`call(entry, argv)` runs an entry point in this process and returns its
exit status (tests use it); `run(entry)` is `python -m`'s form.
"""

import sys

import keras
from absl import flags
from absl import logging

from src import distribute, flag_defs, registry, run_log
from src.determinism import enable_determinism
from src.errors import RunStopped, UserError

HELP_FLAGS = ("--help", "-help", "-h", "--helpshort", "--helpfull")


def parse_flags(entry, argv, define_extra=None):
    """A fresh FlagValues with entry point `entry`'s flags (and
    `define_extra(fv)`'s), parsed from argv (argv[0] is the program).
    Returns (flag_values, the arguments left over). flags.Error on a bad
    flag."""
    fv = registry.define_entry_flags(entry, flags.FlagValues())
    if define_extra is not None:
        define_extra(fv)
    rest = fv(list(argv))
    # absl's logging reads the global flags: mark them parsed, and route
    # Python logging (TensorFlow's too) through absl's handler, as
    # `absl.app.run` does, so that --verbosity-like settings apply to it.
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    logging.use_absl_handler()
    return fv, rest


def call(entry, main, argv=None, define_extra=None, doc=""):
    """Parses entry point `entry`'s flags from argv and returns
    `main(flag_values, rest)`'s exit status; a bad flag or a UserError is
    one `error: ...` line on stderr and status 2. --help prints `doc` (the
    entry point's module doc) and the flags."""
    argv = list(sys.argv if argv is None else argv)
    if any(a in HELP_FLAGS for a in argv[1:]):
        fv = registry.define_entry_flags(entry, flags.FlagValues())
        if define_extra is not None:
            define_extra(fv)
        print((doc or "").strip() + "\n\nFlags:\n" + fv.get_help())
        return 0
    try:
        fv, rest = parse_flags(entry, argv, define_extra)
    except flags.Error as e:
        # absl reports a bad flag with its own banner and exit status 1.
        print("error: {}; see --help for the flags".format(
            " ".join(str(e).split())), file=sys.stderr)
        return 2
    stdout = sys.stdout
    try:
        return main(fv, rest)
    except (UserError, RunStopped) as e:
        sys.stdout.flush()
        print("error: {}".format(e), file=sys.stderr)
        # Objects half-restored from a mismatched checkpoint warn when
        # they are collected at exit; the error line says it all.
        logging.set_verbosity(logging.ERROR)
        return 2 if isinstance(e, UserError) else 1
    finally:
        run_log.end_stdout_copies(stdout)


def run(entry, main, argv=None, define_extra=None, doc=""):
    """`call(...)`, then exit with its status (`python -m` entry points)."""
    sys.exit(call(entry, main, argv, define_extra, doc))


def start_run(argv, flag_values, config_from_flags):
    """Validates the flags into a config, prepares `--output_dir`, starts
    the stdout copy, prints the flags as the reference does and writes them
    as `flags.txt`. Returns the config."""
    if len(argv) > 1:
        raise UserError("unexpected arguments {}: every option is a --flag"
                        .format(" ".join(argv[1:])))
    # TensorFlow's checkpoint code logs through absl at INFO level.
    logging.set_verbosity(logging.WARNING)
    cfg = config_from_flags(flag_values)
    names = flag_defs.names(flag_values)
    if cfg.distribution_strategy == "multi_worker_mirrored":
        # TF_CONFIG's mistakes are one line, before any model; a worker
        # other than the chief writes to a temporary folder of its own and
        # reads the chief's checkpoints (none after --reset_output_dir).
        task = distribute.cluster_task()
        if not distribute.is_chief_task(task):
            shared = cfg.output_dir
            cfg.output_dir = distribute.worker_output_dir(shared, task)
            if cfg.reset_output_dir:
                distribute.forget_shared_dir(cfg.output_dir)
            print("Worker {} of {}: the chief writes {}; this worker writes "
                  "to {} (removed at exit)".format(task[1], task[2], shared,
                                                    cfg.output_dir))
    run_log.prepare_output_dir(cfg.output_dir, cfg.reset_output_dir)
    run_log.start_stdout_copy(cfg.output_dir)
    run_log.print_flags(flag_values, names)
    run_log.write_flagfile(cfg.output_dir, flag_values, names)
    return cfg


def prepare_run(cfg):
    """The start of a run's work, before any model: the CPU split
    (`--num_cpu_devices`), the seeds, `--deterministic`, and the
    `--distribution_strategy` (announced in one line). Returns the
    strategy, or None for `default`."""
    distribute.split_cpu(cfg.num_cpu_devices)
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        enable_determinism()
    if cfg.distribution_strategy == "default":
        return None
    if cfg.jit_compile == "true":
        raise UserError("--jit_compile=true does not combine with "
                        "--distribution_strategy: use --jit_compile=auto or "
                        "false")
    strategy = distribute.make_strategy(cfg.distribution_strategy)
    print("Distribution: {} with {} replicas".format(
        cfg.distribution_strategy, strategy.num_replicas_in_sync))
    return strategy
