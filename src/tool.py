"""What the light command-line tools share (`src.arc`, `src.logs`): their
flags in a `FlagValues` of their own, so they never clash with an entry
point's flags of the same names (`--output_dir`, `--search_for`) in one
process; flagfiles read by `src.flagfile`; a bad flag or a `UserError` one
`error: ...` line with exit status 2; --help the module doc and the flags.
No TensorFlow (`src.entry_point` is the training entry points' side).
"""

import os
import sys

from absl import flags

from src import flagfile
from src.errors import UserError

HELP_FLAGS = ("--help", "-help", "-h", "--helpshort", "--helpfull")


def flag_values(define):
    """A fresh absl FlagValues with `define(fv)`'s flags."""
    fv = flags.FlagValues()
    define(fv)
    return fv


def _error(message):
    sys.stdout.flush()
    print("error: {}".format(message), file=sys.stderr)
    return 2


def call(define, main, argv=None, doc=""):
    """Parses argv (argv[0] the program; flagfiles expanded) into the flags
    `define(fv)` defines and returns `main(fv, rest)`'s exit status, rest
    being argv[0] and the arguments that are not flags. A bad flag or a
    UserError is one `error: ...` line on stderr and status 2; --help
    prints `doc` and the flags."""
    argv = list(sys.argv if argv is None else argv)
    fv = flag_values(define)
    if any(a in HELP_FLAGS for a in argv[1:]):
        try:
            print((doc or "").strip() + "\n\nFlags:\n" + fv.get_help())
            sys.stdout.flush()
        except BrokenPipeError:
            # The reader stopped early (`| head`): not an error.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    try:
        args = argv[:1] + flagfile.expand(argv[1:])
    except UserError as e:
        return _error(e)
    try:
        rest = fv(args)
    except flags.Error as e:
        return _error("{}; see --help for the flags".format(
            " ".join(str(e).split())))
    # absl's own logging reads the global flags: mark them parsed.
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    try:
        return main(fv, rest)
    except UserError as e:
        return _error(e)


def run(define, main, argv=None, doc=""):
    """`call(...)`, then exit with its status (`python -m` tools)."""
    sys.exit(call(define, main, argv, doc))
