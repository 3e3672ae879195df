"""The macro search loop end to end on tiny data: controller lines, the 10
architectures, arcs.jsonl / best_arc.txt. (Exact resume, killed at three
points, is tests/test_reliability_cifar.py.)"""

import json
import os

import numpy as np

from src import run_loop, schedules
from src.cifar10.session import CifarRunConfig
from src.macro import arcs
from src.macro.child import MacroConfig
from src.macro.controller import MacroControllerConfig
from src.reinforce import ReinforceConfig
from src.train_ops import TrainConfig


def search_config(data_path, output_dir, num_epochs):
    lr = schedules.LrConfig(lr_cosine=True, lr_max=0.05, lr_min=0.0005,
                            lr_T_0=1, lr_T_mul=2)
    return CifarRunConfig(
        search_for="macro", data_path=data_path, output_dir=output_dir,
        reset_output_dir=False, num_valids=20, batch_size=16,
        num_epochs=num_epochs, log_every=2, eval_every_epochs=1, seed=3,
        cutout_size=None, download=False,
        child=MacroConfig(num_layers=3, out_filters=4, num_branches=4,
                          whole_channels=True, fixed_arc=None, keep_prob=0.9,
                          seed=3),
        train=TrainConfig(l2_reg=2.5e-4, clip_mode="norm", grad_bound=5.0,
                          lr=lr),
        lr_dec_every_epochs=100,
        controller=MacroControllerConfig(
            num_layers=3, num_branches=4, out_filters=4, tanh_constant=1.5,
            skip_target=0.4, skip_weight=0.8, seed=3),
        reinforce=ReinforceConfig(lr=1e-3, entropy_weight=1e-4,
                                  skip_weight=0.8, sync_replicas=True,
                                  num_aggregate=2),
        controller_training=True, controller_train_every=1,
        controller_train_steps=2, controller_num_aggregate=2)


def test_search_prints_controller_lines_and_records_the_architectures(
        fake_cifar, tmp_path, capsys):
    out_dir = str(tmp_path / "run")
    os.makedirs(out_dir)
    assert run_loop.train(search_config(fake_cifar, out_dir, 1)) == 0
    log = capsys.readouterr().out
    assert "Epoch 1: Training controller" in log
    assert "ctrl_step=0      loss=" in log and " bl=" in log
    assert "ctrl_step=1 " in log  # 4 runs of 2 aggregated arcs: 2 updates
    assert "Here are 10 architectures" in log
    assert log.count("val_acc=") == 10
    assert "valid_accuracy: " in log and "test_accuracy: " in log
    records = [json.loads(line) for line in
               open(os.path.join(out_dir, "arcs.jsonl"))]
    assert len(records) == 10
    for r in records:
        # The recorded string is a valid --child_fixed_arc for this space.
        arc = arcs.MacroArc.parse(r["arc"], 3, 4, True)
        assert r["ops"] == [arcs.MACRO_OPS[o] for o in arc.ops]
        assert r["epoch"] == 1 and 0.0 <= r["reward"] <= 1.0
        # Printed in the reference's layout, one line per layer.
        assert "\n".join(str(np.array(l)) for l in arc.layer_lines()) in log
    best = max(records, key=lambda r: r["reward"])
    assert open(os.path.join(out_dir, "best_arc.txt")).read().strip() == \
        best["arc"]
