"""CIFAR-10: reading the official python pickles, download, tf.data pipelines.

The splits are kept as uint8 NHWC arrays (150 MB for the full set instead of
600 MB as float32); pipelines normalise inside their map functions with the
same float32 operations as `CifarData.normalized`, so both give bit-identical
values. Model inputs are always NHWC float32.
"""

import dataclasses
import os
import pickle
import tarfile

import numpy as np
import tensorflow as tf

from src.download import DownloadFailed, fetch, remove_quietly
from src.errors import UserError

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
TRAIN_FILES = (
    "data_batch_1",
    "data_batch_2",
    "data_batch_3",
    "data_batch_4",
    "data_batch_5",
)
TEST_FILES = ("test_batch",)
DATA_FILES = TRAIN_FILES + TEST_FILES
# Folder inside the official archive that holds the batch files.
ARCHIVE_DIR = "cifar-10-batches-py"

IMAGE_SIZE = 32
NUM_CHANNELS = 3
NUM_CLASSES = 10
PAD = 4
SPLITS = ("train", "valid", "test")

_DOWNLOAD_SCRIPT = "python data/download_cifar10.py --data_path={}"
_CHUNK = 1 << 20


def _one_line(text):
    """`text` with every run of whitespace (newlines included) as one space."""
    return " ".join(str(text).split())


@dataclasses.dataclass
class CifarData:
    """Raw CIFAR-10 splits kept as uint8 (memory) plus the training statistics.

    images: "train", "valid", "test" -> uint8 [N, 32, 32, 3] NHWC; "valid" is
        None when no images were held out.
    labels: the same keys -> int32 [N] (None for an absent "valid").
    mean, std: float32 [3], per-channel statistics of train images / 255,
        computed exactly like the reference.
    """

    images: dict
    labels: dict
    mean: np.ndarray
    std: np.ndarray
    # uint8 / int32 tensors per split, built once so that every epoch's
    # pipeline shares them instead of copying the arrays again.
    _tensors: dict = dataclasses.field(
        default_factory=dict, init=False, repr=False, compare=False)

    def num_examples(self, split):
        """Number of images in `split`; 0 for an absent validation split."""
        _check_split_name(split)
        images = self.images.get(split)
        return 0 if images is None else int(images.shape[0])

    def normalized(self, split):
        """float32 [N, 32, 32, 3]: (images / 255 - mean) / std, like the
        reference's arrays."""
        images = _require_split(self, split)
        x = images.astype(np.float32) / np.float32(255.0)
        return (x - self.mean) / self.std


def _check_split_name(split):
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")


def _require_split(data, split):
    """The uint8 images of `split`, or UserError when the split is empty."""
    _check_split_name(split)
    images = data.images.get(split)
    if images is None:
        raise UserError(
            f"there is no {split!r} split because --num_valids is 0; "
            "pass --num_valids > 0 to hold out validation images")
    return images


# ---------------------------------------------------------------------------
# Reading.


def _files_message(data_path):
    """One clause naming the expected files, the folder and how to get them."""
    hint = ""
    nested = os.path.join(data_path, ARCHIVE_DIR)
    if os.path.isfile(os.path.join(nested, DATA_FILES[0])):
        hint = f" (they seem to be in {nested}: pass --data_path={nested})"
    return (
        f"{data_path} must hold the CIFAR-10 python files "
        f"{', '.join(DATA_FILES)}{hint}; get them with "
        f"`{_DOWNLOAD_SCRIPT.format(data_path)}` or download {CIFAR10_URL} "
        f"and extract the files of its {ARCHIVE_DIR}/ folder there")


def _present_files(data_path):
    return [name for name in DATA_FILES
            if os.path.isfile(os.path.join(data_path, name))]


def _load_batch(path):
    """Reads one batch pickle; returns uint8 [n, 3072] and int32 [n]."""
    try:
        with open(path, "rb") as f:
            # The official files are Python-2 pickles: "bytes" keeps their
            # str keys as bytes and lets numpy restore its arrays.
            batch = pickle.load(f, encoding="bytes")
    except Exception as e:  # Any unpickling failure means a damaged file.
        raise UserError(
            f"cannot read CIFAR-10 file {path} ({type(e).__name__}: "
            f"{_one_line(e)}); it is corrupt or truncated: delete it and run "
            f"`{_DOWNLOAD_SCRIPT.format(os.path.dirname(path))}`") from None

    def field(key):
        if isinstance(batch, dict):
            for k in (key.encode(), key):
                if k in batch:
                    return batch[k]
        raise UserError(
            f"CIFAR-10 file {path} has no {key!r} entry; it is not a "
            "CIFAR-10 python batch: replace it with the official file")

    images = np.asarray(field("data"))
    labels = np.asarray(field("labels"))
    row = IMAGE_SIZE * IMAGE_SIZE * NUM_CHANNELS
    if images.ndim != 2 or images.shape[1] != row:
        raise UserError(
            f"CIFAR-10 file {path} holds images of shape {images.shape}, "
            f"expected [N, {row}]: replace it with the official file")
    if images.dtype != np.uint8:
        if (not np.issubdtype(images.dtype, np.integer)
                or images.size and (images.min() < 0 or images.max() > 255)):
            raise UserError(
                f"CIFAR-10 file {path} holds {images.dtype} pixels, expected "
                "uint8: replace it with the official file")
        images = images.astype(np.uint8)
    if (labels.shape != (images.shape[0],)
            or not np.issubdtype(labels.dtype, np.integer)
            or labels.size and (labels.min() < 0
                                or labels.max() >= NUM_CLASSES)):
        raise UserError(
            f"CIFAR-10 file {path} holds labels of shape {labels.shape} for "
            f"{images.shape[0]} images, expected one class in 0..9 per image:"
            " replace it with the official file")
    return images, labels.astype(np.int32)


def _read_files(data_path, names, log):
    """Concatenated uint8 [N, 3072] rows (CHW order) and int32 [N] labels."""
    images, labels = [], []
    for name in names:
        log(name)
        batch_images, batch_labels = _load_batch(os.path.join(data_path, name))
        images.append(batch_images)
        labels.append(batch_labels)
    return np.concatenate(images, axis=0), np.concatenate(labels, axis=0)


def _to_nhwc(rows):
    """uint8 [N, 3072] rows in CHW order -> contiguous uint8 [N, 32, 32, 3]."""
    images = rows.reshape(-1, NUM_CHANNELS, IMAGE_SIZE, IMAGE_SIZE)
    return np.ascontiguousarray(images.transpose(0, 2, 3, 1))


def _reference_stats(train_rows):
    """float32 [3] mean and std, summed in the same order as the reference.

    numpy's float32 reductions depend on the memory layout, so this rebuilds
    the reference's layout (float32 CHW rows seen through an NHWC transpose)
    rather than reducing the uint8 NHWC copy; the float32 array is transient.
    """
    x = train_rows.astype(np.float32) / 255.0
    x = np.reshape(x, [-1, NUM_CHANNELS, IMAGE_SIZE, IMAGE_SIZE])
    x = np.transpose(x, [0, 2, 3, 1])
    mean = np.mean(x, axis=(0, 1, 2), keepdims=True)
    std = np.std(x, axis=(0, 1, 2), keepdims=True)
    return mean, std


def read_data(data_path, num_valids=5000, download=False, log=print,
              download_url=CIFAR10_URL, download_md5=CIFAR10_MD5):
    """Reads CIFAR-10 from `data_path` into a `CifarData`.

    The last `num_valids` training images become the "valid" split (none when
    num_valids is 0 or None). When `data_path` holds none of the batch files
    and `download` is set, the official archive is fetched first (the URL and
    md5 can be overridden).
    """
    data_path = os.fspath(data_path)
    present = _present_files(data_path)
    if not present:
        if not download:
            where = ("does not exist" if not os.path.isdir(data_path)
                     else "holds no CIFAR-10 files")
            raise UserError(
                f"CIFAR-10 data folder {data_path} {where}: "
                + _files_message(data_path))
        download_cifar10(data_path, url=download_url, md5=download_md5,
                         log=log)
    elif len(present) < len(DATA_FILES):
        missing = [n for n in DATA_FILES if n not in present]
        raise UserError(
            f"CIFAR-10 files missing from {data_path}: {', '.join(missing)}; "
            + _files_message(data_path))

    num_valids = int(num_valids or 0)
    if num_valids < 0:
        raise UserError(
            f"--num_valids={num_valids} is negative; pass 0 or more")

    log("-" * 80)
    log("Reading data")
    train_rows, train_labels = _read_files(data_path, TRAIN_FILES, log)
    num_train = train_rows.shape[0]
    if num_valids >= num_train:
        raise UserError(
            f"--num_valids={num_valids} leaves no training images: {data_path}"
            f" holds only {num_train}; pass a smaller --num_valids")

    images, labels = {}, {}
    if num_valids:
        images["valid"] = _to_nhwc(train_rows[-num_valids:])
        labels["valid"] = train_labels[-num_valids:]
        train_rows = train_rows[:-num_valids]
        train_labels = train_labels[:-num_valids]
    else:
        images["valid"], labels["valid"] = None, None
    images["train"] = _to_nhwc(train_rows)
    labels["train"] = train_labels

    test_rows, test_labels = _read_files(data_path, TEST_FILES, log)
    images["test"] = _to_nhwc(test_rows)
    labels["test"] = test_labels

    log("Prepropcess: [subtract mean], [divide std]")  # sic, as the reference
    mean, std = _reference_stats(train_rows)
    log("mean: {}".format(np.reshape(mean * 255.0, [-1])))
    log("std: {}".format(np.reshape(std * 255.0, [-1])))
    return CifarData(images=images, labels=labels,
                     mean=np.reshape(mean, [-1]), std=np.reshape(std, [-1]))


# ---------------------------------------------------------------------------
# Download.


def _download_error(data_path, url, reason):
    return UserError(
        f"could not download CIFAR-10 from {url} ({_one_line(reason)}); "
        + _files_message(data_path))


def download_cifar10(data_path, url=CIFAR10_URL, md5=CIFAR10_MD5, log=print):
    """Downloads the CIFAR-10 archive and extracts its batch files flat into
    `data_path` (data_path/data_batch_1, ...). Checks `md5` unless it is None.
    Returns `data_path`.
    """
    data_path = os.fspath(data_path)
    try:
        os.makedirs(data_path, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"cannot create CIFAR-10 data folder {data_path} "
            f"({_one_line(e)}): pass a writable --data_path") from None
    archive = os.path.join(data_path, os.path.basename(CIFAR10_URL))
    partial = archive + ".part"
    log(f"Downloading CIFAR-10 from {url} into {data_path}")
    try:
        with open(partial, "wb") as out:
            got = fetch(url, out, log)
    except (DownloadFailed, OSError) as e:
        remove_quietly(partial)
        raise _download_error(data_path, url,
                              getattr(e, "reason", e)) from None
    if md5 is not None and got != md5.lower():
        remove_quietly(partial)
        raise _download_error(
            data_path, url,
            f"md5 {got} differs from the expected {md5}: the "
            "download is damaged or not the CIFAR-10 archive")

    extracted = []
    try:
        with tarfile.open(partial, "r:gz") as tar:
            for member in tar.getmembers():
                parts = member.name.replace("\\", "/").strip("/").split("/")
                # Only regular files directly under cifar-10-batches-py/;
                # taking the basename alone keeps writes inside data_path.
                if (not member.isfile() or len(parts) != 2
                        or parts[0] != ARCHIVE_DIR
                        or parts[1] in ("", ".", "..")):
                    continue
                target = os.path.join(data_path, parts[1])
                source = tar.extractfile(member)
                with source, open(target + ".part", "wb") as out:
                    while True:
                        chunk = source.read(_CHUNK)
                        if not chunk:
                            break
                        out.write(chunk)
                os.replace(target + ".part", target)
                extracted.append(parts[1])
    except (tarfile.TarError, OSError, EOFError) as e:
        raise _download_error(
            data_path, url, f"cannot extract the archive: {e}") from None
    finally:
        remove_quietly(partial)
    missing = [n for n in DATA_FILES if n not in extracted]
    if missing:
        raise _download_error(
            data_path, url,
            f"the archive lacks {ARCHIVE_DIR}/{', '.join(missing)}")
    log(f"Extracted {', '.join(sorted(extracted))} into "
        f"{os.path.abspath(data_path)}")
    return data_path


# ---------------------------------------------------------------------------
# Image operations (batched, NHWC float32).


def normalize(images, mean, std):
    """uint8 [..., 3] -> float32 (images / 255 - mean) / std, bit-identical to
    `CifarData.normalized` (same float32 operations in the same order)."""
    x = tf.cast(images, tf.float32) / tf.constant(255.0, tf.float32)
    return (x - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def pad_crop_flip(images, offsets, flips):
    """Reference augmentation with given randomness.

    images: float32 [B, 32, 32, 3]; offsets: int [B, 2], (row, col) of each
    crop window in the 4-pixel zero-padded [40, 40] image, each in [0, 8];
    flips: bool [B], mirror left-right. Returns float32 [B, 32, 32, 3].
    """
    padded = tf.pad(images, [[0, 0], [PAD, PAD], [PAD, PAD], [0, 0]])
    window = tf.range(IMAGE_SIZE, dtype=tf.int32)
    offsets = tf.cast(offsets, tf.int32)
    rows = offsets[:, 0:1] + window  # [B, 32]
    cols = offsets[:, 1:2] + window
    # Gathers only move values, so the crop is exact.
    x = tf.gather(padded, rows, axis=1, batch_dims=1)  # [B, 32, 40, 3]
    x = tf.gather(x, cols, axis=2, batch_dims=1)  # [B, 32, 32, 3]
    flips = tf.reshape(tf.cast(flips, tf.bool), [-1, 1, 1, 1])
    return tf.where(flips, tf.reverse(x, axis=[2]), x)


def cutout(images, starts, size):
    """Zeroes a `size` x `size` square per image, the reference's way.

    The reference pads a ones mask by [size + start, 32 - start] and crops
    [size: size + 32], so the square covers rows start[0] .. start[0]+size-1
    and columns start[1] .. start[1]+size-1, cut off at the bottom and right
    borders (never at the top or left), with start drawn in [0, 32).
    images: float32 [B, 32, 32, 3]; starts: int [B, 2]. Returns the same shape.
    """
    starts = tf.cast(starts, tf.int32)
    pos = tf.range(IMAGE_SIZE, dtype=tf.int32)
    # [B, 32] each: which rows / columns the square covers.
    in_rows = (pos >= starts[:, 0:1]) & (pos < starts[:, 0:1] + size)
    in_cols = (pos >= starts[:, 1:2]) & (pos < starts[:, 1:2] + size)
    mask = in_rows[:, :, None, None] & in_cols[:, None, :, None]
    return tf.where(mask, tf.zeros_like(images), images)


# ---------------------------------------------------------------------------
# Pipelines.


def _split_tensors(data, split):
    """Cached (uint8 images, int32 labels) tensors of `split`, on the CPU."""
    if split not in data._tensors:
        images = _require_split(data, split)
        # tf.data runs on the CPU; keep the arrays there, not on a GPU.
        with tf.device("/cpu:0"):
            data._tensors[split] = (tf.constant(images),
                                    tf.constant(data.labels[split], tf.int32))
    return data._tensors[split]


def _seed_words(*values):
    """Non-negative ints for numpy's SeedSequence (None counts as 0)."""
    return [int(v or 0) % (1 << 63) for v in values]


def epoch_randomness(num_examples, epoch, seed):
    """Order and augmentation draws of one training epoch, from (seed, epoch).

    Returns order int64 [N] (a permutation of the split), crop offsets int32
    [N, 2] in [0, 8], flips bool [N], cutout corners int32 [N, 2] in [0, 32);
    row i holds the draws for the i-th example of the epoch.
    """
    rng = np.random.default_rng(_seed_words(seed, epoch))
    order = rng.permutation(num_examples).astype(np.int64)
    offsets = rng.integers(0, 2 * PAD + 1, size=(num_examples, 2),
                           dtype=np.int32)
    flips = rng.integers(0, 2, size=num_examples) == 1
    starts = rng.integers(0, IMAGE_SIZE, size=(num_examples, 2),
                          dtype=np.int32)
    return order, offsets, flips, starts


def train_dataset(data, batch_size, epoch, seed, cutout_size=None,
                  split="train", start_batch=0):
    """One augmented epoch of `split`: (float32 [B, 32, 32, 3], int32 [B]).

    The order and every image's crop, flip and cutout come only from
    (seed, epoch), so a given epoch is bit-identical on every run; the last
    batch is smaller when B does not divide N. start_batch: begin the epoch
    at this batch (a run resumed from a mid-epoch checkpoint).
    """
    images, labels = _split_tensors(data, split)
    order, offsets, flips, starts = epoch_randomness(
        int(images.shape[0]), epoch, seed)
    mean, std = data.mean, data.std

    def augment(index, offset, flip, start):
        x = normalize(tf.gather(images, index), mean, std)
        # Padding after normalising, as the reference does: the border is 0,
        # the mean colour, not black.
        x = pad_crop_flip(x, offset, flip)
        if cutout_size:
            x = cutout(x, start, cutout_size)
        return x, tf.gather(labels, index)

    ds = tf.data.Dataset.from_tensor_slices((order, offsets, flips, starts))
    ds = ds.batch(batch_size).skip(start_batch)
    ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def _normalized_batches(data, split, indices):
    """Maps batches of int64 indices to normalised (images, labels)."""
    images, labels = _split_tensors(data, split)
    mean, std = data.mean, data.std

    def lookup(index):
        return (normalize(tf.gather(images, index), mean, std),
                tf.gather(labels, index))

    ds = indices.map(lookup, num_parallel_calls=tf.data.AUTOTUNE,
                     deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(data, split, batch_size=100):
    """`split` in order, normalised, not augmented: (float32 [B, 32, 32, 3],
    int32 [B]); the last batch is smaller when B does not divide N."""
    n = data.num_examples(split)
    _require_split(data, split)
    return _normalized_batches(
        data, split, tf.data.Dataset.range(n).batch(batch_size))


def valid_rl_batches(data, batch_size, seed):
    """Endless shuffled, not augmented validation batches for the controller.

    Each pass over the validation split is a fresh permutation drawn from
    (seed, pass number); batches run on across passes, so every batch holds
    exactly `batch_size` images: (float32 [B, 32, 32, 3], int32 [B]).
    """
    n = data.num_examples("valid")
    _require_split(data, "valid")
    seed = _seed_words(seed)[0]

    def one_pass(k):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64),
            seed=tf.stack([tf.constant(seed, tf.int64), k]))
        return tf.data.Dataset.from_tensor_slices(order)

    indices = tf.data.Dataset.counter().flat_map(one_pass)
    return _normalized_batches(
        data, "valid", indices.batch(batch_size, drop_remainder=True))
