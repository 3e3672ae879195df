"""--reference_checkpoint on the entry points: a reference TF1 checkpoint
initialises the run; one for another model is one line and exit 2."""

from tests.conftest import golden_case
from tests.test_cifar_main import run_main as run_cifar_main

MACRO_FIXED_ARC = "0 3 0 0 1 0 2 0 0 1 2 0 0 0 0 3 1 1 0 1 0"


def cifar_args(data_path, output_dir, *extra):
    return ["--data_path=" + data_path, "--output_dir=" + output_dir,
            "--batch_size=32", "--num_epochs=1", "--log_every=1",
            "--nocontroller_training", "--child_num_branches=4",
            "--child_out_filters=16", "--child_num_layers=6",
            "--controller_search_whole_channels", *extra]


def test_a_reference_checkpoint_initialises_the_child(fake_cifar, tmp_path):
    case = golden_case("macro_fixed")
    result = run_cifar_main(*cifar_args(
        fake_cifar, str(tmp_path / "run"), "--search_for=macro",
        "--child_fixed_arc=" + MACRO_FIXED_ARC,
        "--reference_checkpoint=" + str(case / "ckpt")))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Initialised from the reference checkpoint" in result.stdout
    assert "(243 variables)" in result.stdout
    # The reference's global step (3) comes along.
    assert "ch_step=4 " in result.stdout


def test_a_reference_checkpoint_of_another_search_space_is_one_line(
        fake_cifar, tmp_path):
    case = golden_case("macro_fixed")
    result = run_cifar_main(*cifar_args(
        fake_cifar, str(tmp_path / "run"), "--search_for=micro",
        "--child_num_cells=2", "--child_num_layers=0",
        "--child_fixed_arc=" + " ".join(["0 0 0 0"] * 4),
        "--reference_checkpoint=" + str(case / "ckpt")))
    assert result.returncode == 2, result.stderr[-3000:]
    last = [l for l in result.stderr.splitlines() if l.strip()][-1]
    assert last.startswith("error: the reference checkpoint ")
    assert "missing" in last and "Traceback" not in result.stderr
