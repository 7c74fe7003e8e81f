"""ADD <url>: download to a file the way BuildKit's HTTP source does (stdlib urllib only).

The file is named after the URL path's last element (`__unnamed__` when there is none), is
mode 0600, takes `Last-Modified` as its mtime, and is checked against `--checksum=sha256:<hex>`
while it streams; a mismatch or a non-2xx answer is a BuildError and leaves no file behind.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import urllib.error
import urllib.parse
import urllib.request
from email.utils import parsedate_to_datetime
from pathlib import Path

from builder.errors import BuildError
from grammar import gopath

_TIMEOUT = 60


def url_filename(url: str) -> str:
    """BuildKit's name for an ADD'ed URL: the path's base, else `__unnamed__`."""
    try:
        path = urllib.parse.urlsplit(url).path
    except ValueError:
        return "__unnamed__"
    base = posixpath.basename(gopath.clean(path)) if path else ""
    if base in ("", ".", "/", ".."):
        return "__unnamed__"
    return base


def parse_checksum(checksum: str) -> str:
    """`sha256:<64 hex>` -> the hex digest; anything else is a BuildError."""
    algo, sep, hexd = checksum.partition(":")
    if not sep or algo != "sha256":
        raise BuildError(f"unsupported digest algorithm: {checksum!r} (want sha256:<hex>)")
    if not re.fullmatch(r"[0-9a-f]{64}", hexd):
        raise BuildError(f"invalid checksum digest format: {checksum!r}")
    return hexd


def fetch_url(url: str, dest_dir: Path, *, checksum: str | None = None,
              timeout: float = _TIMEOUT) -> Path:
    """Download `url` into `dest_dir`; returns the file's path."""
    want = parse_checksum(checksum) if checksum else None
    name = url_filename(url)
    dest = Path(dest_dir) / name
    tmp = Path(dest_dir) / f".{name}.part{os.getpid()}"
    req = urllib.request.Request(url, headers={"User-Agent": "pybuild"})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        raise BuildError(f"failed to load {url}: invalid response status {e.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise BuildError(f"failed to load {url}: {reason}") from None
    h = hashlib.sha256()
    try:
        with resp:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                while True:
                    buf = resp.read(1 << 20)
                    if not buf:
                        break
                    h.update(buf)
                    out.write(buf)
            last_mod = resp.headers.get("Last-Modified")
        got = h.hexdigest()
        if want is not None and got != want:
            raise BuildError(f"digest mismatch for {url}: sha256:{got} (expected: {checksum})")
        os.chmod(tmp, 0o600)
        if last_mod:
            try:
                ts = parsedate_to_datetime(last_mod).timestamp()
                os.utime(tmp, (ts, ts))
            except (TypeError, ValueError, OverflowError):
                pass
        os.replace(tmp, dest)
    except OSError as e:
        raise BuildError(f"failed to load {url}: {e.strerror or e}") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest
