"""Rows of BUILD.md's bad-input table not covered next to their modules:
each prints one `error: ...` line, exits with status 2, and leaves what was
saved untouched. The checkpoint's case runs `python -m`; the others run the
entry point in this process (tests/in_process.py)."""

import os
import stat

import pytest

from tests.in_process import call_main
from tests.ptb_fixtures import run_ptb_main, tiny_args, write_tiny_ptb

FIXED = ["--child_fixed_arc=0 0 1 1 2", "--nocontroller_training",
         "--num_epochs=1"]


@pytest.fixture(scope="module")
def tiny_ptb(tmp_path_factory):
    return write_tiny_ptb(tmp_path_factory.mktemp("ptb"))


def one_error_line(result, fragment):
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    last = [l for l in result.stderr.splitlines() if l.strip()][-1]
    assert last.startswith("error: ") and fragment in last, last


def test_a_flagfile_with_an_unknown_flag(tiny_ptb, tmp_path, capfd):
    flagfile = tmp_path / "run.flags"
    flagfile.write_text("--child_lstm_hidden_size=8\n--no_such_flag=3\n")
    result = call_main("src.ptb.main", tiny_args(
        tiny_ptb, str(tmp_path / "run")) + ["--flagfile=" + str(flagfile),
                                            *FIXED], capfd)
    one_error_line(result, "Unknown command line flag 'no_such_flag'")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_an_output_dir_that_cannot_be_written(tiny_ptb, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    result = run_ptb_main(*tiny_args(tiny_ptb, str(locked / "run")), *FIXED)
    one_error_line(result, "choose a folder you can write to")


def test_an_output_dir_that_is_a_file(tiny_ptb, tmp_path, capfd):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = call_main("src.ptb.main",
                       tiny_args(tiny_ptb, str(blocker / "run")) + FIXED,
                       capfd)
    one_error_line(result, "cannot create --output_dir=")


def test_a_checkpoint_of_another_configuration_is_named_and_kept(tiny_ptb,
                                                                 tmp_path):
    out_dir = tmp_path / "run"
    first = run_ptb_main(*tiny_args(tiny_ptb, str(out_dir)), *FIXED)
    assert first.returncode == 0, first.stderr[-2000:]
    before = {p: (out_dir / p).stat().st_mtime_ns
              for p in os.listdir(out_dir) if p.startswith("model.ckpt")}
    result = run_ptb_main(*tiny_args(tiny_ptb, str(out_dir)), *FIXED,
                          "--child_lstm_hidden_size=9")
    one_error_line(result, "does not match this configuration")
    assert "--reset_output_dir" in result.stderr
    after = {p: (out_dir / p).stat().st_mtime_ns
             for p in os.listdir(out_dir) if p.startswith("model.ckpt")}
    assert after == before


def test_macro_too_shallow_for_two_pool_layers_builds_with_a_note(capsys):
    from src import entry_point, run_loop
    flag_values, _ = entry_point.parse_flags(
        "cifar10", ["prog", "--search_for=macro", "--child_num_layers=2",
                    "--child_fixed_arc=0 0 1", "--nocontroller_training",
                    "--controller_search_whole_channels",
                    "--child_out_filters=4"])
    cfg = run_loop.space_of("cifar10", flag_values).config_from_flags(
        flag_values)
    assert cfg.child.num_layers == 2
    assert ("--child_num_layers=2 < 3, so the network has no pool layers"
            in capsys.readouterr().out)
