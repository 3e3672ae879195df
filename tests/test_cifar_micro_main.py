"""The micro entry point end to end on tiny data: the search's two-line
architecture printout and records, fixed-arc training with the aux head and
drop-path, and one-line errors for malformed micro arcs."""

import json
import os

import pytest

from src import run_loop, schedules
from src.cifar10.session import CifarRunConfig
from src.micro import arcs
from src.micro.child import MicroConfig
from src.micro.controller import MicroControllerConfig
from src.reinforce import ReinforceConfig
from src.train_ops import TrainConfig
from tests.in_process import call_main

FINAL = ("0 2 0 0 0 4 0 1 0 4 1 1 1 0 0 1 0 2 1 1 "
         "1 0 1 0 0 3 0 2 1 1 3 1 1 0 0 4 0 3 1 1")


# Two nodes per cell: most of a tiny run's time traces the cells.
SEARCH_CELLS = 2
FINAL_CELLS = 2
FINAL_TWO_NODES = "0 2 0 0 1 4 0 1 0 4 1 1 1 0 0 1"


def micro_config(data_path, output_dir, num_epochs, fixed_arc=None):
    searching = fixed_arc is None
    cells = SEARCH_CELLS if searching else FINAL_CELLS
    lr = schedules.LrConfig(lr_cosine=True, lr_max=0.05, lr_min=0.0005,
                            lr_T_0=1, lr_T_mul=2)
    return CifarRunConfig(
        search_for="micro", data_path=data_path, output_dir=output_dir,
        reset_output_dir=False, num_valids=20 if searching else 0,
        batch_size=16, num_epochs=num_epochs, log_every=2,
        eval_every_epochs=1, seed=5, cutout_size=None, download=False,
        child=MicroConfig(
            num_layers=0 if searching else 1, num_cells=cells, out_filters=4,
            keep_prob=0.9,
            drop_path_keep_prob=0.6, use_aux_heads=not searching,
            fixed_arc=(None if searching
                       else arcs.MicroArc.parse(fixed_arc, cells)),
            num_train_steps=num_epochs, seed=5),
        train=TrainConfig(l2_reg=1e-4, clip_mode="norm", grad_bound=5.0,
                          lr=lr),
        lr_dec_every_epochs=100,
        controller=(MicroControllerConfig(num_cells=cells, tanh_constant=1.1,
                                          op_tanh_reduce=2.5, seed=5)
                    if searching else None),
        reinforce=(ReinforceConfig(lr=3.5e-3, entropy_weight=1e-4,
                                   sync_replicas=True, num_aggregate=2)
                   if searching else None),
        controller_training=searching, controller_train_every=1,
        controller_train_steps=1, controller_num_aggregate=2,
        eval_training_mode=searching)


def test_micro_search_prints_normal_and_reduce_cells_and_records_them(
        fake_cifar, tmp_path, capsys):
    out_dir = str(tmp_path / "run")
    os.makedirs(out_dir)
    assert run_loop.train(micro_config(fake_cifar, out_dir, 1)) == 0
    log = capsys.readouterr().out
    assert "Epoch 1: Training controller" in log
    assert "Here are 10 architectures" in log and "ctrl_step=" in log
    records = [json.loads(l) for l in open(os.path.join(out_dir,
                                                        "arcs.jsonl"))]
    assert len(records) == 10
    for r in records:
        arc = arcs.MicroArc.parse(r["arc"], SEARCH_CELLS)
        normal, reduce_ = arc.cell_lines()
        assert r["normal"] == " ".join(map(str, normal))
        assert r["reduce"] == " ".join(map(str, reduce_))
        # Two printed lines per architecture, normal cell first.
        assert "{}\n{}\nval_acc=".format(
            str(__import__("numpy").array(normal)),
            str(__import__("numpy").array(reduce_))) in log
    assert open(os.path.join(out_dir, "best_arc.txt")).read().strip() == \
        max(records, key=lambda r: r["reward"])["arc"]


def test_micro_final_trains_and_resumes(fake_cifar, tmp_path, capsys):
    out_dir = str(tmp_path / "run")
    os.makedirs(out_dir)
    for epochs in (1, 2):
        assert run_loop.train(micro_config(fake_cifar, out_dir, epochs,
                                           FINAL_TWO_NODES)) == 0
    log = capsys.readouterr().out
    assert "Resuming from" in log and "Epoch 2: Eval" in log
    assert "test_accuracy: " in log and "valid_accuracy" not in log


@pytest.mark.parametrize("arc, message", [
    ("0 2 0", "has 3 integers"),
    (FINAL.replace("0 2 0 0 0 4", "0 7 0 0 0 4", 1), "op"),
    (FINAL.replace("0 2 0 0 0 4", "2 2 0 0 0 4", 1), "index"),
])
def test_malformed_micro_arcs_are_one_line_exit_2(fake_cifar, tmp_path, arc,
                                                   message, capfd):
    result = call_main("src.cifar10.main", [
        "--search_for=micro", "--data_path=" + fake_cifar,
        "--output_dir=" + str(tmp_path / "run"), "--child_fixed_arc=" + arc,
        "--nocontroller_training", "--child_num_layers=0",
        "--child_out_filters=4", "--num_epochs=1"], capfd)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last
    assert "Traceback" not in result.stderr
