"""What a running process holds: BuildKit's and containerd's leases, without a daemon.

Each process that uses the store appends the digests it relies on (the image a build starts
from, every layer dir it mounts or commits, the image it stored and is about to tag) to its own
file `leases/<pid>.<start>` (cache.owner). gc treats the digests of live owners as roots, and
removes the files of dead ones; a process also removes its own at exit. A digest is held
*before* the store lock is taken to check that it is there, so a prune either finished before
the check (which then sees it gone) or finds the hold.
"""
from __future__ import annotations

import _thread
import atexit
import os

from cache import layout, owner

_lock = _thread.allocate_lock()   # threading.Lock() without importing threading (~4 ms)
_mine: set[tuple[str, str]] = set()  # (lease dir, owner token) this process wrote


def _drop_mine(only: str | None = None) -> None:
    tok = owner.token()
    with _lock:
        for d, t in list(_mine):
            if t == tok and only in (None, d):
                _mine.discard((d, t))
                try:
                    os.unlink(os.path.join(d, t))
                except OSError:
                    pass


atexit.register(_drop_mine)


class Leases:
    def __init__(self, root):
        self.dir = os.path.join(os.fspath(root), layout.LEASES_DIR)

    def hold(self, *digests: str) -> None:
        """Keep `digests` (and what they reference) from gc while this process lives."""
        tok = owner.token()
        path = os.path.join(self.dir, tok)
        line = "".join(d + "\n" for d in digests).encode()
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        with _lock:
            _mine.add((self.dir, tok))
            # opened for each hold, not kept: a process may use many stores (tests do)
            try:
                fd = os.open(path, flags, 0o644)
            except FileNotFoundError:
                os.makedirs(self.dir, exist_ok=True)
                fd = os.open(path, flags, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)

    def release(self) -> None:
        """Let go of everything this process holds in this store (done at exit anyway)."""
        _drop_mine(self.dir)

    def held_by_others(self) -> set[str]:
        """Digests held by other live processes; the files of dead ones are removed. This
        process's own holds do not bind its own prune (`rmi` looks an image up, then drops it)."""
        out: set[str] = set()
        try:
            entries = list(os.scandir(self.dir))
        except FileNotFoundError:
            return out
        me = owner.token()
        for e in entries:
            if e.name == me:
                continue
            if not owner.alive(e.name):
                try:
                    os.unlink(e.path)
                except OSError:
                    pass
                continue
            try:
                with open(e.path) as f:
                    out.update(line.strip() for line in f if line.startswith("sha256:"))
            except OSError:
                pass
        return out
