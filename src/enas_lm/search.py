"""enas_lm's architecture search: `python -m src.enas_lm.search`.

Searches cells of the corrected PTB language model (google-research
enas_lm, `search.py`) with its flags, defaults and log lines: the
shared-weight child trains on a cell the controller samples at every step;
at the end of each epoch of the data the controller trains by REINFORCE
(reward 80 / validation perplexity of its cell on the next validation
window, plus the entropy bonus; 10 gradients per Adam update), then the
child is validated on sampled cells. BUILD.md lists what differs from
enas_lm.
"""

import os
import sys

# Before TensorFlow is imported: its C++ start-up messages stay quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from src import entry_point, registry  # noqa: E402

ENTRY = "enas_lm_search"


def main(flag_values, argv):
    np_print_options()
    from src.enas_lm.loop import run_search
    space = registry.space("enas_lm")
    cfg = entry_point.start_run(argv, flag_values, space.config_from_flags)
    return run_search(cfg, space)


def np_print_options():
    import numpy as np
    np.set_printoptions(precision=3, suppress=True, threshold=int(1e9),
                        linewidth=80)


def call(argv):
    """Runs the entry point in this process; returns its exit status."""
    return entry_point.call(ENTRY, main, argv, doc=__doc__)


if __name__ == "__main__":
    sys.exit(call(sys.argv))
