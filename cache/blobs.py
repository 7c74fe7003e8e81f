"""Content-addressed blobs: `blobs/sha256/<hex>`, each written whole under its digest.

A new blob is held for this process (cache.leases) and moved in under the store lock: until an
index names it (a layer record, an image, a manifest) a prune keeps it for the writer.
"""
from __future__ import annotations

import os
from pathlib import Path

from cache import atomic, layout
from cache.errors import StoreError
from cache.layout import is_digest
from cache.leases import Leases

__all__ = ["Blobs", "check_digest", "is_digest"]


def check_digest(d: str, what: str = "digest") -> str:
    if not is_digest(d):
        raise StoreError(f"invalid {what}: {d!r} (expected sha256:<64 hex digits>)")
    return d


class Blobs:
    def __init__(self, root: Path, tmp: Path, lock: atomic.Lock, leases: Leases):
        self.dir = Path(root) / layout.BLOBS_DIR
        self.tmp = Path(tmp)
        self.lock, self.leases = lock, leases

    def path(self, digest: str) -> Path:
        return self.dir / check_digest(digest)[7:]

    def has(self, digest: str) -> bool:
        return self.path(digest).exists()

    def size(self, digest: str) -> int:
        return self.path(digest).stat().st_size

    def read(self, digest: str) -> bytes:
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"blob {digest} is missing from the store (run `pybuild prune`, then "
                             "pull or load the image again)") from None

    def put(self, data: bytes) -> str:
        from cache.keys import digest_bytes
        d = digest_bytes(data)
        self.leases.hold(d)  # first: a prune from now on keeps it, present or written below
        if not self.path(d).exists():
            f, tmp = atomic.tmp_file(self.tmp, "w")
            try:
                with f:
                    f.write(data)
                self._move_in(tmp, d)
            finally:
                tmp.unlink(missing_ok=True)
        return d

    def publish(self, tmp, digest: str, *, synced: bool = False) -> None:
        """Move a complete temporary file in as blob `digest` (the caller checked the digest),
        held for this process until an index names it; `synced`: the caller fsynced it."""
        self.leases.hold(digest)
        self._move_in(tmp, digest, synced=synced)

    def _move_in(self, tmp, digest: str, *, synced: bool = False) -> None:
        if not synced:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())  # here, not under the lock
        with self.lock.held():
            atomic.publish(tmp, self.path(digest), synced=True)

    def ingest(self, src, expected: str | None = None, limit: int | None = None) -> tuple[str, int]:
        """Copy a stream into blobs/ while hashing; a digest mismatch leaves nothing behind."""
        from cache.compress import CHUNK, HashingWriter
        f, tmp = atomic.tmp_file(self.tmp, "in")
        try:
            with f:
                h = HashingWriter(f)
                while True:
                    data = src.read(CHUNK)
                    if not data:
                        break
                    h.write(data)
                    if limit is not None and h.size > limit:
                        raise StoreError("blob is larger than its descriptor says")
            if expected is not None and h.digest != expected:
                raise StoreError(f"digest mismatch: expected {expected}, got {h.digest}")
            self.publish(tmp, h.digest)
            return h.digest, h.size
        finally:
            tmp.unlink(missing_ok=True)

    def digests(self) -> list[str]:
        """Every blob on disk (for gc)."""
        return ["sha256:" + e.name for e in os.scandir(self.dir) if is_digest("sha256:" + e.name)]

    def remove(self, digest: str) -> int:
        """Delete a blob; returns the bytes freed (0 when it was already gone)."""
        path = self.path(digest)
        try:
            size = path.lstat().st_size
            path.unlink()
        except FileNotFoundError:
            return 0
        return size
