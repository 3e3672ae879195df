"""--distribution_strategy=multi_worker_mirrored with real workers: two
processes on 127.0.0.1, each with its own TF_CONFIG, as a cluster with a
shared file system runs them. Their steps are one device's on the same
global batch, only the chief writes the run's folder, the run resumes on
one device, and a lost worker ends the other with one line.

One fixture runs every case in one pair of worker processes, one process on
one device, and one resuming process (tests/multi_worker_check.py), so the
entry-point runs pay for TensorFlow's start once per process.
"""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import tensorflow as tf

from src import distribute
from src.errors import RunStopped
from tests import multi_worker_check as check
from tests.ptb_fixtures import REPO_ROOT, main_env


def free_ports(count):
    """Ports free on 127.0.0.1 now (bound together, then released)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_config(ports, index):
    return json.dumps({
        "cluster": {"worker": ["127.0.0.1:{}".format(p) for p in ports]},
        "task": {"type": "worker", "index": index}})


def start_workers(args, ports):
    """Two processes of multi_worker_check `args`: workers 0 (the chief)
    and 1 of a cluster on `ports`. Their output goes to temporary files,
    not pipes: while `finish` waits for the chief, a full unread pipe would
    block worker 1's logging threads (and with them its heartbeats)."""
    command = [sys.executable, "-m", "tests.multi_worker_check", *args]
    procs = []
    for i in range(2):
        out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        p = subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=out, stderr=err, text=True,
            env=dict(main_env(), TF_CONFIG=tf_config(ports, i)))
        p.output_files = (out, err)
        procs.append(p)
    return procs


def run_check(args):
    command = [sys.executable, "-m", "tests.multi_worker_check", *args]
    result = subprocess.run(command, cwd=REPO_ROOT, env=main_env(), text=True,
                            capture_output=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def finish(procs, timeout):
    """[(status, stdout, stderr)] of processes, killed after `timeout`."""
    out = []
    deadline = time.time() + timeout
    for p in procs:
        try:
            p.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        texts = []
        for f in p.output_files:
            f.seek(0)
            texts.append(f.read())
            f.close()
        out.append((p.returncode, *texts))
    return out


def results(stdout):
    """{case: exit status} of multi_worker_check's RESULT lines."""
    return dict((case, int(status)) for case, status in
                re.findall(r"^RESULT (\w+) (-?\d+)$", stdout, re.M))


def scalars(folder, name):
    """{step: value} of scalar `name` in the event files of `folder`."""
    values = {}
    for f in sorted(os.listdir(folder)):
        if not f.startswith("events.out.tfevents"):
            continue
        for record in tf.data.TFRecordDataset(os.path.join(folder, f)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for v in event.summary.value:
                if v.tag == name:
                    values[event.step] = float(tf.make_ndarray(v.tensor))
    return values


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every case of multi_worker_check: the two workers' runs, the same on
    one device, and the workers' folders resumed on one device."""
    folder = str(tmp_path_factory.mktemp("multi_worker"))
    check.write_data(folder)
    workers = start_workers([folder, "workers", *check.CASES], free_ports(2))
    single = run_check([folder, "single", *check.CASES])
    (chief_rc, chief, chief_err), (other_rc, other, other_err) = \
        finish(workers, timeout=900)
    assert chief_rc == 0, (chief_err[-4000:] + "\nworker 1:\n"
                           + other_err[-4000:])
    assert other_rc == 0, other_err[-4000:]
    resumed = run_check([folder, "resume", *check.CASES])
    return {"folder": folder, "chief": chief, "other": other,
            "single": single, "resumed": resumed}


@pytest.mark.parametrize("case", check.CASES)
def test_two_workers_step_as_one_device_on_the_global_batch(runs, case):
    assert results(runs["chief"])[case] == 0
    assert results(runs["other"])[case] == 0
    assert results(runs["single"])[case] == 0
    # Each worker reads its half of the global batch one device reads
    # (BUILD.md, Several devices), so the first step differs from one
    # device's only by the order of float32 sums (each half's sums rounded,
    # then added once more across workers): about 1e-7 relative per op, a
    # few ops deep, far below 1e-5. The updates move the weights apart by
    # little, and two more steps stay within 1e-4 at these sizes. A search
    # child's candidate ops normalise each worker's rows (8 here) alone
    # (BUILD.md), so its steps are close, not equal: losses within 1e-3,
    # the gradient norm within 1e-2 (measured 2e-4 to 5e-4 and 5e-3).
    first, later, norm = {"macro_search": (1e-3, 1e-3, 1e-2)}.get(
        case, (1e-5, 1e-4, 1e-5))
    workers = os.path.join(runs["folder"], "workers", case)
    single = os.path.join(runs["folder"], "single", case)
    two, one = scalars(workers, "child/loss"), scalars(single, "child/loss")
    assert sorted(two)[:3] == [1, 2, 3] and sorted(one)[:3] == [1, 2, 3]
    np.testing.assert_allclose(two[1], one[1], rtol=first)
    np.testing.assert_allclose([two[2], two[3]], [one[2], one[3]],
                               rtol=later)
    np.testing.assert_allclose(scalars(workers, "child/grad_norm")[1],
                               scalars(single, "child/grad_norm")[1],
                               rtol=norm)


def test_only_the_chief_writes_the_run_folder(runs):
    for case in check.CASES:
        folder = os.path.join(runs["folder"], "workers", case)
        events = [f for f in os.listdir(folder)
                  if f.startswith("events.out.tfevents")]
        # The resumed run on one device adds its own events file.
        assert len(events) == 2, (case, events)
        assert os.path.exists(os.path.join(folder, "flags.txt"))
    # Worker 1 says where its own writes go, and that folder is gone.
    temporary = re.findall(r"this worker writes to (\S+) \(removed at exit\)",
                           runs["other"])
    assert len(temporary) == len(check.CASES)
    assert not any(os.path.exists(t) for t in temporary)
    assert "this worker writes to" not in runs["chief"]


def test_a_multi_worker_run_resumes_on_one_device(runs):
    assert results(runs["resumed"]) == {case: 0 for case in check.CASES}
    assert runs["resumed"].count("Resuming from") == len(check.CASES)
    for case in check.CASES:
        steps = scalars(os.path.join(runs["folder"], "workers", case),
                        "child/loss")
        # Epoch 2 goes on from the workers' last step.
        assert max(steps) > max(scalars(
            os.path.join(runs["folder"], "single", case), "child/loss"))


def test_a_lost_worker_ends_the_other_with_one_line_and_a_rerun_resumes(
        tmp_path):
    folder = str(tmp_path)
    check.write_data(folder)
    ports = free_ports(2)
    args = [folder, "long", "macro_fixed"]
    chief, other = start_workers(args, ports)
    # Wait until the first epoch's checkpoint is written, then kill worker 1.
    checkpoint = os.path.join(folder, "workers", "macro_fixed", "checkpoint")
    deadline = time.time() + 300
    while not os.path.exists(checkpoint) and time.time() < deadline:
        if chief.poll() is not None:
            break
        time.sleep(0.5)
    other.kill()
    (status, _, stderr), _ = finish([chief, other], timeout=180)
    assert status == 1, stderr[-4000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(
        "error: worker 1 of the cluster at 127.0.0.1:{} stopped answering"
        .format(ports[1])), last
    assert "start every worker again with the same command; it resumes " \
           "from " + os.path.join(folder, "workers", "macro_fixed",
                                  "model.ckpt-") in last
    assert "Traceback" not in stderr
    # The same command on both workers goes on from that checkpoint.
    restarted = finish(start_workers(args, free_ports(2)), timeout=600)
    for status, stdout, stderr in restarted:
        assert status == 0, stderr[-4000:]
        assert "Resuming from" in stdout


def lost(message, me=0):
    environ = {"TF_CONFIG": tf_config([1111, 2222, 3333], me)}
    return str(distribute.lost_worker(tf.errors.UnavailableError(
        None, None, message), "/nonexistent", environ))


def test_the_lost_worker_is_named_from_the_coordination_service_message():
    message = lost("The following tasks are unhealthy (stopped sending "
                   "heartbeats):\n/job:worker/replica:0/task:2\nThe tasks "
                   "have crashed. Check the task logs for an earlier error")
    assert message.startswith(
        "worker 2 of the cluster at 127.0.0.1:3333 stopped answering")
    assert message.endswith("no checkpoint was written yet, so it starts "
                            "afresh")
    # A peer named by a collective's error, this task left out.
    assert lost("Collective ops is aborted by: /job:worker/replica:0/task:0 "
                "and /job:worker/replica:0/task:1", me=1).startswith(
        "worker 0 of the cluster at 127.0.0.1:1111")
    assert lost("socket closed").startswith("a worker of the cluster stopped")
    assert isinstance(distribute.lost_worker(
        tf.errors.CancelledError(None, None, ""), "/nonexistent", {}),
        RunStopped)


def test_a_process_joins_one_cluster_and_its_runs_share_the_strategy(
        monkeypatch):
    joined = object()
    monkeypatch.setattr(distribute, "_JOINED", ("A", joined))
    monkeypatch.setenv("TF_CONFIG", "A")
    assert distribute.make_strategy("multi_worker_mirrored") is joined
    monkeypatch.setenv("TF_CONFIG", "B")
    with pytest.raises(distribute.UserError, match="one cluster per process"):
        distribute.make_strategy("multi_worker_mirrored")
