"""Tests of the CIFAR-10 download (src/cifar10/data.py and
data/download_cifar10.py) against a tiny archive served from 127.0.0.1."""

import functools
import http.server
import io
import os
import socket
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from src.cifar10 import data as cifar
from src.errors import UserError
from tests.cifar_fixtures import make_cifar_archive

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_NAMES = sorted(cifar.DATA_FILES + ("batches.meta",))


def quiet(*_):
    pass


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def served_archive(tmp_path_factory):
    """(url, md5, folder with the fake files) of an archive on 127.0.0.1."""
    folder = tmp_path_factory.mktemp("served")
    path, md5 = make_cifar_archive(str(folder), num_per_batch=6, num_test=5,
                                   seed=9)
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        yield (f"http://127.0.0.1:{port}/{os.path.basename(path)}", md5,
               os.path.join(str(folder), "cifar-10-batches-py"))
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def closed_port_url():
    """A URL on 127.0.0.1 where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/cifar-10-python.tar.gz"


def test_read_data_downloads_into_an_empty_folder_and_reads_it(
        served_archive, tmp_path):
    url, md5, source = served_archive
    target = tmp_path / "cifar10"  # does not exist yet
    lines = []
    data = cifar.read_data(str(target), num_valids=6, download=True,
                           log=lines.append, download_url=url,
                           download_md5=md5)
    # Files land flat in data_path, without the archive or the outside member.
    assert sorted(os.listdir(target)) == DATA_NAMES
    for name in DATA_NAMES:
        assert (target / name).read_bytes() == Path(source, name).read_bytes()
    assert data.num_examples("train") == 24
    assert data.num_examples("valid") == 6
    assert data.num_examples("test") == 5
    expected = cifar.read_data(source, num_valids=6, log=quiet)
    assert np.array_equal(data.images["train"], expected.images["train"])
    assert any(str(target.resolve()) in line for line in lines)
    assert "Reading data" in lines


def test_download_cifar10_without_md5_check(served_archive,
                                                     tmp_path):
    url, _, _ = served_archive
    result = cifar.download_cifar10(str(tmp_path), url=url, md5=None,
                                    log=quiet)
    assert result == str(tmp_path)
    assert sorted(os.listdir(tmp_path)) == DATA_NAMES


def test_read_data_does_not_download_when_files_are_present(
        served_archive, tmp_path):
    url, md5, source = served_archive
    cifar.download_cifar10(str(tmp_path), url=url, md5=md5, log=quiet)
    data = cifar.read_data(str(tmp_path), num_valids=0, download=True,
                           log=quiet, download_url=closed_port_url())
    assert data.num_examples("train") == 30


def test_wrong_md5_is_a_user_error_and_leaves_no_files(served_archive,
                                                       tmp_path):
    url, _, _ = served_archive
    with pytest.raises(UserError) as excinfo:
        cifar.read_data(str(tmp_path), download=True, log=quiet,
                        download_url=url, download_md5="0" * 32)
    message = str(excinfo.value)
    assert "\n" not in message
    assert "md5" in message and "0" * 32 in message
    assert os.listdir(tmp_path) == []


def test_unreachable_url_is_a_one_line_user_error_naming_the_files(tmp_path):
    url = closed_port_url()
    with pytest.raises(UserError) as excinfo:
        cifar.read_data(str(tmp_path), download=True, log=quiet,
                        download_url=url)
    message = str(excinfo.value)
    assert "\n" not in message
    assert url in message and str(tmp_path) in message
    assert "data_batch_1" in message and "test_batch" in message
    assert "python data/download_cifar10.py --data_path=" in message
    assert os.listdir(tmp_path) == []


def test_missing_archive_on_the_server_is_a_user_error(served_archive,
                                                       tmp_path):
    url, _, _ = served_archive
    with pytest.raises(UserError) as excinfo:
        cifar.download_cifar10(str(tmp_path), url=url + ".missing",
                               log=quiet)
    message = str(excinfo.value)
    assert "\n" not in message and "HTTP 404" in message


def test_archive_without_the_batch_files_is_a_user_error(tmp_path):
    folder = tmp_path / "bad"
    path, md5 = make_cifar_archive(str(folder), num_per_batch=2, num_test=2)
    url = Path(path).as_uri()  # urllib also opens file:// URLs
    # Rebuild the archive without its test_batch member.
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None)
                   for m in tar.getmembers()]
    with tarfile.open(path, "w:gz") as tar:
        for member, content in members:
            if not member.name.endswith("test_batch"):
                tar.addfile(member, io.BytesIO(content) if content else None)
    with pytest.raises(UserError) as excinfo:
        cifar.download_cifar10(str(tmp_path / "out"), url=url, md5=None,
                               log=quiet)
    assert "test_batch" in str(excinfo.value)


def run_script(*args):
    return subprocess.run(
        [sys.executable, "data/download_cifar10.py", *args], cwd=REPO_ROOT,
        capture_output=True, text=True, timeout=120)


def test_download_script_runs_from_the_repo_root(served_archive, tmp_path):
    url, md5, _ = served_archive
    target = tmp_path / "cifar10"
    done = run_script(f"--data_path={target}", f"--url={url}", f"--md5={md5}")
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(target)) == DATA_NAMES
    again = run_script(f"--data_path={target}", f"--url={closed_port_url()}")
    assert again.returncode == 0, again.stderr
    assert "already" in again.stdout


def test_download_script_reports_failure_in_one_line(tmp_path):
    done = run_script(f"--data_path={tmp_path}", f"--url={closed_port_url()}")
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines()
              if line.startswith("error: ")]
    assert len(errors) == 1 and "data_batch_1" in errors[0]
