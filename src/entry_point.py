"""What every entry point shares: absl start-up, a user's mistake
(`UserError`) reported as one `error: ...` line with exit status 2, and the
start of a training run (output folder, stdout copy, flags)."""

import sys

from absl import app
from absl import flags


def run(main, argv=None):
    """Runs `main(argv)` under absl; its return value is the exit status."""
    from src.errors import UserError

    def _main(argv):
        try:
            sys.exit(main(argv))
        except UserError as e:
            sys.stdout.flush()
            print("error: {}".format(e), file=sys.stderr)
            # Objects half-restored from a mismatched checkpoint warn when
            # they are collected at exit; the error line says it all.
            from absl import logging
            logging.set_verbosity(logging.ERROR)
            sys.exit(2)

    def _parse(argv):
        # absl reports a bad flag with its own banner and exit status 1.
        try:
            return flags.FLAGS(argv)
        except flags.Error as e:
            print("error: {}; see --help for the flags".format(
                " ".join(str(e).split())), file=sys.stderr)
            sys.exit(2)

    app.run(_main, argv=argv, flags_parser=_parse)


def start_run(argv, flag_values, user_flags, config_from_flags):
    """Validates the flags into a config, prepares `--output_dir`, starts
    the stdout copy, prints the flags as the reference does and writes them
    as `flags.txt`. Returns the config."""
    from absl import logging

    from src import run_log
    from src.errors import UserError

    if len(argv) > 1:
        raise UserError("unexpected arguments {}: every option is a --flag"
                        .format(" ".join(argv[1:])))
    # TensorFlow's checkpoint code logs through absl at INFO level.
    logging.set_verbosity(logging.WARNING)
    cfg = config_from_flags(flag_values)
    run_log.prepare_output_dir(cfg.output_dir, cfg.reset_output_dir)
    run_log.start_stdout_copy(cfg.output_dir)
    run_log.print_flags(flag_values, user_flags)
    run_log.write_flagfile(cfg.output_dir, flag_values, user_flags)
    return cfg


def prepare_run(cfg):
    """The start of a run's work both entry points share, before any model:
    the CPU split (`--num_cpu_devices`), the seeds, `--deterministic`, and
    the `--distribution_strategy` (announced in one line). Returns the
    strategy, or None for `default`."""
    import keras

    from src import distribute
    from src.errors import UserError

    distribute.split_cpu(cfg.num_cpu_devices)
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        from src.determinism import enable_determinism
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
