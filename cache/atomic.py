"""Atomic files and the store lock, for every on-disk state pybuild keeps (the store's blobs and
indexes, replay records, memo files, container state).

A file is written to a temporary name (owned by this process: `cache.owner`), flushed and
fsynced, renamed over its final name and its directory fsynced: a reader sees the old bytes or
the new ones, and a crash leaves at most the temporary, which prune removes. A cache that
checks itself when read (`durable=False`: the sealed records and memo, whose damage or loss
means only a full build) skips the two fsyncs: a crash may lose or damage it, never the store's
references, which are written durably before it. The lock is one
flock'ed file, exclusive across processes and re-entrant within one (threads wait on an RLock).
Kept light (os, fcntl and C modules at import; pathlib and json only when a file is written), so
the replay path may write through it and `pybuild run` take the lock without loading more.
"""
from __future__ import annotations

import _thread
import fcntl
import os
from stat import S_ISREG as _S_ISREG

from cache import owner


def fsync_dir(path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


SYNC_EACH = 256   # regular files a tree may hold for `sync_tree` to fsync each of them


def sync_tree(top) -> None:
    """Put the tree below `top` (a dir about to be renamed into the store) on disk. Up to
    SYNC_EACH regular files: an fsync of each of them and of each dir, which waits only for
    these inodes. More: one syncfs of the filesystem, which also waits for every other
    program's dirty pages there (what an overlay's unmount does, hence build overlays are
    volatile and their steps' commits sync here)."""
    files: list[str] = []
    dirs: list[str] = []
    for dirpath, _dirs, names in os.walk(top):
        dirs.append(dirpath)
        for name in names:
            p = os.path.join(dirpath, name)
            if _S_ISREG(os.lstat(p).st_mode):   # never a link's target (a host path)
                files.append(p)
        if len(files) > SYNC_EACH:
            _syncfs(top)
            return
    for p in files:
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    for d in dirs:
        fsync_dir(d)


def _syncfs(path) -> None:
    """syncfs(2) of the filesystem holding `path` (Python 3.11's os has none)."""
    import ctypes
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if ctypes.CDLL(None, use_errno=True).syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), os.fsdecode(path))
    finally:
        os.close(fd)


def tmp_file(directory, kind: str = "w", mode: int = 0o600):
    """A new temporary file `<directory>/<kind>-<owner>-<random>` open for writing: (file, path)."""
    from pathlib import Path
    while True:
        path = Path(directory) / owner.temp_name(kind)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        except FileExistsError:
            continue
        return os.fdopen(fd, "wb"), path


def publish(tmp, dest, mode: int = 0o644, *, synced: bool = False, durable: bool = True) -> None:
    """Rename a complete temporary file over `dest` (fsynced first unless `synced`), then fsync
    dest's dir (neither when not `durable`)."""
    if not synced and durable:
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.rename(tmp, dest)
    if durable:
        from pathlib import Path
        fsync_dir(Path(dest).parent)


class replacing:
    """`with replacing(path) as f: f.write(...)`: `path` gets all the bytes or none. The
    temporary lives in `tmp_dir` (default: dest's dir), which must be on dest's filesystem.
    A class, not a contextlib.contextmanager, to keep contextlib out of the import."""

    def __init__(self, dest, *, tmp_dir=None, mode: int = 0o644, kind: str = "w",
                 durable: bool = True):
        from pathlib import Path
        self.dest, self.tmp_dir, self.mode, self.kind = Path(dest), tmp_dir, mode, kind
        self.durable = durable

    def __enter__(self):
        self.f, self.tmp = tmp_file(self.tmp_dir if self.tmp_dir is not None else self.dest.parent,
                                    self.kind)
        return self.f

    def __exit__(self, typ, value, tb):
        try:
            with self.f:
                if typ is None:
                    self.f.flush()
                    if self.durable:
                        os.fsync(self.f.fileno())
            if typ is None:
                publish(self.tmp, self.dest, self.mode, synced=True, durable=self.durable)
                return False
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            raise
        self.tmp.unlink(missing_ok=True)
        return False


def write_file(dest, data: bytes, *, tmp_dir=None, mode: int = 0o644,
               durable: bool = True) -> None:
    with replacing(dest, tmp_dir=tmp_dir, mode=mode, durable=durable) as f:
        f.write(data)


def write_json(dest, value, *, tmp_dir=None, mode: int = 0o644, compact: bool = False) -> None:
    import json
    text = (json.dumps(value, separators=(",", ":")) if compact
            else json.dumps(value, indent=1, sort_keys=True))
    write_file(dest, text.encode(), tmp_dir=tmp_dir, mode=mode)


_locks: dict[str, Lock] = {}    # real path -> the one Lock of this process for that file
_locks_guard = _thread.allocate_lock()    # threading's locks without importing threading


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
                lock.path = os.fspath(path)
                lock._tlock = _thread.RLock()
                lock._depth = 0
                lock._fd = None
            return lock

    def held(self):
        """`with lock.held():` (a context manager, re-entrant)."""
        return self

    def __enter__(self):
        self._tlock.acquire()
        try:
            if self._depth == 0:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except BaseException:
                    os.close(fd)
                    raise
                self._fd = fd
            self._depth += 1
        except BaseException:
            self._tlock.release()
            raise
        return self

    def __exit__(self, *exc) -> bool:
        try:
            self._depth -= 1
            if self._depth == 0:
                os.close(self._fd)
                self._fd = None
        finally:
            self._tlock.release()
        return False
