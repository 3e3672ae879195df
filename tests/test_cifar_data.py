"""Tests of the CIFAR-10 reader and pipelines in src/cifar10/data.py."""

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from src.cifar10 import data as cifar
from src.errors import UserError
from tests.cifar_fixtures import write_batch, write_fake_cifar

SHARED_CIFAR = (Path(__file__).resolve().parents[2] / "shared" / "data"
                / "cifar10-partial")


def reference_arrays(folder, num_valids):
    """The reference's read_data re-done in numpy: float32 NHWC splits already
    normalised, and mean/std with keepdims, computed the reference's way."""
    def read(names):
        images, labels = [], []
        for name in names:
            with open(os.path.join(folder, name), "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            images.append(batch[b"data"].astype(np.float32) / 255.0)
            labels.append(np.array(batch[b"labels"], dtype=np.int32))
        images = np.concatenate(images, axis=0)
        images = np.reshape(images, [-1, 3, 32, 32])
        images = np.transpose(images, [0, 2, 3, 1])
        return images, np.concatenate(labels, axis=0)

    images, labels = {}, {}
    images["train"], labels["train"] = read(cifar.TRAIN_FILES)
    if num_valids:
        images["valid"] = images["train"][-num_valids:]
        labels["valid"] = labels["train"][-num_valids:]
        images["train"] = images["train"][:-num_valids]
        labels["train"] = labels["train"][:-num_valids]
    images["test"], labels["test"] = read(cifar.TEST_FILES)
    mean = np.mean(images["train"], axis=(0, 1, 2), keepdims=True)
    std = np.std(images["train"], axis=(0, 1, 2), keepdims=True)
    for split in list(images):
        images[split] = (images[split] - mean) / std
    return images, labels, mean, std


def bits(x):
    """float32 array as its raw bits, so comparisons are bit-exact."""
    return np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)


def quiet(*_):
    pass


def make_data(num_train=50, num_valid=10, num_test=13, seed=0):
    """A CifarData built directly: label i marks train image i, whose pixels
    are all i + 1 (so any crop of it still names it)."""
    rng = np.random.default_rng(seed)
    train = np.broadcast_to(
        (np.arange(num_train) + 1).astype(np.uint8)[:, None, None, None],
        (num_train, 32, 32, 3)).copy()
    images = {
        "train": train,
        "valid": rng.integers(0, 256, (num_valid, 32, 32, 3), dtype=np.uint8),
        "test": rng.integers(0, 256, (num_test, 32, 32, 3), dtype=np.uint8),
    }
    labels = {
        "train": np.arange(num_train, dtype=np.int32),
        "valid": np.arange(num_valid, dtype=np.int32),
        "test": np.arange(num_test, dtype=np.int32),
    }
    return cifar.CifarData(images=images, labels=labels,
                           mean=np.array([0.1, 0.2, 0.3], np.float32),
                           std=np.array([0.5, 0.25, 0.125], np.float32))


def collect(ds):
    images, labels = [], []
    for x, y in ds:
        images.append(x.numpy())
        labels.append(y.numpy())
    return images, labels


@pytest.fixture(scope="module")
def fake_folder(tmp_path_factory):
    return write_fake_cifar(str(tmp_path_factory.mktemp("cifar")),
                            num_per_batch=20, num_test=17, seed=3)


# --- reader ------------------------------------------------------------------


def test_read_data_gives_uint8_nhwc_splits_and_int32_labels(fake_folder):
    data = cifar.read_data(fake_folder, num_valids=30, log=quiet)
    assert data.num_examples("train") == 70
    assert data.num_examples("valid") == 30
    assert data.num_examples("test") == 17
    for split, n in (("train", 70), ("valid", 30), ("test", 17)):
        assert data.images[split].shape == (n, 32, 32, 3)
        assert data.images[split].dtype == np.uint8
        assert data.labels[split].shape == (n,)
        assert data.labels[split].dtype == np.int32
        assert 0 <= data.labels[split].min() <= data.labels[split].max() <= 9
    assert data.mean.shape == (3,) and data.mean.dtype == np.float32
    assert data.std.shape == (3,) and data.std.dtype == np.float32
    assert np.all((data.mean > 0.4) & (data.mean < 0.6))


def test_read_data_puts_channel_major_rows_into_nhwc(tmp_path):
    write_fake_cifar(str(tmp_path))
    row = np.concatenate([np.full(1024, 10), np.full(1024, 20),
                          np.full(1024, 30)]).astype(np.uint8)
    row[5] = 99  # red channel, row 0, column 5
    write_batch(str(tmp_path / "test_batch"), row[None], [7])
    data = cifar.read_data(str(tmp_path), num_valids=0, log=quiet)
    image = data.images["test"][0]
    assert image[0, 5, 0] == 99
    assert np.all(image[1:, :, 0] == 10)
    assert np.all(image[..., 1] == 20) and np.all(image[..., 2] == 30)
    assert data.labels["test"].tolist() == [7]


def test_validation_split_is_the_last_num_valids_training_images(fake_folder):
    whole = cifar.read_data(fake_folder, num_valids=0, log=quiet)
    held = cifar.read_data(fake_folder, num_valids=25, log=quiet)
    assert whole.images["valid"] is None and whole.labels["valid"] is None
    assert whole.num_examples("valid") == 0
    assert np.array_equal(held.images["valid"], whole.images["train"][-25:])
    assert np.array_equal(held.labels["valid"], whole.labels["train"][-25:])
    assert np.array_equal(held.images["train"], whole.images["train"][:-25])
    assert np.array_equal(held.labels["train"], whole.labels["train"][:-25])
    assert np.array_equal(held.images["test"], whole.images["test"])
    none = cifar.read_data(fake_folder, num_valids=None, log=quiet)
    assert none.images["valid"] is None


@pytest.mark.parametrize("num_valids", [0, 25])
def test_mean_std_and_normalized_are_bit_identical_to_reference(
        fake_folder, num_valids):
    data = cifar.read_data(fake_folder, num_valids=num_valids, log=quiet)
    ref_images, ref_labels, ref_mean, ref_std = reference_arrays(
        fake_folder, num_valids)
    assert np.array_equal(bits(data.mean), bits(ref_mean.reshape(-1)))
    assert np.array_equal(bits(data.std), bits(ref_std.reshape(-1)))
    for split in ref_images:
        assert np.array_equal(bits(data.normalized(split)),
                              bits(ref_images[split]))
        assert np.array_equal(data.labels[split], ref_labels[split])


def test_normalized_train_split_has_zero_mean_unit_std_per_channel(
        fake_folder):
    data = cifar.read_data(fake_folder, num_valids=10, log=quiet)
    x = data.normalized("train")
    assert x.dtype == np.float32 and x.shape == (90, 32, 32, 3)
    np.testing.assert_allclose(x.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(x.std(axis=(0, 1, 2)), 1.0, atol=1e-4)


def test_read_data_logs_like_the_reference(fake_folder):
    lines = []
    data = cifar.read_data(fake_folder, num_valids=10, log=lines.append)
    assert lines[:2] == ["-" * 80, "Reading data"]
    assert lines[2:8] == list(cifar.TRAIN_FILES) + ["test_batch"]
    assert lines[8] == "Prepropcess: [subtract mean], [divide std]"
    assert lines[9] == "mean: {}".format(data.mean * np.float32(255.0))
    assert lines[10] == "std: {}".format(data.std * np.float32(255.0))
    assert len(lines) == 11


def test_read_data_accepts_str_keys_as_well_as_bytes_keys(tmp_path):
    write_fake_cifar(str(tmp_path))
    rows = np.zeros((3, 3072), np.uint8)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({"data": rows, "labels": [1, 2, 3]}, f, protocol=2)
    data = cifar.read_data(str(tmp_path), num_valids=0, log=quiet)
    assert data.labels["test"].tolist() == [1, 2, 3]


# --- reader errors -----------------------------------------------------------


def user_error(excinfo):
    message = str(excinfo.value)
    assert "\n" not in message and message.strip() == message
    return message


def test_missing_folder_is_a_one_line_user_error(tmp_path):
    folder = str(tmp_path / "nowhere")
    with pytest.raises(UserError) as excinfo:
        cifar.read_data(folder, log=quiet)
    message = user_error(excinfo)
    assert folder in message and "does not exist" in message
    assert "data_batch_1" in message and "test_batch" in message
    assert "download_cifar10.py" in message and cifar.CIFAR10_URL in message


def test_empty_folder_without_download_is_a_user_error(tmp_path):
    with pytest.raises(UserError) as excinfo:
        cifar.read_data(str(tmp_path), log=quiet)
    message = user_error(excinfo)
    assert "holds no CIFAR-10 files" in message
    assert not os.listdir(tmp_path)


def test_archive_folder_inside_data_path_is_pointed_out(tmp_path):
    write_fake_cifar(str(tmp_path / "cifar-10-batches-py"))
    with pytest.raises(UserError) as excinfo:
        cifar.read_data(str(tmp_path), log=quiet)
    assert "--data_path=" + str(tmp_path / "cifar-10-batches-py") in (
        user_error(excinfo))


def test_partial_files_name_the_missing_ones_and_do_not_download(tmp_path):
    write_fake_cifar(str(tmp_path))
    os.remove(tmp_path / "test_batch")
    os.remove(tmp_path / "data_batch_3")
    with pytest.raises(UserError) as excinfo:
        # An unreachable URL: a download attempt would change the message.
        cifar.read_data(str(tmp_path), download=True, log=quiet,
                        download_url="http://127.0.0.1:9/none.tar.gz")
    message = user_error(excinfo)
    assert "missing" in message
    assert "data_batch_3, test_batch" in message
    assert "could not download" not in message


@pytest.mark.parametrize("content", [b"", b"garbage, not a pickle", None])
def test_corrupt_or_truncated_pickle_names_the_file(tmp_path, content):
    write_fake_cifar(str(tmp_path))
    path = tmp_path / "data_batch_2"
    if content is None:  # truncated
        content = path.read_bytes()[:1000]
    path.write_bytes(content)
    with pytest.raises(UserError) as excinfo:
        cifar.read_data(str(tmp_path), num_valids=0, log=quiet)
    message = user_error(excinfo)
    assert str(path) in message and "corrupt" in message


@pytest.mark.parametrize("rows", [np.zeros((4, 100), np.uint8),
                                  np.zeros(3072, np.uint8),
                                  np.zeros((4, 3, 32, 32), np.uint8)])
def test_wrong_image_shape_is_a_user_error(tmp_path, rows):
    write_fake_cifar(str(tmp_path))
    write_batch(str(tmp_path / "data_batch_4"), rows, [0] * 4)
    with pytest.raises(UserError) as excinfo:
        cifar.read_data(str(tmp_path), num_valids=0, log=quiet)
    message = user_error(excinfo)
    assert "data_batch_4" in message and "shape" in message


def test_labels_not_matching_images_are_a_user_error(tmp_path):
    write_fake_cifar(str(tmp_path))
    write_batch(str(tmp_path / "data_batch_1"), np.zeros((4, 3072), np.uint8),
                [0, 1, 2])
    with pytest.raises(UserError) as excinfo:
        cifar.read_data(str(tmp_path), num_valids=0, log=quiet)
    assert "data_batch_1" in user_error(excinfo)


def test_pickle_without_data_entry_is_a_user_error(tmp_path):
    write_fake_cifar(str(tmp_path))
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"labels": [1]}, f, protocol=2)
    with pytest.raises(UserError) as excinfo:
        cifar.read_data(str(tmp_path), num_valids=0, log=quiet)
    assert "test_batch" in user_error(excinfo)


@pytest.mark.parametrize("num_valids", [100, 5000])
def test_num_valids_not_below_train_size_asks_for_a_smaller_one(
        fake_folder, num_valids):
    with pytest.raises(UserError) as excinfo:
        cifar.read_data(fake_folder, num_valids=num_valids, log=quiet)
    message = user_error(excinfo)
    assert "smaller --num_valids" in message and "100" in message


def test_asking_for_an_absent_validation_split_is_a_user_error():
    data = make_data()
    data.images["valid"] = data.labels["valid"] = None
    with pytest.raises(UserError, match="--num_valids"):
        data.normalized("valid")
    with pytest.raises(UserError, match="--num_valids"):
        cifar.eval_dataset(data, "valid")
    with pytest.raises(UserError, match="--num_valids"):
        cifar.valid_rl_batches(data, 4, seed=0)


# --- real data ---------------------------------------------------------------


@pytest.mark.skipif(not SHARED_CIFAR.is_dir(),
                    reason=f"real partial CIFAR-10 not found at {SHARED_CIFAR}"
                    " (only development machines have ../shared/data)")
def test_reads_real_partial_cifar10():
    data = cifar.read_data(str(SHARED_CIFAR), num_valids=0, log=quiet)
    assert data.num_examples("train") == 820
    assert data.num_examples("test") == 164
    assert data.images["valid"] is None
    assert data.images["train"].shape == (820, 32, 32, 3)
    assert np.bincount(data.labels["train"], minlength=10).min() > 50
    # Natural images: per-channel means near the well-known CIFAR-10 values.
    np.testing.assert_allclose(data.mean * 255.0, [125.3, 123.0, 113.9],
                               atol=6.0)
    _, _, ref_mean, ref_std = reference_arrays(str(SHARED_CIFAR), 0)
    assert np.array_equal(bits(data.mean), bits(ref_mean.reshape(-1)))
    assert np.array_equal(bits(data.std), bits(ref_std.reshape(-1)))
    held = cifar.read_data(str(SHARED_CIFAR), num_valids=164, log=quiet)
    assert held.num_examples("train") == 656
    assert held.num_examples("valid") == 164


# --- augmentation ops --------------------------------------------------------


def reference_cutout_mask(start, size):
    """The reference's cutout mask built in numpy: 1 where it zeroes."""
    mask = np.ones([size, size], np.int32)
    mask = np.pad(mask, [[size + start[0], 32 - start[0]],
                         [size + start[1], 32 - start[1]]])
    return mask[size:size + 32, size:size + 32]


def test_cutout_zeroes_a_square_from_its_corner_clipped_at_the_borders():
    starts = np.array([[0, 0], [10, 12], [30, 5], [7, 31], [31, 31], [24, 24]],
                      np.int32)
    images = np.random.default_rng(0).uniform(
        1.0, 2.0, (len(starts), 32, 32, 3)).astype(np.float32)
    out = cifar.cutout(images, starts, 8).numpy()
    for image, result, (r, c) in zip(images, out, starts):
        expected = np.zeros((32, 32), bool)
        expected[r:min(r + 8, 32), c:min(c + 8, 32)] = True
        assert np.array_equal(reference_cutout_mask((r, c), 8) == 1, expected)
        zeroed = np.all(result == 0, axis=-1)
        assert np.array_equal(zeroed, expected)
        assert np.array_equal(result[~expected], image[~expected])
    # A corner near the bottom right leaves only the part inside the image.
    assert np.all(out[4, 31, 31] == 0) and np.sum(out[4, ..., 0] == 0) == 1


def test_pad_crop_flip_takes_the_given_window_of_the_zero_padded_image():
    rng = np.random.default_rng(1)
    images = rng.uniform(1.0, 2.0, (5, 32, 32, 3)).astype(np.float32)
    offsets = np.array([[0, 0], [8, 8], [4, 4], [0, 8], [3, 6]], np.int32)
    flips = np.array([False, False, False, True, True])
    out = cifar.pad_crop_flip(images, offsets, flips).numpy()
    padded = np.pad(images, [[0, 0], [4, 4], [4, 4], [0, 0]])
    for i, ((r, c), flip) in enumerate(zip(offsets, flips)):
        window = padded[i, r:r + 32, c:c + 32]
        if flip:
            window = window[:, ::-1]
        assert np.array_equal(out[i], window)
    assert np.array_equal(out[2], images[2])  # centred window: unchanged
    assert np.all(out[0, :4] == 0) and np.all(out[0, :, :4] == 0)


def test_epoch_randomness_ranges_and_dependence_on_seed_and_epoch():
    order, offsets, flips, starts = cifar.epoch_randomness(500, 3, 7)
    assert sorted(order.tolist()) == list(range(500))
    assert offsets.min() == 0 and offsets.max() == 8
    assert starts.min() == 0 and starts.max() == 31
    assert 0.4 < flips.mean() < 0.6
    again = cifar.epoch_randomness(500, 3, 7)
    for a, b in zip((order, offsets, flips, starts), again):
        assert np.array_equal(a, b)
    assert not np.array_equal(order, cifar.epoch_randomness(500, 4, 7)[0])
    assert not np.array_equal(order, cifar.epoch_randomness(500, 3, 8)[0])


# --- pipelines ---------------------------------------------------------------


def test_train_dataset_batches_shapes_and_keeps_the_smaller_last_batch():
    data = make_data(num_train=50)
    ds = cifar.train_dataset(data, batch_size=16, epoch=0, seed=1)
    images, labels = collect(ds)
    assert len(images) == 4  # ceil(50 / 16)
    assert [len(y) for y in labels] == [16, 16, 16, 2]
    assert all(x.shape[1:] == (32, 32, 3) and x.dtype == np.float32
               for x in images)
    assert all(y.dtype == np.int32 for y in labels)
    assert ds.element_spec[0].shape.as_list() == [None, 32, 32, 3]


def test_train_dataset_shows_every_image_once_per_epoch():
    data = make_data(num_train=50)
    mean, std = data.mean, data.std
    images, labels = collect(cifar.train_dataset(data, 16, epoch=2, seed=5))
    images, labels = np.concatenate(images), np.concatenate(labels)
    assert sorted(labels.tolist()) == list(range(50))
    # Train image i has all pixels i + 1; the centre pixel survives any crop.
    centre = images[:, 16, 16, :]
    expected = ((labels[:, None] + 1).astype(np.float32) / np.float32(255.0)
                - mean) / std
    assert np.array_equal(bits(centre), bits(expected))


def test_train_images_are_crops_of_the_zero_padded_normalized_image(
        fake_folder):
    data = cifar.read_data(fake_folder, num_valids=60, log=quiet)
    # Identify images by index: the labels of this copy are their positions.
    data.labels["train"] = np.arange(40, dtype=np.int32)
    padded = np.pad(data.normalized("train"), [[0, 0], [4, 4], [4, 4], [0, 0]])
    images, labels = collect(cifar.train_dataset(data, 8, epoch=0, seed=2))
    seen_flips = set()
    for x, i in zip(np.concatenate(images), np.concatenate(labels)):
        # Pixel values are a subset of the padded image's ...
        assert np.isin(x, padded[i]).all()
        # ... and the image is exactly one window, maybe mirrored.
        matches = [(r, c, f) for r in range(9) for c in range(9)
                   for f in (False, True)
                   if np.array_equal(
                       x, padded[i, r:r + 32, c:c + 32][:, ::-1]
                       if f else padded[i, r:r + 32, c:c + 32])]
        assert len(matches) == 1
        seen_flips.add(matches[0][2])
    assert seen_flips == {False, True}


def test_train_dataset_is_identical_for_the_same_seed_and_epoch():
    data = make_data(num_train=50)
    first = collect(cifar.train_dataset(data, 16, epoch=3, seed=11,
                                        cutout_size=8))
    second = collect(cifar.train_dataset(data, 16, epoch=3, seed=11,
                                         cutout_size=8))
    for a, b in zip(first[0] + first[1], second[0] + second[1]):
        assert np.array_equal(a, b)
    other_epoch = collect(cifar.train_dataset(data, 16, epoch=4, seed=11))
    other_seed = collect(cifar.train_dataset(data, 16, epoch=3, seed=12))
    order = np.concatenate(first[1])
    assert not np.array_equal(order, np.concatenate(other_epoch[1]))
    assert not np.array_equal(order, np.concatenate(other_seed[1]))


def test_cutout_in_train_dataset_only_zeroes_pixels():
    data = make_data(num_train=50)
    plain, labels = collect(cifar.train_dataset(data, 50, epoch=1, seed=4))
    cut, cut_labels = collect(cifar.train_dataset(data, 50, epoch=1, seed=4,
                                                  cutout_size=16))
    plain, cut = plain[0], cut[0]
    assert np.array_equal(labels[0], cut_labels[0])
    changed = cut != plain
    assert changed.any()
    assert np.all(cut[changed] == 0)
    # Up to 16 x 16 pixels per image go, never more.
    per_image = np.all(cut == 0, axis=-1).sum(axis=(1, 2)) - np.all(
        plain == 0, axis=-1).sum(axis=(1, 2))
    assert per_image.max() <= 256 and per_image.sum() > 0


def test_train_dataset_on_another_split():
    data = make_data(num_valid=10)
    _, labels = collect(cifar.train_dataset(data, 4, epoch=0, seed=0,
                                            split="valid"))
    assert sorted(np.concatenate(labels).tolist()) == list(range(10))


def test_eval_dataset_is_in_order_normalized_with_smaller_last_batch():
    data = make_data(num_test=13)
    images, labels = collect(cifar.eval_dataset(data, "test", batch_size=5))
    assert [len(y) for y in labels] == [5, 5, 3]
    assert np.array_equal(np.concatenate(labels), data.labels["test"])
    # The tf.data normalisation equals CifarData.normalized bit for bit.
    assert np.array_equal(bits(np.concatenate(images)),
                          bits(data.normalized("test")))


def test_valid_rl_batches_are_endless_full_shuffled_and_seeded():
    data = make_data(num_valid=10)
    normalized = data.normalized("valid")

    def take(seed, count):
        it = iter(cifar.valid_rl_batches(data, 4, seed=seed))
        return [next(it) for _ in range(count)]

    batches = take(seed=3, count=10)  # 40 images: four passes over 10
    labels = np.concatenate([y.numpy() for _, y in batches])
    assert all(x.shape == (4, 32, 32, 3) for x, _ in batches)
    for p in range(4):
        assert sorted(labels[10 * p:10 * p + 10].tolist()) == list(range(10))
    assert not np.array_equal(labels[:10], labels[10:20])
    assert not np.array_equal(labels[:10], np.arange(10))
    # Not augmented: each image is the normalised validation image.
    for x, y in batches:
        assert np.array_equal(bits(x.numpy()), bits(normalized[y.numpy()]))
    again = np.concatenate([y.numpy() for _, y in take(seed=3, count=10)])
    assert np.array_equal(labels, again)
    other = np.concatenate([y.numpy() for _, y in take(seed=4, count=10)])
    assert not np.array_equal(labels, other)
