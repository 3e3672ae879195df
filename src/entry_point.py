"""What every entry point shares: absl start-up, and a user's mistake
(`UserError`) reported as one `error: ...` line with exit status 2."""

import sys

from absl import app


def run(main, argv=None):
    """Runs `main(argv)` under absl; its return value is the exit status."""
    from src.errors import UserError

    def _main(argv):
        try:
            sys.exit(main(argv))
        except UserError as e:
            sys.stdout.flush()
            print("error: {}".format(e), file=sys.stderr)
            sys.exit(2)

    app.run(_main, argv=argv)
