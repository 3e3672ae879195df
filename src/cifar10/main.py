"""CIFAR-10 entry point: `python -m src.cifar10.main --search_for=macro ...`.

Reads the reference's flags (see `src/cifar10/flags.py`), builds the run's
config through the search space that `--search_for` names (macro or micro,
`src.registry`), and runs the shared loop of the reference's `train()`
(`src.run_loop`): child steps with the reference's log line every
`--log_every` steps, an evaluation every `--eval_every_epochs` epochs, a
checkpoint per epoch, resuming from `--output_dir` when it already holds
one.
"""

import functools
import os

from src import entry_point, run_loop

ENTRY = "cifar10"


def call(argv):
    """Runs the entry point in this process; returns its exit status."""
    return entry_point.call(ENTRY, functools.partial(run_loop.main, ENTRY),
                            argv, doc=__doc__)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    entry_point.run(ENTRY, functools.partial(run_loop.main, ENTRY),
                    doc=__doc__)
