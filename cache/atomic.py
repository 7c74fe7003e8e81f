"""Atomic files and the store lock, for every on-disk state pybuild keeps (the store's blobs and
indexes, replay records, memo files, container state).

A file is written to a temporary name (owned by this process: `cache.owner`), flushed and
fsynced, renamed over its final name and its directory fsynced: a reader sees the old bytes or
the new ones, and a crash leaves at most the temporary, which prune removes. The lock is one
flock'ed file, exclusive across processes and re-entrant within one (threads wait on an RLock).
Kept light (os, fcntl, json, threading) so the replay path may write through it.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from pathlib import Path

from cache import owner


def fsync_dir(path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tmp_file(directory, kind: str = "w", mode: int = 0o600):
    """A new temporary file `<directory>/<kind>-<owner>-<random>` open for writing: (file, path)."""
    while True:
        path = Path(directory) / owner.temp_name(kind)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        except FileExistsError:
            continue
        return os.fdopen(fd, "wb"), path


def publish(tmp, dest, mode: int = 0o644, *, synced: bool = False) -> None:
    """Rename a complete temporary file over `dest` (fsynced first unless `synced`), then fsync
    dest's dir."""
    if not synced:
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.rename(tmp, dest)
    fsync_dir(Path(dest).parent)


@contextlib.contextmanager
def replacing(dest, *, tmp_dir=None, mode: int = 0o644, kind: str = "w"):
    """`with replacing(path) as f: f.write(...)`: `path` gets all the bytes or none. The
    temporary lives in `tmp_dir` (default: dest's dir), which must be on dest's filesystem."""
    dest = Path(dest)
    f, tmp = tmp_file(tmp_dir if tmp_dir is not None else dest.parent, kind)
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        publish(tmp, dest, mode, synced=True)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_file(dest, data: bytes, *, tmp_dir=None, mode: int = 0o644) -> None:
    with replacing(dest, tmp_dir=tmp_dir, mode=mode) as f:
        f.write(data)


def write_json(dest, value, *, tmp_dir=None, mode: int = 0o644, compact: bool = False) -> None:
    text = (json.dumps(value, separators=(",", ":")) if compact
            else json.dumps(value, indent=1, sort_keys=True))
    write_file(dest, text.encode(), tmp_dir=tmp_dir, mode=mode)


_locks: dict[str, Lock] = {}    # real path -> the one Lock of this process for that file
_locks_guard = threading.Lock()


class Lock:
    """An exclusive lock on the file `path`: across processes (flock) and threads (RLock),
    re-entrant. Closing the file drops the flock, so a killed holder never leaves it taken.

    `Lock(path)` gives one object per real path per process: two separate instances would each
    open the file, and flock on the second fd would wait for the first forever."""

    def __new__(cls, path):
        key = os.path.realpath(path)
        with _locks_guard:
            lock = _locks.get(key)
            if lock is None:
                lock = _locks[key] = super().__new__(cls)
                lock.path = Path(path)
                lock._tlock = threading.RLock()
                lock._depth = 0
                lock._fd = None
            return lock

    @contextlib.contextmanager
    def held(self):
        with self._tlock:
            if self._depth == 0:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except BaseException:
                    os.close(fd)
                    raise
                self._fd = fd
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    os.close(self._fd)
                    self._fd = None
