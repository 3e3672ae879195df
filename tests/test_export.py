"""SavedModel export (`src/export.py`): every kind of child and controller
exported, reloaded with tf.saved_model.load and compared with the in-memory
model; `python -m src.export` on real runs of both entry points (the run's
flagfile, our checkpoints, the PTB moving average); one-line errors; and the
exported models loaded and called in a process where no source of the
project can be imported."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from src import export, schedules
from src.checkpoints import variables_by_path
from src.macro import arcs
from src.cifar10 import data as cifar_data
from src.macro.child import FixedMacroChild, MacroConfig
from src.macro.controller import MacroController, MacroControllerConfig
from src.errors import UserError
from src.ptb.ptb_child import PtbChildConfig, SearchPtbChild
from src.ptb.ptb_controller import PtbController, PtbControllerConfig
from src.ptb.ptb_trainer import PtbTrainConfig, PtbTrainer
from tests.conftest import REPO_ROOT
from tests.in_process import call_main
from tests.test_reference_checkpoint import tiny_child, tiny_controller

ATOL = 1e-5


def run_module(module, *args, cwd=REPO_ROOT):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", module, *args],
                          capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)


def images(n=6, seed=0):
    return tf.constant(np.random.default_rng(seed).standard_normal(
        [n, 32, 32, 3]).astype(np.float32))


def uint8_images(n=5, seed=1):
    return tf.constant(np.random.default_rng(seed).integers(
        0, 256, [n, 32, 32, 3]).astype(np.uint8))


def loaded_variables(loaded):
    return {k: v.numpy() for k, v in loaded.child_variables.items()}


# -- choosing the entry point's flags ----------------------------------------

def test_the_space_comes_from_search_for_in_argv_or_nested_flagfiles(
        tmp_path):
    inner = tmp_path / "inner.flags"
    inner.write_text("# a comment\n--search_for=enas\n")
    outer = tmp_path / "outer.flags"
    outer.write_text("--batch_size=4\n--flagfile={}\n".format(inner))
    assert export.choose_space(["x", "--search_for=macro"]) == "cifar10"
    assert export.choose_space(["x", "--search_for", "micro"]) == "cifar10"
    assert export.choose_space(["x", "--flagfile=" + str(outer)]) == "ptb"
    # The last value wins, as absl reads them.
    assert export.choose_space(["x", "--flagfile=" + str(outer),
                                "--search_for=micro"]) == "cifar10"
    assert export.choose_space(["x", "--space=ptb"]) == "ptb"
    with pytest.raises(UserError, match="--search_for is not given"):
        export.choose_space(["x", "--batch_size=3"])
    with pytest.raises(UserError, match="'rhn' is unknown"):
        export.choose_space(["x", "--search_for=rhn"])
    with pytest.raises(UserError, match="cannot read --flagfile="):
        export.choose_space(["x", "--flagfile=" + str(tmp_path / "none")])


# -- every kind of model, exported and reloaded ------------------------------

def trained_statistics(child, kind):
    """Moves the batch-norm statistics away from their initial values."""
    kwargs = {}
    if child.searching:
        kwargs["arc"] = tf.zeros([child.cfg.arc_length], tf.int32)
    if kind.startswith("ptb"):
        tokens = tf.constant(np.arange(20).reshape(4, 5) % 30, tf.int32)
        child(tokens, child.zero_state(4), training=True, **kwargs)
    else:
        child(images(8, seed=5), training=True, **kwargs)


def per_channel_pair():
    child = tiny_child("macro_search_channels")
    ctrl = MacroController(MacroControllerConfig(
        num_layers=3, num_branches=6, out_filters=4, lstm_size=8,
        search_whole_channels=False, seed=3))
    return child, ctrl


@pytest.mark.parametrize("kind", ["macro_fixed", "micro_fixed"])
def test_fixed_cifar_child_signatures_equal_the_in_memory_child(
        kind, tmp_path):
    child = tiny_child(kind)
    trained_statistics(child, kind)
    mean, std = np.array([0.5, 0.4, 0.3]), np.array([0.2, 0.25, 0.3])
    names = export.save_export(str(tmp_path), child=child, mean=mean, std=std)
    assert names == ["predict_normalized", "serving_default"]
    loaded = tf.saved_model.load(str(tmp_path))
    x = images()
    got = loaded.signatures["predict_normalized"](images=x)
    assert list(got) == ["logits"]
    np.testing.assert_allclose(got["logits"],
                               child(x, training=False).logits, atol=ATOL)
    raw = uint8_images()
    served = loaded.signatures["serving_default"](images=raw)
    assert sorted(served) == ["logits", "probabilities"]
    want = child(cifar_data.normalize(raw, mean, std),
                 training=False).logits
    np.testing.assert_allclose(served["logits"], want, atol=ATOL)
    np.testing.assert_allclose(served["probabilities"],
                               tf.nn.softmax(want), atol=1e-6)
    record = json.loads((tmp_path / export.INFO_FILE).read_text())
    assert record["signatures"] == names
    np.testing.assert_allclose(record["mean"], mean)
    # Without the statistics, only predict_normalized.
    other = tmp_path / "plain"
    assert export.save_export(str(other), child=child) == [
        "predict_normalized"]


@pytest.mark.parametrize("kind", ["macro_search", "macro_search_channels",
                                  "micro_search"])
def test_search_cifar_child_serves_every_arc_with_the_reference_batch_norm(
        kind, tmp_path):
    if kind == "macro_search_channels":
        child, ctrl = per_channel_pair()
    else:
        child = tiny_child(kind)
        ctrl = tiny_controller(kind.split("_")[0])
    trained_statistics(child, kind)
    micro = kind == "micro_search"
    names = export.save_export(str(tmp_path), child=child, controller=ctrl,
                               batch_statistics=micro)
    assert names == ["log_prob", "predict_normalized_with_arc", "sample"]
    loaded = tf.saved_model.load(str(tmp_path))
    before = loaded_variables(loaded)
    fn = loaded.signatures["predict_normalized_with_arc"]
    x = images()
    outputs = []
    for _ in range(3):
        arc = ctrl.sample()["arc"]
        got = fn(images=x, arc=arc)["logits"]
        if micro:
            # The reference's valid graph: the batch's own statistics.
            want, _ = child(x, training=True, arc=arc)
        else:
            want = child(x, training=False, arc=arc).logits
        np.testing.assert_allclose(got, want, atol=ATOL)
        outputs.append(got.numpy())
    assert np.abs(outputs[0] - outputs[1]).max() > 1e-4 or \
        np.abs(outputs[0] - outputs[2]).max() > 1e-4
    if micro:
        # Batch statistics: the logits of 2 images depend on the others.
        part = fn(images=x[:2], arc=arc)["logits"]
        assert np.abs(part - outputs[-1][:2]).max() > 1e-4
    # Serving leaves the exported state alone.
    after = loaded_variables(loaded)
    for path in before:
        np.testing.assert_array_equal(after[path], before[path],
                                      err_msg=path)


@pytest.mark.parametrize("kind", ["ptb_fixed", "ptb_search"])
def test_ptb_child_signature_equals_the_in_memory_child(kind, tmp_path):
    child = tiny_child(kind)
    trained_statistics(child, kind)
    searching = kind == "ptb_search"
    ctrl = tiny_controller("ptb") if searching else None
    names = export.save_export(str(tmp_path), child=child, controller=ctrl)
    name = "predict_with_arc" if searching else "serving_default"
    assert name in names
    loaded = tf.saved_model.load(str(tmp_path))
    fn = loaded.signatures[name]
    rng = np.random.default_rng(2)
    state = tf.zeros([1, 3, 8])
    mem_state = state
    for window in range(2):
        tokens = tf.constant(rng.integers(0, 30, [3, 7]), tf.int32)
        kwargs = {}
        if searching:
            kwargs["arc"] = ctrl.sample()["arc"]
        got = fn(tokens=tokens, state=state, **kwargs)
        assert sorted(got) == ["logits", "state"]
        assert got["logits"].shape == (3, 7, 30)
        outputs, mem_state = child(tokens, mem_state, training=False,
                                   **kwargs)
        np.testing.assert_allclose(got["logits"], child.logits(outputs),
                                   atol=ATOL)
        np.testing.assert_allclose(got["state"], mem_state, atol=ATOL)
        state = got["state"]


@pytest.mark.parametrize("kind", ["macro", "micro", "ptb"])
def test_controller_signatures_equal_the_in_memory_controller(kind, tmp_path):
    ctrl = tiny_controller(kind)
    assert export.save_export(str(tmp_path), controller=ctrl) == [
        "log_prob", "sample"]
    loaded = tf.saved_model.load(str(tmp_path))
    macro = kind == "macro"
    extra = ["skip_count", "skip_penalty"] if macro else []
    arcs_seen = set()
    for _ in range(6):
        sample = loaded.signatures["sample"]()
        assert sorted(sample) == sorted(["arc", "entropy", "log_prob"]
                                        + extra)
        arc = sample["arc"]
        arcs_seen.add(tuple(arc.numpy()))
        scored = loaded.signatures["log_prob"](arc=arc)
        assert sorted(scored) == sorted(["entropy", "log_prob"] + extra)
        want = ctrl.log_prob(arc)
        assert float(scored["log_prob"]) < 0
        for key in scored:
            np.testing.assert_allclose(scored[key], want[key], atol=1e-6,
                                       err_msg=key)
            np.testing.assert_allclose(sample[key], want[key], atol=1e-6,
                                       err_msg=key)
    # The sampler's state lives in the SavedModel: each call draws anew.
    assert len(arcs_seen) > 1


def test_a_controller_only_checkpoint_restores_the_controller(tmp_path):
    ctrl = tiny_controller("ptb", seed=1)
    tf.train.Checkpoint(controller=variables_by_path(ctrl)).save(
        str(tmp_path / "model.ckpt"))
    path = tf.train.latest_checkpoint(str(tmp_path))
    fresh = tiny_controller("ptb", seed=2)
    steps = export.restore_run_checkpoint(path, controller=fresh)
    assert steps == {"global_step": None, "controller_step": None}
    for a, b in zip(ctrl.weights, fresh.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(UserError, match="does not match these flags"):
        export.restore_run_checkpoint(path, child=tiny_child("ptb_search"),
                                      controller=fresh)


# -- python -m src.export on real runs ---------------------------------------

CIFAR_ARC = "0 5 1 4 0 1"


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory):
    """A one-epoch fixed macro run of the entry point on tiny fake data,
    exported from its flagfile."""
    from tests.cifar_fixtures import write_fake_cifar
    root = tmp_path_factory.mktemp("cifar_export")
    data = write_fake_cifar(str(root / "data"), num_per_batch=20,
                            num_test=20)
    out, exported = str(root / "run"), str(root / "exported")
    trained = run_module(
        "src.cifar10.main", "--search_for=macro", "--data_path=" + data,
        "--output_dir=" + out, "--child_fixed_arc=" + CIFAR_ARC,
        "--child_num_layers=3", "--child_out_filters=4", "--batch_size=32",
        "--num_epochs=1", "--nocontroller_training",
        "--controller_search_whole_channels")
    assert trained.returncode == 0, trained.stderr[-3000:]
    result = run_module("src.export",
                        "--flagfile=" + os.path.join(out, "flags.txt"),
                        "--export_dir=" + exported)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"data": data, "run": out, "exported": exported,
            "stdout": result.stdout}


def test_a_cifar_run_exports_from_its_flagfile(cifar_run):
    assert "Exported child from {}/model.ckpt-4 (step 4)".format(
        cifar_run["run"]) in cifar_run["stdout"]
    child = FixedMacroChild(MacroConfig(
        num_layers=3, out_filters=4, num_branches=4,
        fixed_arc=arcs.MacroArc.parse(CIFAR_ARC, 3, 4, True)))
    child(tf.zeros([1, 32, 32, 3]))
    export.restore_run_checkpoint(
        tf.train.latest_checkpoint(cifar_run["run"]), child=child)
    data = cifar_data.read_data(cifar_run["data"], num_valids=0,
                                log=lambda *_: None)
    loaded = tf.saved_model.load(cifar_run["exported"])
    raw = tf.constant(data.images["test"][:8])
    served = loaded.signatures["serving_default"](images=raw)
    # The run's mean and std are baked in.
    want = child(tf.constant(data.normalized("test")[:8]),
                 training=False).logits
    np.testing.assert_allclose(served["logits"], want, atol=ATOL)
    got = loaded.signatures["predict_normalized"](
        images=tf.constant(data.normalized("test")[:8]))
    np.testing.assert_allclose(got["logits"], want, atol=ATOL)
    record = json.loads(open(os.path.join(cifar_run["exported"],
                                          export.INFO_FILE)).read())
    assert record["global_step"] == 4 and record["what"] == "child"
    np.testing.assert_allclose(record["mean"], data.mean)


PTB_ARGS = ["--search_for=enas", "--batch_size=4", "--child_bptt_steps=5",
            "--child_rhn_depth=3", "--child_num_layers=1",
            "--child_lstm_hidden_size=8", "--child_lr=0.5", "--log_every=50",
            "--num_epochs=1", "--controller_training",
            "--controller_train_every=1", "--controller_train_steps=2",
            "--controller_tanh_constant=2.5", "--controller_temperature=5.0",
            "--child_optim_moving_average=0.9", "--nodownload"]


@pytest.fixture(scope="module")
def ptb_run(tmp_path_factory):
    """A one-epoch PTB search run with a moving average of the weights,
    exported from its flagfile (child and controller by default)."""
    root = tmp_path_factory.mktemp("ptb_export")
    rng = np.random.default_rng(0)
    words = ["w{:02d}".format(i) for i in range(30)]
    for split, lines in (("train", 40), ("valid", 30), ("test", 20)):
        (root / split).write_text("".join(
            " " + " ".join(rng.choice(words, rng.integers(3, 9))) + " \n"
            for _ in range(lines)))
    out, exported = str(root / "run"), str(root / "exported")
    trained = run_module("src.ptb.main", *PTB_ARGS,
                         "--data_path=" + str(root),
                         "--output_dir=" + out)
    assert trained.returncode == 0, trained.stderr[-3000:]
    result = run_module("src.export",
                        "--flagfile=" + os.path.join(out, "flags.txt"),
                        "--export_dir=" + exported)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"run": out, "exported": exported, "stdout": result.stdout}


def test_a_ptb_search_run_exports_its_averaged_child_and_controller(ptb_run):
    assert "Exported both from" in ptb_run["stdout"]
    path = tf.train.latest_checkpoint(ptb_run["run"])
    vocab = export.ptb_vocab_size(path, reference=False)
    child = SearchPtbChild(PtbChildConfig(vocab_size=vocab, hidden_size=8,
                                          num_layers=1, rhn_depth=3,
                                          batch_size=4, bptt_steps=5))
    ctrl = PtbController(PtbControllerConfig(rhn_depth=3, lstm_size=100,
                                             tanh_constant=2.5,
                                             temperature=5.0))
    trainer = PtbTrainer(child, PtbTrainConfig(lr=schedules.LrConfig(),
                                               moving_average=0.9),
                         arc_fn=lambda: None)
    shadows = trainer.checkpoint_objects()["moving_average"]
    steps = export.restore_run_checkpoint(
        path, child=child, controller=ctrl,
        objects={"moving_average": shadows})
    assert steps["global_step"] > 0 and steps["controller_step"] > 0
    loaded = tf.saved_model.load(ptb_run["exported"])
    assert sorted(loaded.signatures) == ["log_prob", "predict_with_arc",
                                         "sample"]
    tokens = tf.constant(np.arange(12).reshape(2, 6) % vocab, tf.int32)
    state = tf.zeros([1, 2, 8])
    arc = loaded.signatures["sample"]()["arc"]
    got = loaded.signatures["predict_with_arc"](tokens=tokens, state=state,
                                                arc=arc)
    with trainer.averaged_weights():
        outputs, _ = child(tokens, state, arc=arc)
        averaged = child.logits(outputs)
    live = child.logits(child(tokens, state, arc=arc)[0])
    np.testing.assert_allclose(got["logits"], averaged, atol=ATOL)
    # What was exported is the average, not the live weights.
    assert np.abs(averaged - live).max() > 1e-4
    scored = loaded.signatures["log_prob"](arc=arc)
    np.testing.assert_allclose(scored["log_prob"], ctrl.log_prob(arc)[
        "log_prob"], atol=1e-6)


@pytest.mark.parametrize("args, fragment", [
    (["--batch_size=3"], "--search_for is not given"),
    (["--search_for=macro", "--child_fixed_arc=" + CIFAR_ARC,
      "--child_num_layers=3", "--nocontroller_training",
      "--controller_search_whole_channels", "--export_what=controller",
      "--reference_checkpoint=/nowhere"], "needs a controller"),
    (["--search_for=enas", "--export_dir=/tmp/x"], "no source: pass"),
    (["--search_for=enas", "--reference_checkpoint=/nowhere/model.ckpt-1",
      "--export_dir=/tmp/x"], "/nowhere/model.ckpt-1.index does not exist"),
])
def test_bad_input_gets_one_line_and_exit_status_2(args, fragment, capfd):
    # In this process (the export-dir test below takes `python -m`).
    result = call_main("src.export", args, capfd)
    assert result.returncode == 2, result.stderr[-2000:]
    assert fragment in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_an_export_dir_in_use_is_replaced_only_when_asked(cifar_run,
                                                          tmp_path):
    args = ["--flagfile=" + os.path.join(cifar_run["run"], "flags.txt"),
            "--export_dir=" + cifar_run["exported"]]
    result = run_module("src.export", *args)
    assert result.returncode == 2
    assert "pass --export_overwrite" in result.stderr
    (tmp_path / "notes.txt").write_text("mine")
    result = run_module("src.export", args[0], "--export_overwrite",
                        "--export_dir=" + str(tmp_path))
    assert result.returncode == 2
    assert "choose an empty or new folder" in result.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"


NO_SOURCE_SCRIPT = """
import importlib.util, json, sys
import numpy as np
import tensorflow as tf
assert importlib.util.find_spec("src") is None, "project source importable"
cifar = tf.saved_model.load(sys.argv[1])
ptb = tf.saved_model.load(sys.argv[2])
raw = np.load(sys.argv[3])
out = {}
out["served"] = cifar.signatures["serving_default"](
    images=tf.constant(raw["images"]))["logits"].numpy()
out["ptb"] = ptb.signatures["predict_with_arc"](
    tokens=tf.constant(raw["tokens"]), state=tf.constant(raw["state"]),
    arc=tf.constant(raw["arc"]))["logits"].numpy()
out["scored"] = ptb.signatures["log_prob"](
    arc=tf.constant(raw["arc"]))["log_prob"].numpy()
out["sampled"] = ptb.signatures["sample"]()["arc"].numpy()
np.savez(sys.argv[4], **out)
print("modules:", json.dumps(sorted(m for m in sys.modules
                                    if m.split(".")[0] in ("src", "tests"))))
"""


def test_exported_models_run_where_no_project_source_is_importable(
        cifar_run, ptb_run, tmp_path):
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    raw = {"images": np.random.default_rng(3).integers(
               0, 256, [4, 32, 32, 3]).astype(np.uint8),
           "tokens": (np.arange(10).reshape(2, 5) % 7).astype(np.int32),
           "state": np.zeros([1, 2, 8], np.float32),
           "arc": np.array([1, 0, 0, 0, 1], np.int32)}
    np.savez(cwd / "inputs.npz", **raw)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    result = subprocess.run(
        [sys.executable, "-c", NO_SOURCE_SCRIPT, cifar_run["exported"],
         ptb_run["exported"], "inputs.npz", "outputs.npz"],
        capture_output=True, text=True, cwd=str(cwd), env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "modules: []" in result.stdout
    got = np.load(cwd / "outputs.npz")
    cifar = tf.saved_model.load(cifar_run["exported"])
    ptb = tf.saved_model.load(ptb_run["exported"])
    np.testing.assert_allclose(got["served"], cifar.signatures[
        "serving_default"](images=tf.constant(raw["images"]))["logits"],
        atol=ATOL)
    np.testing.assert_allclose(got["ptb"], ptb.signatures[
        "predict_with_arc"](tokens=tf.constant(raw["tokens"]),
                            state=tf.constant(raw["state"]),
                            arc=tf.constant(raw["arc"]))["logits"],
        atol=ATOL)
    np.testing.assert_allclose(got["scored"], ptb.signatures["log_prob"](
        arc=tf.constant(raw["arc"]))["log_prob"], atol=1e-6)
    assert got["sampled"].shape == (5,)
