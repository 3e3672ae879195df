"""What a run does when a loss, reward or gradient norm is NaN or Inf.

The training steps never apply such an update (`train_ops.apply_update`);
this decides what the loop does next: `--nan_policy=stop` ends the run naming
the step, the arc and the last good checkpoint (nothing is saved), and
`skip_arc` logs the skipped update and goes on.
"""

import numpy as np


def _arc_text(arc):
    if arc is None:
        return ""
    return " (arc {})".format(" ".join(str(int(v)) for v in np.reshape(arc,
                                                                     -1)))


class NanGuard:
    """`guard(values, what, arc=None)` -> True when the run must stop.

    values: name -> number for one step; what: "child" or "controller";
    position(): the current (step, epoch); latest(): the newest checkpoint
    path or None.
    """

    def __init__(self, policy, position, latest, on_stop=None):
        self.policy = policy
        self.position = position
        self.latest = latest
        self.on_stop = on_stop
        self.skipped = 0

    def __call__(self, values, what, arc=None):
        bad = [(name, value) for name, value in values.items()
               if not np.all(np.isfinite(value))]
        if not bad:
            return False
        step, epoch = self.position()
        name, value = bad[0]
        problem = "the {}'s {} is {} at step {} (epoch {}){}".format(
            what, name, value, step, epoch, _arc_text(arc))
        if self.policy == "skip_arc":
            self.skipped += 1
            print("nan_policy=skip_arc: {}; that update was skipped".format(
                problem))
            return False
        print("error: {}; stopping without saving. The last good checkpoint "
              "is {}".format(problem,
                             self.latest() or "none (no epoch completed)"))
        if self.on_stop is not None:
            self.on_stop()
        return True
