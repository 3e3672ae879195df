"""An entry point run in the test's own process, for checks of its flags
and one-line errors: a subprocess pays TensorFlow's start (about 4 s of
CPU) for what takes a fraction of a second here. Each entry point keeps at
least one subprocess test of its `python -m` route."""

import importlib
import subprocess


def call_main(module, args, capfd):
    """`python -m module *args` as `module.call` in this process: a
    subprocess.CompletedProcess (returncode, stdout, stderr), the output
    read from the file descriptors (`capfd`, so TensorFlow's own lines
    too)."""
    entry = importlib.import_module(module)
    capfd.readouterr()
    status = entry.call([module, *args])
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess([module, *args], status, out, err)
