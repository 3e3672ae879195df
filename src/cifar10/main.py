"""CIFAR-10 entry point: `python -m src.cifar10.main --search_for=macro ...`.

Reads the reference's flags (see `src/cifar10/flags.py`), builds the run's
config through the search space that `--search_for` names (macro or micro,
`src.registry`), and runs the shared loop of the reference's `train()`
(`src.run_loop`): child steps with the reference's log line every
`--log_every` steps, an evaluation every `--eval_every_epochs` epochs, a
checkpoint per epoch, resuming from `--output_dir` when it already holds
one.
"""

import os

# Before TensorFlow is imported: its C++ start-up messages stay quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from src import run_loop  # noqa: E402


def call(argv):
    """Runs the entry point in this process; returns its exit status."""
    return run_loop.call("cifar10", argv, __doc__)


if __name__ == "__main__":
    run_loop.run("cifar10", __doc__)
