"""`src.flagfile`: the one flagfile reader of the tools, checked against
absl's own reader where they overlap."""

import os

import pytest
from absl import flags

from src import flagfile
from src.errors import UserError


def write(path, *lines):
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def absl_expand(argv):
    """What absl itself makes of argv's flagfiles."""
    return flags.FlagValues().read_flags_from_files(["prog"] + list(argv),
                                                    force_gnu=True)[1:]


def test_expand_replaces_flagfiles_in_place_with_their_lines(tmp_path):
    inner = write(tmp_path / "inner.flags", "# a comment", "--b=2",
                  "// another", "", "   ", "  --c  ")
    outer = write(tmp_path / "outer.flags", "--a=1",
                  "--flagfile={}".format(inner), "--d=x y")
    argv = ["--x=0", "--flagfile={}".format(outer), "pos", "--flagfile",
            inner, "--y"]
    expected = ["--x=0", "--a=1", "--b=2", "--c", "--d=x y", "pos", "--b=2",
                "--c", "--y"]
    assert flagfile.expand(argv) == expected
    assert absl_expand(argv) == expected


def test_a_cycle_is_followed_once(tmp_path):
    a, b = tmp_path / "a.flags", tmp_path / "b.flags"
    write(a, "--a=1", "--flagfile={}".format(b))
    write(b, "--b=2", "--flagfile={}".format(a), "--flagfile=" + str(b))
    assert flagfile.expand(["--flagfile=" + str(a)]) == ["--a=1", "--b=2"]
    # A file named twice, not in a cycle, is read twice, as absl does.
    assert flagfile.expand(["--flagfile=" + str(b), "--flagfile=" + str(b)
                            ]) == ["--b=2", "--a=1", "--b=2", "--a=1"]


def test_empty_names_are_ignored_and_after_double_dash_nothing_is_read(
        tmp_path):
    path = write(tmp_path / "f.flags", "--a=1", "--flagfile=")
    argv = ["--flagfile=", "--flagfile=" + path, "--", "--flagfile=" + path]
    assert flagfile.expand(argv) == ["--a=1", "--", "--flagfile=" + path]
    assert absl_expand(argv) == flagfile.expand(argv)


def test_unreadable_flagfiles_and_missing_names_are_user_errors(tmp_path):
    missing = str(tmp_path / "none.flags")
    nested = write(tmp_path / "outer.flags", "--flagfile=" + missing)
    for argv in (["--flagfile=" + missing], ["--flagfile", missing],
                 ["--flagfile=" + nested]):
        with pytest.raises(UserError) as e:
            flagfile.expand(argv)
        assert str(e.value) == ("cannot read --flagfile={}: No such file or "
                                "directory".format(missing))
    with pytest.raises(UserError, match="--flagfile needs a file"):
        flagfile.expand(["--a", "--flagfile"])


def test_home_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    write(tmp_path / "f.flags", "--a=1")
    assert flagfile.expand(["--flagfile=~/f.flags"]) == ["--a=1"]
    assert flagfile.expand(["--flagfile", os.path.join("~", "f.flags")]) == [
        "--a=1"]


def test_last_value_is_the_last_given_after_expansion(tmp_path):
    inner = write(tmp_path / "inner.flags", "--search_for=enas")
    outer = write(tmp_path / "outer.flags", "--batch_size=4",
                  "--flagfile=" + inner)
    assert flagfile.last_value(["--search_for=macro"], "search_for") == \
        "macro"
    assert flagfile.last_value(["--search_for", "micro"], "search_for") == \
        "micro"
    assert flagfile.last_value(["-search_for=micro"], "search_for") == \
        "micro"
    assert flagfile.last_value(["--flagfile=" + outer], "search_for") == \
        "enas"
    assert flagfile.last_value(["--flagfile=" + outer, "--search_for=micro"],
                               "search_for") == "micro"
    assert flagfile.last_value(["--search_for=micro", "--flagfile=" + outer],
                               "search_for") == "enas"
    assert flagfile.last_value(["--batch_size=3"], "search_for") is None
    assert flagfile.last_value(["--search_for_x=1"], "search_for") is None
    # After "--" nothing is a flag.
    assert flagfile.last_value(["--space=ptb", "--", "--space=cifar10"],
                               "space") == "ptb"
    with pytest.raises(UserError, match="cannot read --flagfile="):
        flagfile.last_value(["--flagfile=" + str(tmp_path / "none")],
                            "search_for")


def test_read_gives_names_and_values_as_written(tmp_path):
    inner = write(tmp_path / "inner.flags", "--seed=7")
    path = write(tmp_path / "flags.txt", "# flags", "--batch_size=32",
                 "--child_lr_cosine", "--nocontroller_training",
                 "--data_path=../d", "--child_fixed_arc=0 3 0",
                 "not a flag", "--flagfile=" + inner)
    assert flagfile.read(path) == {
        "batch_size": "32", "child_lr_cosine": "True",
        "controller_training": "False", "nocontroller_training": "True",
        "data_path": "../d", "child_fixed_arc": "0 3 0", "seed": "7"}
    with pytest.raises(UserError, match="cannot read --flagfile="):
        flagfile.read(str(tmp_path / "none"))
