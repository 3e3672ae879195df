"""An entry point run in the test's own process, for checks of its flags
and one-line errors: a subprocess pays TensorFlow's start (about 4 s of
CPU) for what takes a fraction of a second here. Each entry point keeps at
least one subprocess test of its `python -m` route."""

import importlib
import subprocess
import sys


def call_main(module, args, capfd):
    """`python -m module *args` as `module.call` in this process: a
    subprocess.CompletedProcess (returncode, stdout, stderr), the output
    read from the file descriptors (`capfd`, so TensorFlow's own lines
    too). A run that got as far as its folder tees stdout into it;
    sys.stdout is given back afterwards."""
    entry = importlib.import_module(module)
    capfd.readouterr()
    stdout = sys.stdout
    try:
        status = entry.call([module, *args])
    finally:
        tee, sys.stdout = sys.stdout, stdout
        if tee is not stdout:
            tee.close()
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess([module, *args], status, out, err)
