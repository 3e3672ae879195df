"""enas_lm's architecture search: `python -m src.enas_lm.search`.

Searches cells of the corrected PTB language model (google-research
enas_lm, `search.py`) with its flags, defaults and log lines: the
shared-weight child trains on a cell the controller samples at every step;
at the end of each epoch of the data the controller trains by REINFORCE
(reward 80 / validation perplexity of its cell on the next validation
window, plus the entropy bonus; 10 gradients per Adam update), then the
child is validated on sampled cells. The run is `src.run_loop`'s, driving
the space's `EnasLmSearchSession`. BUILD.md lists what differs from
enas_lm.
"""

import os
import sys

import numpy as np

# Before TensorFlow is imported: its C++ start-up messages stay quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from src import entry_point, run_loop  # noqa: E402

ENTRY = "enas_lm_search"


def main(flag_values, argv):
    # enas_lm prints its arcs with these numpy options.
    np.set_printoptions(precision=3, suppress=True, threshold=int(1e9),
                        linewidth=80)
    return run_loop.main(ENTRY, flag_values, argv)


def call(argv):
    """Runs the entry point in this process; returns its exit status."""
    return entry_point.call(ENTRY, main, argv, doc=__doc__)


if __name__ == "__main__":
    sys.exit(call(sys.argv))
