"""Streaming a download into a file with its md5, for the data modules
(each builds its own one-line errors around it)."""

import hashlib
import os
import urllib.error
import urllib.request

_CHUNK = 1 << 20


class DownloadFailed(Exception):
    """The download did not complete; `reason` says why in a few words."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def fetch(url, out, log=None, timeout=60):
    """Writes the body at `url` into the open binary file `out`; returns
    its md5 (hex). With `log`, reports progress every 10% when the size is
    known. Raises DownloadFailed for network, HTTP and file errors."""
    digest = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0)
            done, next_report = 0, 0.1
            while True:
                chunk = response.read(_CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if log and total and done >= next_report * total:
                    log(f"  {done / total:.0%} of {total >> 20} MB")
                    next_report += 0.1
    except (urllib.error.URLError, OSError, ValueError) as e:
        if isinstance(e, urllib.error.HTTPError):
            raise DownloadFailed(f"HTTP {e.code} {e.reason}") from None
        raise DownloadFailed(getattr(e, "reason", None) or e) from None
    return digest.hexdigest()


def remove_quietly(path):
    """Removes `path` if it exists."""
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
