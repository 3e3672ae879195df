"""User-facing errors: one line that names the problem and the fix."""


class UserError(Exception):
    """A mistake in the user's input (flags, data, arcs, checkpoints).

    Entry points print `error: <message>` on one line and exit with status 2,
    instead of a traceback from deep inside TensorFlow.
    """


class RunStopped(Exception):
    """A run that cannot go on through no mistake of the user's (a lost
    worker of a cluster). Entry points print `error: <message>` on one line
    and exit with status 1; the message says how to go on."""
