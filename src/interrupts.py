"""Stopping a run cleanly on SIGINT / SIGTERM.

`StopRequest` turns the first SIGINT or SIGTERM into a flag the training
loop reads at its next safe point (after a child step, or at the end of a
controller phase or an evaluation), where it saves a checkpoint and exits
with 128 + the signal number. A second signal ends the process at once (the
default action is restored after the first).
"""

import signal

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Context manager: within it, `requested` is the number of the first
    SIGINT/SIGTERM received, or None."""

    def __init__(self):
        self.requested = None
        self._previous = {}

    def _handle(self, signum, frame):
        del frame
        self.requested = signum
        for s in _SIGNALS:  # a second signal acts at once
            signal.signal(s, self._previous.get(s, signal.SIG_DFL))

    def __enter__(self):
        try:
            for s in _SIGNALS:
                self._previous[s] = signal.getsignal(s)
                signal.signal(s, self._handle)
        except ValueError:  # not the main thread: signals stay as they are
            self._previous = {}
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        return False

    def exit_status(self):
        return 128 + int(self.requested)

    def message(self, path):
        name = signal.Signals(self.requested).name
        return ("{}: saved {}; run again with the same --output_dir to "
                "resume".format(name, path))
