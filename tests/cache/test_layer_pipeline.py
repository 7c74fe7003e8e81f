"""The threaded layer writer (cache.compress.ThreadedWriter fed by cache.layers.write_tar) gives
the same bytes as the plain one-thread path, whatever its buffer count and however the input is
split; what it writes is a standard stream the gzip/zstd CLIs read back to our tar; and a sink
that fails (a full disk) is one clear error, not a hang."""
from __future__ import annotations

import hashlib
import io
import os
import random
import shutil
import subprocess

import pytest

from cache import compress
from cache.compress import CHUNK, HashingWriter, ThreadedWriter, compressor
from cache.layers import write_tar


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """Files that span several CHUNK-sized blocks and end mid-block: random (incompressible),
    text (compressible), many small ones, an empty one."""
    root = tmp_path_factory.mktemp("pipeline") / "tree"
    rng = random.Random(7)
    (root / "big").mkdir(parents=True)
    (root / "big" / "random").write_bytes(rng.randbytes(2 * CHUNK + 12345))
    (root / "big" / "text").write_bytes(b"".join(b"line %d of some text\n" % i for i in range(150_000)))
    for i in range(300):
        (root / "small" / f"d{i % 7}").mkdir(parents=True, exist_ok=True)
        (root / "small" / f"d{i % 7}" / f"f{i}").write_bytes(rng.randbytes(rng.randint(0, 9000)))
    (root / "empty").write_bytes(b"")
    return root


def plain_tar(tree) -> bytes:
    buf = io.BytesIO()
    write_tar(tree, buf)
    return buf.getvalue()


def one_thread(kind: str, data: bytes, piece: int) -> bytes:
    """The reference: the unthreaded compressor fed `piece` bytes at a time."""
    out = io.BytesIO()
    c = compressor(kind, out)
    for i in range(0, len(data), piece):
        c.write(data[i:i + piece])
    c.close()
    return out.getvalue()


def threaded(kind: str, tree, depth: int) -> tuple[bytes, str, str]:
    out = io.BytesIO()
    h = HashingWriter(out)
    c = ThreadedWriter(kind, h, depth=depth)
    res = write_tar(tree, c)
    c.close()
    return out.getvalue(), res.diff_id, h.digest


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_threaded_blob_is_byte_identical_to_one_thread_for_any_buffer_count(tree, kind):
    tar = plain_tar(tree)
    assert len(tar) > 3 * CHUNK
    want = one_thread(kind, tar, 7777)
    assert one_thread(kind, tar, 1 << 22) == want  # how writes are split does not matter
    for depth in (1, 2, compress.DEPTH):
        blob, diff_id, digest = threaded(kind, tree, depth)
        assert blob == want, f"depth {depth}"
        assert diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
        assert digest == "sha256:" + hashlib.sha256(want).hexdigest()


@pytest.mark.parametrize("kind", [
    pytest.param(k, marks=pytest.mark.skipif(shutil.which(k) is None,
                                             reason=f"{k} CLI not installed (apt-get install {k})"))
    for k in ("gzip", "zstd")])
def test_the_cli_reads_the_threaded_blob_back_to_our_tar(tree, kind):
    blob, diff_id, _ = threaded(kind, tree, compress.DEPTH)
    r = subprocess.run([kind, "-dc"], input=blob, capture_output=True, check=False)
    assert r.returncode == 0, r.stderr
    assert "sha256:" + hashlib.sha256(r.stdout).hexdigest() == diff_id
    assert r.stdout == plain_tar(tree)


def test_write_copies_into_blocks_like_write_tar(tree):
    # the received-layer path writes bytes objects of any size instead of lending blocks
    tar = plain_tar(tree)
    out = io.BytesIO()
    c = ThreadedWriter("zstd", out, depth=2)
    for i in range(0, len(tar), 3 * CHUNK + 5):
        c.write(tar[i:i + 3 * CHUNK + 5])
    c.close()
    assert out.getvalue() == one_thread("zstd", tar, CHUNK)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs to fill it: run the tests as root")
@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_a_full_disk_is_one_error_not_a_hang(tree, tmp_path, kind):
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        with open(mnt / "blob", "wb", buffering=0) as f:
            c = ThreadedWriter(kind, HashingWriter(f), depth=2)
            with pytest.raises(OSError) as e:
                write_tar(tree, c)
                c.close()
            assert e.value.errno == 28  # ENOSPC, raised in the caller's thread
            assert not c.t.is_alive()
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
