"""One layer blob from a registry or an OCI layout dir into the store's tmp/, checked: its bytes
against the descriptor's digest and size while they stream (the source's fetch_blob), and its
tar against the config's diff_id, hashed on a thread of its own as the bytes arrive (no second
pass over the file). Pull and build-cache import both take layers this way; the caller moves
the file in (`store.add_blob_file`) once everything it fetches checked out."""
from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

from cache import compress as cz
from cache.errors import StoreError
from cache.registry.errors import DigestMismatch, RegistryError

DEPTH = 4  # received chunks queued per layer for its diff_id thread: constant memory
_WRITEBACK = 8 << 20  # bytes written between two writeback kicks


@dataclass
class Staged:
    tmp: Path          # the verified blob, in the store's tmp/ (the caller removes it)
    compression: str   # gzip | zstd | none, as sniffed
    tar_size: int


def stage(store, source, desc: dict, diff_id: str, *, progress=None, verifying=None) -> Staged:
    """Fetch `desc`'s blob from `source` (fsynced here, in the caller's thread, not later under
    the store lock); `progress(bytes so far)`, `verifying()` when the bytes are all in. A
    mismatch raises DigestMismatch and leaves nothing behind."""
    digest, size = desc["digest"], desc.get("size")
    out, tmp = store.tmp_file("layer")
    try:
        sink = _TarHasher(out)
        try:
            with out:
                source.fetch_blob(digest, sink, size=size, progress=progress)
                if verifying is not None:
                    verifying()
                out.flush()
                os.fsync(out.fileno())
        finally:
            kind, got, tar_size, err = sink.close()
        where = f"{source.name}: layer {digest}"
        if err is not None:
            raise DigestMismatch(f"{where}: {err}") from None
        if kind == "none":
            got, tar_size = digest, size  # the blob is the tar: fetch_blob checked its digest
        _same(got, diff_id, where)
        return Staged(tmp, kind, tar_size)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check(path, diff_id: str, where: str) -> tuple[str, int]:
    """(compression, tar size) of a blob file already here whose tar must hash to `diff_id`."""
    try:
        kind, got, tar_size = cz.layer_digest(path)
    except StoreError as e:
        raise DigestMismatch(f"{where}: {e}") from None
    _same(got, diff_id, where)
    return kind, tar_size


def _same(got: str, diff_id: str, where: str) -> None:
    if got != diff_id:
        raise DigestMismatch(f"{where} does not match the config's diff_id {diff_id} (its tar "
                             f"hashes to {got}); nothing was stored")


_END = object()


class _TarHasher:
    """What fetch_blob writes a layer blob into: the temporary file, and a queue that a thread
    of its own reads through cache.compress's decompressors to hash the tar, as the bytes
    arrive. `close()` -> (compression, diff_id, tar size, error or None). Once the tar is
    known to be bad the rest of the blob is only written (its digest still decides what the
    user is told: wrong bytes from the registry, or a broken layer)."""

    def __init__(self, out):
        self.out = out
        self.written = self.flushed = 0
        self.q: queue.Queue = queue.Queue(DEPTH)
        self.kind, self.digest, self.size, self.err = None, None, 0, None
        self._cur, self._off = b"", 0
        self.t = threading.Thread(target=self._run, name="pull-diffid", daemon=True)
        self.t.start()

    def write(self, data: bytes) -> int:
        self.out.write(data)
        self.written += len(data)
        if self.written - self.flushed >= _WRITEBACK:
            # start writing the last window back now (without waiting), so the fsync at the
            # end finds little left to do and the disk works while the network does
            self.out.flush()
            os.posix_fadvise(self.out.fileno(), self.flushed, self.written - self.flushed,
                             os.POSIX_FADV_DONTNEED)
            self.flushed = self.written
        if self.err is None and self.kind != "none":
            self.q.put(data)  # fetch_blob hands over a fresh bytes object per read: no copy
        return len(data)

    def close(self):
        self.q.put(_END)
        self.t.join()
        return self.kind, self.digest, self.size, self.err

    def read(self, n: int = -1) -> bytes:
        """The decompressor's input: at most n bytes of what came so far, b"" at the end."""
        while self._off >= len(self._cur):
            item = self.q.get()
            if item is _END:
                self.q.put(_END)  # every later read sees the end too
                return b""
            self._cur, self._off = item, 0
        if n is None or n < 0 or (self._off == 0 and n >= len(self._cur)):
            data, self._off = self._cur[self._off:] if self._off else self._cur, len(self._cur)
            return data
        data = self._cur[self._off:self._off + n]
        self._off += len(data)
        return data

    def _run(self) -> None:
        try:
            head = b""
            while len(head) < cz.SNIFF_BYTES and (more := self.read(cz.SNIFF_BYTES - len(head))):
                head += more
            kind = cz.sniff(head)
            if kind not in cz.MEDIA_TYPES:
                raise StoreError(f"it is {kind}-compressed: image layers are gzip, zstd or "
                                 "uncompressed tars")
            self.kind = kind
            if kind == "none":  # the tar is the blob: nothing to do but let the writer go on
                return
            self._cur, self._off = head + self._cur[self._off:], 0
            h = cz.HashingWriter()
            r = cz.open_decompressed(self)
            while data := r.read(cz.CHUNK):
                h.write(data)
            self.digest, self.size = h.digest, h.size
        except StoreError as e:
            self.err = e
        except BaseException as e:  # noqa: BLE001 - reported by close() in the caller's thread
            self.err = RegistryError(f"cannot check the layer's tar: {e}")
        finally:
            while self.q.get() is not _END:  # let the writer finish whatever happened here
                pass
