"""Tests of src/ptb/data.py and data/download_ptb.py on tiny corpora (and the
real PTB text from ../shared/data/ptb when it is there)."""

import functools
import hashlib
import http.server
import os
import pickle
import pickletools
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from src.errors import UserError
from src.ptb import data as ptb
from tests.conftest import SHARED, golden_case

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_PTB = SHARED / "data" / "ptb"

# A hand-made corpus in PTB's layout: one sentence per line, words between
# single spaces, a space before each line break and after it.
TRAIN = " b a \n c a b \n d \n"
VALID = " a d \n b \n"
TEST = " c c a \n"
# Sorted training words: "<eos>" sorts before the letters.
VOCAB = {"<eos>": 0, "a": 1, "b": 2, "c": 3, "d": 4}
TRAIN_IDS = [2, 1, 0, 3, 1, 2, 0, 4, 0]  # ... d, then the final <eos>
VALID_IDS = [1, 4, 0, 2, 0]
TEST_IDS = [3, 3, 1, 0]


def quiet(*_):
    pass


def write_corpus(folder, names=ptb.REFERENCE_FILES, train=TRAIN,
                 valid=VALID, test=TEST):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for split, text in (("train", train), ("valid", valid), ("test", test)):
        (folder / names[split]).write_text(text)
    return folder


def one_line_error(excinfo, *parts):
    message = str(excinfo.value)
    assert "\n" not in message, message
    for part in parts:
        assert str(part) in message, message
    return message


def bump_mtime(path, seconds):
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + int(seconds * 1e9)))


# ---------------------------------------------------------------------------
# Building from text.


@pytest.mark.parametrize("names", [ptb.REFERENCE_FILES, ptb.PTB_FILES])
def test_vocabulary_and_ids_follow_the_reference_rules(tmp_path, names):
    folder = write_corpus(tmp_path / "ptb", names=names)
    data = ptb.read_data(str(folder), log=quiet)
    assert data.vocab == VOCAB
    assert data.index == {i: w for w, i in VOCAB.items()}
    assert data.vocab_size == 5
    for split, ids in (("train", TRAIN_IDS), ("valid", VALID_IDS),
                       ("test", TEST_IDS)):
        stream = data.split(split)
        assert stream.dtype == np.int32 and stream.tolist() == ids
    with pytest.raises(ValueError):
        data.split("dev")


def test_split_on_single_spaces_like_the_reference(tmp_path):
    # "a  b": an empty word; a line break without spaces around it glues
    # the words to <eos> ("x<eos>y"), as the reference's replace + split.
    folder = write_corpus(tmp_path, train="a  b\nx\ny \n z \n",
                          valid="a\n", test="b\nx\ny")
    data = ptb.read_data(str(folder), log=quiet)
    assert sorted(data.vocab) == ["", "<eos>", "a", "b<eos>x<eos>y", "z"]
    assert data.vocab[""] == 0 and data.vocab["<eos>"] == 1
    assert data.train.tolist() == [2, 0, 3, 1, 4, 1]
    assert data.valid.tolist() == [2, 1]
    assert data.test.tolist() == [3, 1]
    # Written out, "x<eos>y" is one word, not x, <eos>, y.
    write_corpus(tmp_path, train="a b \n x y \n", valid="a \n",
                 test="x<eos>y \n")
    bump_mtime(tmp_path / "test", 5)  # newer than the cached ptb.pkl
    with pytest.raises(UserError) as excinfo:
        ptb.read_data(str(tmp_path), log=quiet)
    one_line_error(excinfo, "'x<eos>y'", "test split")


def test_a_different_vocabulary_size(tmp_path):
    words = [f"w{i:03d}" for i in range(37)]
    train = " \n ".join(" ".join(words[i:i + 5]) for i in range(0, 37, 5))
    folder = write_corpus(tmp_path, train=train, valid="w000 w036",
                          test="w005 \n w001")
    data = ptb.read_data(str(folder), log=quiet)
    assert data.vocab_size == 38  # 37 words and <eos>
    assert data.valid.tolist() == [1, 37, 0]
    assert data.test.tolist() == [6, 0, 2, 0]


def test_unknown_word_in_valid_is_a_one_line_error(tmp_path):
    folder = write_corpus(tmp_path, valid=" a zz \n b yy zz \n")
    with pytest.raises(UserError) as excinfo:
        ptb.read_data(str(folder), log=quiet)
    one_line_error(excinfo, "'zz'", "valid split", folder / "valid",
                   "2 distinct, 3 occurrences", "<unk>")


def test_empty_text_or_one_line_training_text_is_a_user_error(tmp_path):
    write_corpus(tmp_path, train=" \n")
    with pytest.raises(UserError) as excinfo:
        ptb.read_data(str(tmp_path), log=quiet)
    one_line_error(excinfo, "empty", tmp_path / "train")
    write_corpus(tmp_path, valid="")
    with pytest.raises(UserError) as excinfo:
        ptb.read_data(str(tmp_path), log=quiet)
    one_line_error(excinfo, "PTB valid text", "empty", tmp_path / "valid")
    write_corpus(tmp_path, train="a b c d")
    with pytest.raises(UserError) as excinfo:
        ptb.read_data(str(tmp_path), log=quiet)
    one_line_error(excinfo, "<eos>", "line break")


# ---------------------------------------------------------------------------
# The pickle cache.


def test_pickle_is_cached_and_reread(tmp_path):
    folder = write_corpus(tmp_path)
    first = ptb.read_data(str(folder), log=quiet)
    cache = folder / "ptb.pkl"
    assert cache.is_file()
    assert [p for p in os.listdir(folder) if p.endswith(".part")] == []
    # Read back, from the folder and from the file itself.
    for path in (folder, cache):
        again = ptb.read_data(str(path), log=quiet)
        assert again.source == str(cache)
        assert again.vocab == first.vocab and again.index == first.index
        for split in ptb.SPLITS:
            assert again.split(split).dtype == np.int32
            assert np.array_equal(again.split(split), first.split(split))
    # Protocol 2, naming numpy arrays as numpy 1.x / Python 2 know them.
    raw = cache.read_bytes()
    assert raw[:2] == b"\x80\x02"
    names = {arg for op, arg, _ in pickletools.genops(raw)
             if op.name == "GLOBAL"}
    assert names == {"numpy.core.multiarray _reconstruct", "numpy ndarray",
                     "numpy dtype", "_codecs encode"}
    # Still a plain pickle for anyone else.
    x_train, _, _, vocab, _ = pickle.loads(raw, encoding="latin1")
    assert x_train.tolist() == TRAIN_IDS and vocab == VOCAB


def test_pickle_is_reused_until_a_text_file_is_newer(tmp_path):
    folder = write_corpus(tmp_path)
    ptb.read_data(str(folder), log=quiet)
    cache = folder / "ptb.pkl"
    # Reuse: a pickle that differs from the text is read while it is newer.
    x_train, x_valid, x_test, vocab, index = pickle.loads(cache.read_bytes())
    marker = x_valid.copy()
    marker[0] = 4
    with open(cache, "wb") as f:
        pickle.dump((x_train, marker, x_test, vocab, index), f, protocol=2)
    bump_mtime(cache, 5)
    assert ptb.read_data(str(folder), log=quiet).valid[0] == 4
    # A newer text file: rebuilt (and the new text counts).
    (folder / "valid").write_text(" d d \n")
    bump_mtime(folder / "valid", 10)
    lines = []
    data = ptb.read_data(str(folder), log=lines.append)
    assert data.valid.tolist() == [4, 4, 0]
    assert any("rebuilding" in line for line in lines)
    assert ptb.read_data(str(cache), log=quiet).valid.tolist() == [4, 4, 0]


def test_a_corrupt_cache_beside_the_texts_is_rebuilt(tmp_path):
    folder = write_corpus(tmp_path)
    (folder / "ptb.pkl").write_bytes(b"\x80\x02garbage")
    bump_mtime(folder / "ptb.pkl", 5)
    lines = []
    data = ptb.read_data(str(folder), log=lines.append)
    assert data.train.tolist() == TRAIN_IDS
    assert any("rebuilding" in line for line in lines)
    assert ptb.read_data(str(folder / "ptb.pkl"), log=quiet).vocab == VOCAB


def test_missing_pkl_path_builds_from_its_folder(tmp_path):
    # The reference's scripts pass --data_path=data/ptb/ptb.pkl.
    folder = write_corpus(tmp_path)
    data = ptb.read_data(str(folder / "my.pkl"), log=quiet)
    assert data.train.tolist() == TRAIN_IDS
    assert (folder / "my.pkl").is_file() and not (folder / "ptb.pkl").exists()


def test_unwritable_folder_works_without_a_cache(tmp_path, monkeypatch):
    folder = write_corpus(tmp_path)

    def refuse(data, path):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(ptb, "write_pickle", refuse)
    lines = []
    data = ptb.read_data(str(folder), log=lines.append)
    assert data.train.tolist() == TRAIN_IDS
    assert not (folder / "ptb.pkl").exists()
    assert len(lines) == 1 and "not caching" in lines[0]


class _Global:
    """Stands for a global by name, so a pickler can write Python 2 names."""

    def __init__(self, module, name):
        self.module, self.__name__ = module, name

    def __call__(self):
        raise AssertionError("never called")


class _Python2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle (protocol 2) and numpy 1.x wrote: str as
    byte strings (BINSTRING), arrays through numpy.core.multiarray."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_str_as_py2(self, obj):
        self.save_bytes_as_py2(obj.encode("latin1"))

    def save_bytes_as_py2(self, obj):
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + n.to_bytes(4, "little") + obj)

    def save_global_name(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.__name__}\n".encode())
        self.memoize(obj)

    def save_array(self, a):
        dtype = a.dtype.str  # "<i4"
        self.save_reduce(
            _Global("numpy.core.multiarray", "_reconstruct"),
            (_Global("numpy", "ndarray"), (0,), b"b"),
            state=(1, a.shape, _Dtype(dtype[1:], dtype[0]), False,
                   a.tobytes()), obj=a)

    def save_dtype(self, d):
        self.save_reduce(_Global("numpy", "dtype"), (d.name.encode(), 0, 1),
                         state=(3, d.order.encode(), None, None, None, -1,
                                -1, 0), obj=d)

    dispatch[str] = save_str_as_py2
    dispatch[bytes] = save_bytes_as_py2
    dispatch[_Global] = save_global_name
    dispatch[np.ndarray] = save_array


class _Dtype:
    def __init__(self, name, order):
        self.name, self.order = name, order


_Python2Pickler.dispatch[_Dtype] = _Python2Pickler.save_dtype


def test_reads_a_python2_protocol2_pickle(tmp_path):
    x_train = np.array(TRAIN_IDS, np.int32)
    x_valid = np.array(VALID_IDS, np.int32)
    x_test = np.array(TEST_IDS, np.int32)
    index = {i: w for w, i in VOCAB.items()}
    path = tmp_path / "ptb.pkl"
    with open(path, "wb") as f:
        _Python2Pickler(f, protocol=2).dump(
            (x_train, x_valid, x_test, VOCAB, index))
    raw = path.read_bytes()
    ops = {op.name for op, _, _ in pickletools.genops(raw)}
    assert "SHORT_BINSTRING" in ops and "BINUNICODE" not in ops
    data = ptb.read_data(str(path), log=quiet)
    assert data.vocab == VOCAB and data.index == index
    assert data.train.tolist() == TRAIN_IDS
    assert data.test.dtype == np.int32 and data.test.tolist() == TEST_IDS


def test_reads_python3_pickles_of_any_protocol(tmp_path):
    content = (np.array(TRAIN_IDS, np.int64), list(VALID_IDS),
               np.array(TEST_IDS, np.int32), VOCAB, {})
    for protocol in (2, 4, 5):
        path = tmp_path / f"p{protocol}.pkl"
        path.write_bytes(pickle.dumps(content, protocol=protocol))
        data = ptb.read_data(str(path), log=quiet)
        assert data.train.dtype == np.int32
        assert data.valid.tolist() == VALID_IDS


# ---------------------------------------------------------------------------
# Bad inputs: one line each.


def test_missing_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(UserError) as excinfo:
        ptb.read_data(str(missing), log=quiet)
    one_line_error(excinfo, missing, "does not exist", "ptb.train.txt",
                   "--download", "python data/download_ptb.py --data_dir=")


def test_empty_folder(tmp_path):
    with pytest.raises(UserError) as excinfo:
        ptb.read_data(str(tmp_path), log=quiet)
    one_line_error(excinfo, tmp_path, "none of the PTB files", "ptb.pkl",
                   "ptb.valid.txt", "train, valid, test", "--download",
                   "python data/download_ptb.py", ptb.PTB_URL)


def test_incomplete_folder_names_the_missing_file(tmp_path):
    # As ../shared/data/ptb: the reference's valid and test, no train.
    (tmp_path / "valid").write_text(VALID)
    (tmp_path / "test").write_text(TEST)
    with pytest.raises(UserError) as excinfo:
        ptb.read_data(str(tmp_path), log=quiet)
    message = one_line_error(excinfo, "has valid, test but lacks train")
    assert "--download" in message


def test_corrupt_pickle(tmp_path):
    path = tmp_path / "ptb.pkl"
    path.write_bytes(b"this is not a pickle at all")
    with pytest.raises(UserError) as excinfo:
        ptb.read_data(str(path), log=quiet)
    one_line_error(excinfo, path, "corrupt")
    with pytest.raises(UserError) as excinfo:  # Only ptb.pkl: same error.
        ptb.read_data(str(tmp_path), log=quiet)
    one_line_error(excinfo, path, "corrupt")


def test_truncated_pickle(tmp_path):
    folder = write_corpus(tmp_path / "src")
    ptb.read_data(str(folder), log=quiet)
    raw = (folder / "ptb.pkl").read_bytes()
    path = tmp_path / "ptb.pkl"
    for cut in (len(raw) // 3, len(raw) - 1):
        path.write_bytes(raw[:cut])
        with pytest.raises(UserError) as excinfo:
            ptb.read_data(str(path), log=quiet)
        one_line_error(excinfo, path, "truncated")


def test_text_file_passed_as_the_pickle(tmp_path):
    folder = write_corpus(tmp_path)
    with pytest.raises(UserError) as excinfo:
        ptb.read_data(str(folder / "train"), log=quiet)
    one_line_error(excinfo, "pass its folder")


@pytest.mark.parametrize("content, words", [
    ({"x": 1}, "holds a dict"),
    ((1, 2, 3), "holds a tuple of 3 items"),
    ((np.zeros(3, np.int32),) * 3 + ([], {}), "a list vocab"),
    ((np.zeros(3, np.int32),) * 3 + ({}, {}), "empty vocabulary"),
    ((np.zeros((2, 3), np.int32),) * 3 + (VOCAB, {}), "x_train is not a 1-D"),
    ((np.zeros(3, np.float32),) * 3 + (VOCAB, {}), "x_train is not a 1-D"),
])
def test_pickle_of_the_wrong_structure(tmp_path, content, words):
    path = tmp_path / "ptb.pkl"
    path.write_bytes(pickle.dumps(content, protocol=2))
    with pytest.raises(UserError) as excinfo:
        ptb.read_data(str(path), log=quiet)
    one_line_error(excinfo, path, words)


def test_pickle_naming_other_globals_is_refused_not_run(tmp_path):
    path = tmp_path / "ptb.pkl"
    path.write_bytes(pickle.dumps((os.getcwd, 1, 2, 3, 4), protocol=2))
    with pytest.raises(UserError) as excinfo:
        ptb.read_data(str(path), log=quiet)
    one_line_error(excinfo, "refers to posix.getcwd")


@pytest.mark.parametrize("split, bad, value", [
    ("train", 2, 5), ("valid", 0, -1), ("test", 3, 99)])
def test_ids_outside_the_vocabulary(tmp_path, split, bad, value):
    streams = {"train": np.array(TRAIN_IDS, np.int32),
               "valid": np.array(VALID_IDS, np.int32),
               "test": np.array(TEST_IDS, np.int32)}
    streams[split][bad] = value
    path = tmp_path / "ptb.pkl"
    path.write_bytes(pickle.dumps(
        (streams["train"], streams["valid"], streams["test"], VOCAB, {}),
        protocol=2))
    with pytest.raises(UserError) as excinfo:
        ptb.read_data(str(path), log=quiet)
    one_line_error(excinfo, f"x_{split} holds word id {value} at position "
                   f"{bad}", "0..4", "5 words")


def test_print_sizes():
    data = ptb.PtbData(np.zeros(7, np.int32), np.zeros(3, np.int32),
                       np.zeros(2, np.int32), {"a": 0}, {0: "a"})
    lines = []
    ptb.print_sizes(data, log=lines.append)
    assert lines == ["-" * 80, "train_size: 7", "valid_size: 3",
                     " test_size: 2"]


# ---------------------------------------------------------------------------
# Batching.


def test_rows_windows_and_their_number_by_hand():
    stream = np.arange(23, dtype=np.int32)
    rows = ptb.batch_rows(stream, 3)  # 23 // 3 = 7 words per row
    assert rows.tolist() == [[0, 1, 2, 3, 4, 5, 6],
                             [7, 8, 9, 10, 11, 12, 13],
                             [14, 15, 16, 17, 18, 19, 20]]
    assert ptb.num_windows(stream, 3, 2) == 3  # (7 - 1) // 2
    assert ptb.num_windows(stream, 3, 4) == 1
    assert ptb.num_windows(stream, 3, 6) == 1
    assert ptb.num_windows(stream, 3, 7) == 0
    x, y = ptb.window(rows, 1, 2)
    assert x.tolist() == [[2, 3], [9, 10], [16, 17]]
    assert y.tolist() == [[3, 4], [10, 11], [17, 18]]
    x, y = ptb.window(rows, 2, 2)  # the last: y reaches the row's end
    assert x.tolist() == [[4, 5], [11, 12], [18, 19]]
    assert y.tolist() == [[5, 6], [12, 13], [19, 20]]
    with pytest.raises(IndexError):
        ptb.window(rows, 3, 2)
    windows = list(ptb.iter_windows(stream, 3, 2))
    assert len(windows) == 3 and windows[2][0].tolist() == x.tolist()
    assert [w[0][0, 0] for w in windows] == [0, 2, 4]


def test_check_stream():
    stream = np.arange(20)
    ptb.check_stream(stream, 4, 4, "valid")  # 5 per row: one window
    with pytest.raises(UserError) as excinfo:
        ptb.check_stream(stream, 4, 5, "valid")
    assert str(excinfo.value) == (
        "the valid split has 20 words, too few for batch_size 4 x "
        "bptt_steps 5: it needs at least 24 words; use a smaller batch size "
        "or bptt_steps, or more text")
    with pytest.raises(UserError):
        ptb.check_stream(stream, 0, 5, "valid")


def test_window_stream_wraps_and_resumes():
    stream = np.arange(23, dtype=np.int32)
    rows = ptb.batch_rows(stream, 3)
    windows = ptb.WindowStream(stream, 3, 2)
    assert windows.num_windows == 3 and windows.position == 0
    firsts = []
    for _ in range(7):
        x, y = windows.next()
        assert np.array_equal(y, rows[:, x[0, 0] + 1:x[0, 0] + 3])
        firsts.append(int(x[0, 0]))
    assert firsts == [0, 2, 4, 0, 2, 4, 0]
    assert windows.position == 1
    resumed = ptb.WindowStream(stream, 3, 2, position=windows.position)
    for _ in range(4):
        a, b = windows.next(), resumed.next()
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    with pytest.raises(UserError) as excinfo:
        ptb.WindowStream(np.arange(5), 3, 2, split="train")
    assert "the train split has 5 words" in str(excinfo.value)


def test_random_window_bounds():
    stream = np.arange(30, dtype=np.int32)
    rows = ptb.batch_rows(stream, 2)  # 15 words per row
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(400):
        x, y = ptb.random_window(rows, 4, rng)
        assert x.shape == y.shape == (2, 4)
        i = int(x[0, 0])
        assert np.array_equal(x, rows[:, i:i + 4])
        assert np.array_equal(y, rows[:, i + 1:i + 5])
        starts.add(i)
    assert starts == set(range(11))  # [0, 15 - 4): exclusive maximum
    # The same seed gives the same windows.
    a = ptb.random_window(rows, 4, np.random.default_rng(5))
    b = ptb.random_window(rows, 4, np.random.default_rng(5))
    assert np.array_equal(a[0], b[0])
    with pytest.raises(ValueError):
        ptb.random_window(rows, 15, rng)


# ---------------------------------------------------------------------------
# Download, from 127.0.0.1 only.


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _md5(text):
    return hashlib.md5(text.encode()).hexdigest()


@pytest.fixture(scope="module")
def served_ptb(tmp_path_factory):
    """(folder url, md5 dict) of the tiny corpus under the standard names."""
    folder = write_corpus(tmp_path_factory.mktemp("served"),
                          names=ptb.PTB_FILES)
    md5 = {ptb.PTB_FILES["train"]: _md5(TRAIN),
           ptb.PTB_FILES["valid"]: _md5(VALID),
           ptb.PTB_FILES["test"]: _md5(TEST)}
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", md5
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def closed_port_url():
    """A folder URL on 127.0.0.1 where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/data/"


def test_read_data_downloads_checks_and_builds(served_ptb, tmp_path):
    url, md5 = served_ptb
    target = tmp_path / "ptb"  # does not exist yet
    lines = []
    data = ptb.read_data(str(target), download=True, log=lines.append,
                         download_url=url, download_md5=md5)
    assert sorted(os.listdir(target)) == sorted(
        ["ptb.pkl"] + list(ptb.PTB_FILES.values()))
    assert (target / "ptb.valid.txt").read_text() == VALID
    assert data.train.tolist() == TRAIN_IDS and data.vocab == VOCAB
    assert sum(url in line for line in lines) == 3
    # Present now: no download (the URL is dead), the cache is read.
    again = ptb.read_data(str(target), download=True, log=quiet,
                          download_url=closed_port_url())
    assert again.source == str(target / "ptb.pkl")


def test_download_needs_the_download_flag(tmp_path):
    with pytest.raises(UserError):
        ptb.read_data(str(tmp_path), log=quiet)
    assert os.listdir(tmp_path) == []


def test_wrong_md5_is_a_user_error_and_removes_the_file(served_ptb,
                                                        tmp_path):
    url, md5 = served_ptb
    bad = dict(md5, **{"ptb.valid.txt": "0" * 32})
    with pytest.raises(UserError) as excinfo:
        ptb.read_data(str(tmp_path), download=True, log=quiet,
                      download_url=url, download_md5=bad)
    one_line_error(excinfo, "md5", "0" * 32, url + "ptb.valid.txt",
                   "removed")
    # The good training file stays; nothing of the bad one is left.
    assert os.listdir(tmp_path) == ["ptb.train.txt"]


def test_offline_is_a_one_line_error_naming_url_and_files(tmp_path):
    url = closed_port_url()
    with pytest.raises(UserError) as excinfo:
        ptb.read_data(str(tmp_path / "ptb"), download=True, log=quiet,
                      download_url=url)
    one_line_error(excinfo, url + "ptb.train.txt", "ptb.valid.txt",
                   "ptb.test.txt", ptb.PTB_URL, "by hand",
                   f"place them in {tmp_path / 'ptb'}")
    assert os.listdir(tmp_path / "ptb") == []


def test_missing_file_on_the_server(served_ptb, tmp_path):
    url, _ = served_ptb
    with pytest.raises(UserError) as excinfo:
        ptb.download_ptb(str(tmp_path), url=url + "missing/", log=quiet)
    one_line_error(excinfo, "HTTP 404")


def run_script(*args):
    return subprocess.run(
        [sys.executable, "data/download_ptb.py", *args], cwd=REPO_ROOT,
        capture_output=True, text=True, timeout=60)


def test_download_script(served_ptb, tmp_path):
    url, _ = served_ptb
    target = tmp_path / "ptb"
    # The default md5s are the real files'; the tiny ones need --skip_md5.
    done = run_script(f"--data_dir={target}", f"--url={url}")
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines()
              if line.startswith("error: ")]
    assert len(errors) == 1 and "md5" in errors[0]
    done = run_script(f"--data_dir={target}", f"--url={url}", "--skip_md5")
    assert done.returncode == 0, done.stderr
    assert "valid_size: 5" in done.stdout and "vocab_size: 5" in done.stdout
    assert (target / "ptb.pkl").is_file()
    again = run_script(f"--data_dir={target}", f"--url={closed_port_url()}")
    assert again.returncode == 0, again.stderr
    assert "already" in again.stdout


# ---------------------------------------------------------------------------
# The real PTB text (valid and test only; valid stands in for train).


def real_ptb(tmp_path):
    if not (REAL_PTB / "valid").is_file() or not (REAL_PTB / "test").is_file():
        pytest.skip(f"real PTB text not found in {REAL_PTB}")
    folder = tmp_path / "ptb"
    folder.mkdir()
    for name in ("valid", "test"):
        shutil.copyfile(REAL_PTB / name, folder / name)
    return folder


def test_real_ptb_with_valid_as_train(tmp_path):
    folder = real_ptb(tmp_path)
    shutil.copyfile(folder / "valid", folder / "train")
    # Valid's own words are too few for the test split: as the reference,
    # this cannot build (1574 test words never occur in valid).
    with pytest.raises(UserError) as excinfo:
        ptb.read_data(str(folder), log=quiet)
    one_line_error(excinfo, "'beleaguered'", "test split",
                   "1574 distinct, 3368 occurrences")
    # Training text = valid + test: every word is known.
    valid = (folder / "valid").read_text().strip()
    test = (folder / "test").read_text().strip()
    (folder / "train").write_text(valid + " \n " + test)
    data = ptb.read_data(str(folder), log=quiet)
    assert data.vocab_size == 7596  # not 10000: the vocabulary of valid+test
    assert len(set(data.valid.tolist())) == 6022  # valid alone
    assert data.valid.size == 73760  # 73759 words and the final <eos>
    assert data.test.size == 82430
    assert data.train.size == 73759 + 1 + 82429 + 1
    assert sorted(data.vocab)[:3] == list(data.index[i] for i in range(3))
    assert data.vocab["<eos>"] == 37 and data.vocab["<unk>"] == 38
    assert np.count_nonzero(data.valid == data.vocab["<eos>"]) == 3370
    assert ptb.num_windows(data.valid, 20, 35) == 105
    assert ptb.num_windows(data.test, 1, 1) == 82429


def test_real_ptb_reproduces_the_golden_token_windows(tmp_path):
    # The goldens were recorded with valid as training text, test as the
    # validation split, and the vocabulary of valid + test (7596 words).
    case = golden_case("ptb_fixed")
    folder = real_ptb(tmp_path)
    valid = (folder / "valid").read_text().strip()
    test = (folder / "test").read_text().strip()
    (folder / "train").write_text(valid + " \n " + test)
    data = ptb.read_data(str(folder), log=quiet)
    inputs = np.load(case / "inputs.npz")
    train = ptb.WindowStream(data.valid, 20, 35)
    for i in range(3):
        x, y = train.next()
        assert np.array_equal(x, inputs["train_step_x_train"][i])
        assert np.array_equal(y.reshape(-1), inputs["train_step_y_train"][i])
    evaluation = ptb.iter_windows(data.test, 20, 35)
    for i in range(2):
        x, y = next(evaluation)
        assert np.array_equal(x, inputs[f"valid_x_batch{i}"])
        assert np.array_equal(y.reshape(-1), inputs[f"valid_y_batch{i}"])


def test_dev_layout_trains_on_valid_and_reproduces_the_golden_windows(
        tmp_path):
    case = golden_case("ptb_fixed")
    folder = real_ptb(tmp_path)
    data = ptb.read_dev_data(str(folder))
    assert data.vocab_size == 7596
    assert np.array_equal(data.train, ptb.read_dev_data(str(folder)).train)
    assert data.train.size == 73760 and data.valid.size == 82430
    assert data.test is data.valid
    inputs = np.load(case / "inputs.npz")
    x, y = ptb.WindowStream(data.train, 20, 35).next()
    assert np.array_equal(x, inputs["train_step_x_train"][0])
    x, y = next(ptb.iter_windows(data.valid, 20, 35))
    assert np.array_equal(x, inputs["valid_x_batch0"])


def test_dev_layout_needs_valid_and_test_text(tmp_path):
    (tmp_path / "valid").write_text("a b \n")
    with pytest.raises(UserError, match="--train_on_valid needs the valid "
                       "and test text files"):
        ptb.read_dev_data(str(tmp_path))
    (tmp_path / "test").write_text("b a \n a \n")
    data = ptb.read_dev_data(str(tmp_path))
    assert data.vocab == {"<eos>": 0, "a": 1, "b": 2}
    assert data.train.tolist() == [1, 2, 0]
    assert data.valid.tolist() == [2, 1, 0, 1, 0]
