"""Tiny CIFAR-10 files in the official python format, for tests."""

import hashlib
import io
import os
import pickle
import tarfile

import numpy as np

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
LABEL_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
               "horse", "ship", "truck")


def write_batch(path, images, labels, batch_label="fake batch"):
    """Writes one batch pickle like the official ones (protocol 2, bytes keys).

    images: uint8 [n, 3072] rows, channel-major (all red, green, then blue
    values); labels: ints.
    """
    batch = {
        b"batch_label": batch_label.encode(),
        b"labels": [int(v) for v in labels],
        b"data": np.asarray(images),
        b"filenames": [f"fake_{i:05d}.png".encode()
                       for i in range(len(labels))],
    }
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)


def write_fake_cifar(folder, num_per_batch=20, num_test=20, seed=0):
    """Writes data_batch_1..5, test_batch and batches.meta with random uint8
    images and labels 0..9 into `folder` (created if needed); returns it."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    sizes = [(name, num_per_batch) for name in TRAIN_FILES]
    sizes.append((TEST_FILE, num_test))
    for i, (name, n) in enumerate(sizes):
        images = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n)
        write_batch(os.path.join(folder, name), images, labels,
                    batch_label=f"fake batch {i + 1}")
    meta = {
        b"num_cases_per_batch": num_per_batch,
        b"label_names": [name.encode() for name in LABEL_NAMES],
        b"num_vis": 3072,
    }
    with open(os.path.join(folder, META_FILE), "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return str(folder)


def make_cifar_archive(folder, num_per_batch=20, num_test=20, seed=0,
                       name="cifar-10-python.tar.gz"):
    """Writes a tiny cifar-10-python.tar.gz into `folder`, its files under
    cifar-10-batches-py/ like the official archive (plus a member outside it,
    which extraction must skip). Returns (archive path, md5 hex digest)."""
    os.makedirs(folder, exist_ok=True)
    source = os.path.join(folder, "cifar-10-batches-py")
    write_fake_cifar(source, num_per_batch, num_test, seed)
    path = os.path.join(folder, name)
    with tarfile.open(path, "w:gz") as tar:
        tar.add(source, arcname="cifar-10-batches-py")
        extra = b"not part of the data\n"
        info = tarfile.TarInfo("README_outside.txt")
        info.size = len(extra)
        tar.addfile(info, io.BytesIO(extra))
    with open(path, "rb") as f:
        md5 = hashlib.md5(f.read()).hexdigest()
    return path, md5
