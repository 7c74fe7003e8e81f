"""Deterministic gzip/zstd layer compression and sniffing decompression (the one place a
stream's compression is recognised: layers, archives to load, ADD's local tars), all streaming.

gzip: our own 10-byte header (MTIME 0, no name, XFL 0, OS 255 like Go) around raw zlib deflate
at level 6, so the bytes depend only on the input and the zlib build. zstd: python-zstandard at
level 3, single-threaded (its bytes do not depend on the core count or on how the input is split),
run on a pipeline thread of its own.
"""
from __future__ import annotations

import collections
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
DEPTH = 16  # buffers per ThreadedWriter pool: 2 x 16 MiB in flight at most


def copy_exactly(src, out, n: int, short: str) -> None:
    """Copy exactly `n` bytes from the file `src` (at its position) to `out`, CHUNK at a time;
    StoreError(`short`) if `src` ends first."""
    while n:
        data = src.read(min(CHUNK, n))
        if not data:
            raise StoreError(short)
        out.write(data)
        n -= len(data)


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
    """Single-threaded zstd (nbWorkers=0): its bytes depend only on the input and the zstd
    version, never on how writes are split or on the number of cores. Parallelism comes from
    ThreadedWriter around it (same bytes, via stream_reader); zstd's own worker mode spends
    ~25% more CPU (job buffer copies, overlap), which a 2-core machine cannot spare."""

    def __init__(self, out):
        import zstandard
        self._frame = zstandard.FLUSH_FRAME
        self.w = zstandard.ZstdCompressor(level=ZSTD_LEVEL).stream_writer(
            out, closefd=False, write_size=CHUNK)

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


_STOP = object()


class _GzipStream:
    """GzipWriter's bytes, pulled: readinto() fills a buffer with compressed data, reading input
    from `source.read()` as needed (the pipeline's shape; see ThreadedWriter)."""

    def __init__(self, source):
        self.source = source
        self.pending = bytearray()
        self.w = GzipWriter(self)
        self.eof = False

    def write(self, data) -> int:  # GzipWriter's output
        self.pending += data
        return len(data)

    def readinto(self, buf) -> int:
        while len(self.pending) < len(buf) and not self.eof:
            data = self.source.read(CHUNK)
            if data:
                self.w.write(data)
            else:
                self.w.close()
                self.eof = True
        n = min(len(buf), len(self.pending))
        buf[:n] = self.pending[:n]
        del self.pending[:n]
        return n


def _pull(kind: str, source):
    if kind == "zstd":
        import zstandard
        return zstandard.ZstdCompressor(level=ZSTD_LEVEL).stream_reader(source, read_size=CHUNK)
    return _GzipStream(source)


class ThreadedWriter:
    """Compression on a second thread, at constant memory, with no allocation per chunk.

    The producer (the tar writer) fills CHUNK-sized buffers from this writer's pool (`block()`,
    `write_block()`; `write()` copies into them). The compress thread pulls them through the
    compressor (zstd's stream_reader, which reads input through `read()`) into buffers of a
    second pool and queues those, in order, for `out` (hashing the blob, writing the file).
    That last step has no thread of its own: whichever thread would otherwise wait (the
    producer for a free buffer, the compressor for input) does it, one at a time under a lock,
    so two busy threads share three jobs (diff_id+read, compress, digest+write) on two cores.
    An error in either thread is re-raised in the producer by block() or close()."""

    def __init__(self, kind: str, out, depth: int = DEPTH):
        self.out = out
        self.free_in: queue.SimpleQueue = queue.SimpleQueue()
        self.free_out: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(depth):
            self.free_in.put(bytearray(CHUNK))
            self.free_out.put(bytearray(CHUNK))
        self.inq: queue.SimpleQueue = queue.SimpleQueue()
        self.done: collections.deque = collections.deque()
        self.sink_lock = threading.Lock()
        self.err: BaseException | None = None
        self.lent = None
        self.stopped = False
        self.reader = _pull(kind, self)
        self.t = threading.Thread(target=self._compress, name="layer-compress", daemon=True)
        self.t.start()

    # ---- the compress thread ------------------------------------------------------------

    def _compress(self) -> None:
        try:
            while True:
                buf = self._get(self.free_out, poll=False)
                n = self.reader.readinto(buf)
                if not n:
                    self.free_out.put(buf)
                    return
                self.done.append((buf, n))
        except BaseException as e:  # noqa: BLE001 - re-raised in the producer's thread
            self.err = self.err or e
            if self.lent is not None:
                self.free_in.put(self.lent)
            while (item := self.inq.get()) is not _STOP:  # give every buffer back until close
                self.free_in.put(item[0])

    def read(self, _size: int = -1):
        """The compressor's input: the next filled buffer (the previous one is free again)."""
        if self.lent is not None:
            self.free_in.put(self.lent)
            self.lent = None
        item = self._get(self.inq, poll=False)
        if item is _STOP:
            return b""
        self.lent = item[0]
        return memoryview(item[0])[:item[1]]

    # ---- shared -------------------------------------------------------------------------

    def _sink_one(self) -> bool:
        """Hand the oldest compressed buffer to `out`, unless another thread is doing so."""
        if not self.done or not self.sink_lock.acquire(False):
            return False
        try:
            try:
                buf, n = self.done.popleft()
            except IndexError:
                return False
            if self.err is None:
                try:
                    self.out.write(memoryview(buf)[:n])
                except BaseException as e:  # noqa: BLE001 - re-raised in the producer's thread
                    self.err = e
        finally:
            self.sink_lock.release()
        self.free_out.put(buf)
        return True

    def _get(self, q: queue.SimpleQueue, *, poll: bool):
        """q.get(), sinking compressed buffers meanwhile instead of sleeping. Only the compress
        thread adds to `done`, so it may block when there is nothing to sink; the producer polls,
        to help as soon as there is."""
        while True:
            try:
                return q.get_nowait()
            except queue.Empty:
                pass
            if self._sink_one():
                continue
            if not poll:
                return q.get()
            if self.err is not None:
                self._fail()
            try:
                return q.get(timeout=0.0005)
            except queue.Empty:
                pass

    # ---- the producer -------------------------------------------------------------------

    def block(self) -> bytearray:
        """A free buffer of CHUNK bytes to fill and pass to write_block()."""
        if self.err is not None:
            self._fail()
        return self._get(self.free_in, poll=True)

    def write_block(self, buf: bytearray, n: int) -> None:
        """Queue the first `n` bytes of `buf` (from block()); it must not be touched after."""
        self.inq.put((buf, n))

    def give_back(self, buf: bytearray) -> None:
        """Return an unused block()."""
        self.free_in.put(buf)

    def write(self, data) -> int:
        mv = memoryview(data).cast("B")
        for i in range(0, len(mv), CHUNK):
            part = mv[i:i + CHUNK]
            buf = self.block()
            buf[:len(part)] = part
            self.write_block(buf, len(part))
        return len(data)

    def _stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.inq.put(_STOP)

    def _end(self) -> None:
        self._stop()
        self.t.join()
        self.reader = None  # it refers back to self: free the buffers now, not at the next gc

    def _fail(self):
        self._end()
        raise self.err

    def abort(self) -> None:
        """Stop the compress thread without writing the rest (the producer failed)."""
        self.err = self.err or StoreError("layer writing was aborted")
        self._end()

    def close(self) -> None:
        """Write the rest and the compressor's end; re-raises an error of either thread."""
        self._stop()
        while self.t.is_alive():
            if not self._sink_one():
                self.t.join(0.0005)
        while self._sink_one():
            pass
        self._end()
        if self.err is not None:
            raise self.err


def compressor(kind: str, out, *, threaded: bool = False):
    """A writer with write()/close() that compresses into `out` (`gzip`, `zstd` or `none`);
    `threaded`: a ThreadedWriter (same bytes, compression beside the caller's thread)."""
    makers = {"gzip": GzipWriter, "zstd": ZstdWriter, "none": PlainWriter}
    if kind not in makers:
        raise StoreError(f"unknown compression {kind!r} (use gzip or zstd)")
    if kind == "none" or not threaded:
        return makers[kind](out)
    return ThreadedWriter(kind, out)


# magic numbers of the compressions pybuild reads (moby's DecompressStream set): layers are
# gzip, zstd or none; a local ADD archive or an archive to load may also be bzip2 or xz
_MAGIC = ((b"\x1f\x8b", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd"), (b"BZh", "bzip2"),
          (b"\xfd7zXZ\x00", "xz"))
SNIFF_BYTES = 6


def sniff(head: bytes) -> str:
    """The compression of a stream from its first SNIFF_BYTES bytes: gzip, zstd, bzip2, xz or
    none (plain)."""
    return next((kind for magic, kind in _MAGIC if head.startswith(magic)), "none")


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


class _StdlibReader:
    """bzip2 or xz through the stdlib's multi-stream readers, with our errors."""

    def __init__(self, raw, kind: str):
        if kind == "bzip2":
            import bz2
            self.f = bz2.BZ2File(raw)
        else:
            import lzma
            self.f = lzma.LZMAFile(raw)  # noqa: SIM115 - a stream reader, like the others here
        self.kind = kind

    def read(self, n: int = CHUNK) -> bytes:
        import lzma
        try:
            return self.f.read(n)
        except EOFError:
            raise StoreError(f"truncated {self.kind} stream (unexpected end of data)") from None
        except (OSError, lzma.LZMAError) as e:
            raise StoreError(f"corrupt {self.kind} stream ({e})") from None


class Prefixed:
    """A reader that gives `head` (bytes already read from `raw`) back before the rest."""

    def __init__(self, head: bytes, raw):
        self.head, self.raw = head, raw

    def read(self, n: int = CHUNK) -> bytes:
        if self.head:
            out, self.head = self.head[:n], self.head[n:]
            return out
        return self.raw.read(n)


def open_decompressed(raw):
    """A reader (read(n) only) of the uncompressed bytes of `raw`, its compression sniffed;
    a corrupt or truncated stream raises StoreError."""
    head = raw.read(SNIFF_BYTES)
    kind = sniff(head)
    src = Prefixed(head, raw)
    if kind == "gzip":
        return _GzipReader(src)
    if kind == "zstd":
        return _ZstdReader(src)
    if kind in ("bzip2", "xz"):
        return _StdlibReader(src, kind)
    return src


def layer_digest(path) -> tuple[str, str, int]:
    """(compression, diff_id, tar size) of a layer blob file: what its uncompressed tar hashes
    to, the check a received blob must pass against its config's diff_id."""
    with open(path, "rb") as f:
        kind = sniff(f.read(SNIFF_BYTES))
        if kind not in MEDIA_TYPES:
            raise StoreError(f"it is {kind}-compressed: image layers are gzip, zstd or "
                             "uncompressed tars")
        f.seek(0)
        d = HashingWriter()
        r = open_decompressed(f)
        while data := r.read(CHUNK):
            d.write(data)
    return kind, d.digest, d.size
