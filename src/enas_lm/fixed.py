"""enas_lm's fixed model: `python -m src.enas_lm.fixed --fixed_arc="..."`.

Trains one cell of the corrected PTB language model (google-research
enas_lm, `fixed.py`) with its flags, defaults and log lines: variable-length
BPTT, SGD with clipping, its regularisation, the averaging (NT-ASGD style)
trigger with validation on the averaged weights, and the batch-1 test
evaluation at the end. The run is `src.run_loop`'s, driving the space's
`EnasLmFixedSession`. BUILD.md lists what differs from enas_lm.
"""

import functools
import os
import sys

# Before TensorFlow is imported: its C++ start-up messages stay quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from src import entry_point, run_loop  # noqa: E402

ENTRY = "enas_lm_fixed"


def call(argv):
    """Runs the entry point in this process; returns its exit status."""
    return entry_point.call(ENTRY, functools.partial(run_loop.main, ENTRY),
                            argv, doc=__doc__)


if __name__ == "__main__":
    sys.exit(call(sys.argv))
