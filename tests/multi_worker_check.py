"""Runs entry points in one process, one case after the other, for
tests/test_multi_worker.py.

    python -m tests.multi_worker_check FOLDER MODE CASE [CASE ...]

MODE `workers`: every case with --distribution_strategy=multi_worker_mirrored
(the cluster of TF_CONFIG; both workers run this same command, each with its
TF_CONFIG) into FOLDER/workers/CASE; `single`: the same flags on one device
into FOLDER/single/CASE; `resume`: the workers' folders again on one device
with one more epoch; `long`: as `workers` for 4 epochs, a run to stop (the
epochs after the first take seconds of collective steps, saves and
evaluations, far longer than the test takes to stop a worker once the first
checkpoint is written).
Each case prints `RESULT CASE STATUS` after its run; the exit status is
the first case's that was not 0.
The data sets are written once into FOLDER by `write_data` (the test calls it
before starting the workers).
"""

import os
import sys

from tests.cifar_fixtures import write_fake_cifar
from tests.ptb_fixtures import write_tiny_ptb

def cifar_common(folder):
    # 80 training images: 16 held out, 4 steps of 16 an epoch.
    return ["--data_path=" + os.path.join(folder, "cifar"), "--seed=3",
            "--num_valids=16", "--batch_size=16", "--log_every=1",
            "--deterministic", "--nodownload", "--child_out_filters=4"]


def case_args(case, folder):
    """(entry point module, its flags without --output_dir) of a case."""
    if case == "macro_fixed":
        return "src.cifar10.main", cifar_common(folder) + [
            "--search_for=macro", "--child_num_layers=3",
            "--child_num_branches=4", "--child_fixed_arc=0 3 0 0 1 0",
            "--nocontroller_training", "--controller_search_whole_channels"]
    if case == "macro_search":
        return "src.cifar10.main", cifar_common(folder) + [
            "--search_for=macro", "--child_num_layers=2",
            "--child_num_branches=4", "--controller_search_whole_channels",
            "--controller_training", "--controller_train_steps=1",
            "--controller_num_aggregate=2", "--controller_train_every=1"]
    if case == "ptb_fixed":
        return "src.ptb.main", [
            "--search_for=enas", "--seed=3", "--nodownload",
            "--data_path=" + os.path.join(folder, "ptb"), "--batch_size=4",
            "--child_bptt_steps=5", "--child_rhn_depth=3",
            "--child_num_layers=1", "--child_lstm_hidden_size=8",
            "--child_lstm_e_keep=0.8", "--child_lstm_x_keep=0.8",
            "--child_lstm_h_keep=0.8", "--child_lstm_o_keep=0.8",
            "--child_lr=0.5", "--child_l2_reg=1e-7", "--log_every=1",
            "--child_fixed_arc=0 0 1 1 2", "--nocontroller_training",
            # One device would compile the step with XLA, which draws other
            # dropout masks; a strategy runs without XLA.
            "--deterministic", "--jit_compile=false"]
    raise ValueError("unknown case " + case)


# No micro child: two workers' steps equal a `mirrored` step on two logical
# devices bit for bit (BUILD.md, Several devices), and tests/test_distribute.py
# checks the micro child (aux head, drop-path) there; a micro case here cost
# a third of this file's time (its tracing, in four processes).
CASES = ("macro_fixed", "macro_search", "ptb_fixed")


def write_data(folder):
    write_fake_cifar(os.path.join(folder, "cifar"), num_per_batch=16,
                     num_test=16)
    os.makedirs(os.path.join(folder, "ptb"), exist_ok=True)
    write_tiny_ptb(os.path.join(folder, "ptb"))


def main(folder, mode, cases):
    import importlib
    worst = 0
    for case in cases:
        module, args = case_args(case, folder)
        if mode == "workers":
            out = os.path.join(folder, "workers", case)
            extra = ["--num_epochs=1",
                     "--distribution_strategy=multi_worker_mirrored"]
        elif mode == "single":
            out = os.path.join(folder, "single", case)
            extra = ["--num_epochs=1"]
        elif mode == "resume":
            out = os.path.join(folder, "workers", case)
            extra = ["--num_epochs=2"]
        elif mode == "long":
            out = os.path.join(folder, "workers", case)
            extra = ["--num_epochs=4",
                     "--distribution_strategy=multi_worker_mirrored"]
        else:
            raise ValueError("unknown mode " + mode)
        entry = importlib.import_module(module)
        status = entry.call([module] + args + extra + ["--output_dir=" + out])
        sys.stdout.flush()
        print("RESULT {} {}".format(case, status), flush=True)
        worst = worst or status
    return worst


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
