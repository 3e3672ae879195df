"""Shared test set-up: quiet, deterministic TensorFlow and tiny fixtures."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tests.cifar_fixtures import write_fake_cifar  # noqa: E402

tf.config.experimental.enable_op_determinism()

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
REFERENCE_GOLDENS = SHARED / "reference" / "goldens"
ENAS_LM_GOLDENS = SHARED / "reference" / "enas_lm" / "goldens"


@pytest.fixture
def fake_cifar(tmp_path):
    """A tiny CIFAR-10 folder: 5 x 20 training and 20 test images."""
    return write_fake_cifar(str(tmp_path / "cifar"), num_per_batch=20,
                            num_test=20)


def golden_case(name):
    """Path of a reference golden case, or skip when ../shared is absent."""
    path = REFERENCE_GOLDENS / name
    if not path.is_dir():
        pytest.skip("reference goldens not found at {} (they live in the "
                    "steering repo's shared/ folder)".format(path))
    return path


def enas_lm_golden(name):
    """(path, inputs, outputs) of an enas_lm golden case (its inputs.npz and
    outputs.npz as dicts of arrays), or skip when ../shared is absent."""
    import numpy as np
    path = ENAS_LM_GOLDENS / name
    if not path.is_dir():
        pytest.skip("enas_lm goldens not found at {}".format(path))
    return (path, dict(np.load(path / "inputs.npz")),
            dict(np.load(path / "outputs.npz")))
