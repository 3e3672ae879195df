"""Penn Treebank entry point: `python -m src.ptb.main --search_for=enas ...`.

Recurrent-cell search (no --child_fixed_arc: the controller samples a cell
per step) and final training of a fixed cell, with the reference's flags,
log lines and evaluation printout, through the PTB search space
(`src.ptb.space`) and the shared run loop (`src.run_loop`).

Known errata: the reference's README says this language model is wrong
("please do not use it") and points to the authors' corrected code,
google-research/google-research enas_lm. This port reproduces the
reference's model, because that is what scripts/ptb_search.sh and
scripts/ptb_final.sh run. What differs from the corrected model (BUILD.md
gives the details and evidence): the controller samples only 2 of the cell's
4 activations (--controller_num_funcs=4 searches all of them); node 0's
activation is searched (enas_lm fixes it to tanh); the cell outputs the mean
of its loose ends (enas_lm: the mean of every node but the first); search
mode batch-normalises every node and the output with epsilon 1.0 (enas_lm
has no normalisation); the dropout scheme differs (no embedding-row or
weight dropout); BPTT windows have a fixed length; the reward is scored on
one random validation window.
"""

import os

# Before TensorFlow is imported: its C++ start-up messages stay quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from src import run_loop  # noqa: E402


def call(argv):
    """Runs the entry point in this process; returns its exit status."""
    return run_loop.call("ptb", argv, __doc__)


if __name__ == "__main__":
    run_loop.run("ptb", __doc__)
