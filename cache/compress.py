"""Deterministic gzip/zstd layer compression and sniffing decompression, all streaming.

gzip: our own 10-byte header (MTIME 0, no name, XFL 0, OS 255 like Go) around raw zlib deflate
at level 6, so the bytes depend only on the input and the zlib build. zstd: python-zstandard at
level 3 in multi-threaded mode (threads=-1): zstd's output is the same for any worker count >= 1,
so every machine gets the same bytes for the same library version.
"""
from __future__ import annotations

import hashlib
import queue
import struct
import threading
import zlib

from cache.errors import StoreError

MT_TAR = "application/vnd.oci.image.layer.v1.tar"
MT_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MT_DOCKER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MT_DOCKER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
MEDIA_TYPES = {"gzip": MT_GZIP, "zstd": MT_ZSTD, "none": MT_TAR}
GZIP_LEVEL = 6
ZSTD_LEVEL = 3
CHUNK = 1 << 20


class HashingWriter:
    """Counts and sha256-hashes what passes through to `out` (which may be None: a sink)."""

    def __init__(self, out=None):
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self.sha.update(data)
        self.size += len(data)
        if self.out is not None:
            self.out.write(data)
        return len(data)

    def flush(self) -> None:
        pass

    @property
    def digest(self) -> str:
        return "sha256:" + self.sha.hexdigest()


class GzipWriter:
    def __init__(self, out):
        self.out = out
        self.crc = 0
        self.size = 0
        self.z = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS, 8, zlib.Z_DEFAULT_STRATEGY)
        out.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")

    def write(self, data) -> int:
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)
        c = self.z.compress(data)
        if c:
            self.out.write(c)
        return len(data)

    def close(self) -> None:
        self.out.write(self.z.flush() + struct.pack("<II", self.crc, self.size & 0xFFFFFFFF))


class ZstdWriter:
    """stream_writer, not compressobj: same bytes, ~1/3 less memory in multi-threaded mode."""

    def __init__(self, out):
        import zstandard
        self._frame = zstandard.FLUSH_FRAME
        self.w = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1).stream_writer(
            out, closefd=False)

    def write(self, data) -> int:
        self.w.write(data)
        return len(data)

    def close(self) -> None:
        self.w.flush(self._frame)


class PlainWriter:
    def __init__(self, out):
        self.out = out

    def write(self, data) -> int:
        return self.out.write(data)

    def close(self) -> None:
        pass


class ThreadedWriter:
    """Hands writes to a thread that runs `inner.write` (compression releases the GIL), so
    reading+hashing the tar and compressing it use two cores. Data must not be mutated after
    write() (pass bytes). close() flushes, closes `inner` and re-raises a worker error."""

    def __init__(self, inner, depth: int = 8):
        self.inner = inner
        self.q: queue.Queue = queue.Queue(depth)
        self.err: BaseException | None = None
        self.t = threading.Thread(target=self._run, name="layer-compress", daemon=True)
        self.t.start()

    def _run(self) -> None:
        while (data := self.q.get()) is not None:
            if self.err is None:
                try:
                    self.inner.write(data)
                except BaseException as e:  # noqa: BLE001 - re-raised in the writer's thread
                    self.err = e

    def write(self, data) -> int:
        if self.err is not None:
            self.close()
        self.q.put(bytes(data))
        return len(data)

    def close(self) -> None:
        if self.t.is_alive():
            self.q.put(None)
            self.t.join()
        if self.err is not None:
            raise self.err
        self.inner.close()


def compressor(kind: str, out, *, threaded: bool = False):
    """A writer with write()/close() that compresses into `out` (`gzip`, `zstd` or `none`);
    `threaded` runs the compression in a second thread (same bytes, more throughput)."""
    if kind == "gzip":
        w = GzipWriter(out)
    elif kind == "zstd":
        w = ZstdWriter(out)
    elif kind == "none":
        return PlainWriter(out)
    else:
        raise StoreError(f"unknown compression {kind!r} (use gzip or zstd)")
    return ThreadedWriter(w) if threaded else w


def sniff(head: bytes) -> str:
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return "none"


class _GzipReader:
    """Multi-member gzip stream reader with a clear error on truncation or corruption."""

    def __init__(self, raw):
        self.raw = raw
        self.d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.done = False

    def read(self, n: int = CHUNK) -> bytes:
        while not self.done:
            if self.d.unconsumed_tail:
                data = self.d.unconsumed_tail
            elif self.d.eof:
                data = self.d.unused_data or self.raw.read(CHUNK)
                if not data.strip(b"\0"):  # end, or zero padding after the last member
                    self.done = True
                    return b""
                self.d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            else:
                data = self.raw.read(CHUNK)
                if not data:
                    raise StoreError("truncated gzip stream (unexpected end of data)")
            try:
                out = self.d.decompress(data, n)
            except zlib.error as e:
                raise StoreError(f"corrupt gzip stream ({e})") from None
            if out:
                return out
        return b""


class _ZstdReader:
    def __init__(self, raw):
        import zstandard
        self.r = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)

    def read(self, n: int = CHUNK) -> bytes:
        import zstandard
        try:
            return self.r.read(n)
        except zstandard.ZstdError as e:
            raise StoreError(f"corrupt zstd stream: {e}") from None


class _Prefixed:
    def __init__(self, head: bytes, raw):
        self.head, self.raw = head, raw

    def read(self, n: int = CHUNK) -> bytes:
        if self.head:
            out, self.head = self.head[:n], self.head[n:]
            return out
        return self.raw.read(n)


def open_decompressed(raw):
    """A reader of the uncompressed bytes of `raw` (gzip, zstd or plain, sniffed)."""
    head = raw.read(4)
    kind = sniff(head)
    src = _Prefixed(head, raw)
    if kind == "gzip":
        return _GzipReader(src)
    if kind == "zstd":
        return _ZstdReader(src)
    return src
