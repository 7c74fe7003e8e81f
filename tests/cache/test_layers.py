"""The layer tar writer: deterministic bytes, OCI whiteouts from overlay format, what GNU tar
and Python's tarfile read back, and the same digests on two store roots (gzip and zstd)."""
from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tarfile

import pytest

from cache.layers import extract, write_tar
from cache.store import Store

ROOT = os.geteuid() == 0


def make_tree(d, *, overlay: bool = True):
    """A small tree with every entry type we write; overlay markers only as root."""
    (d / "b").mkdir(parents=True)
    (d / "a-file").write_bytes(b"A" * 1000)
    (d / "b" / "x").write_bytes(os.urandom(0) + b"x" * 70000)
    os.link(d / "b" / "x", d / "b" / "x-hard")
    os.symlink("../a-file", d / "b" / "sym")
    os.mkfifo(d / "fifo")
    (d / "long" / ("n" * 120)).mkdir(parents=True)
    (d / "long" / ("n" * 120) / "f").write_text("deep")
    (d / "ünï").write_text("utf8 name")
    os.setxattr(d / "a-file", "user.note", b"kept")
    os.chmod(d / "a-file", 0o4755)
    if ROOT:
        os.chown(d / "b" / "x", 1234, 5678)
        os.mknod(d / "gone", stat.S_IFCHR | 0o600, 0)  # overlay whiteout
        (d / "opq").mkdir()
        os.setxattr(d / "opq", "trusted.overlay.opaque", b"y")
        (d / "opq" / "inside").write_text("new")
    for p in [d, *d.rglob("*")]:
        os.utime(p, (1_700_000_000, 1_700_000_000), follow_symlinks=False)


def tar_bytes(d, **kw) -> tuple[bytes, str]:
    buf = io.BytesIO()
    res = write_tar(d, buf, **kw)
    return buf.getvalue(), res.diff_id


def test_same_tree_gives_identical_bytes_and_diff_id(tmp_path):
    make_tree(tmp_path / "one")
    make_tree(tmp_path / "two")
    b1, d1 = tar_bytes(tmp_path / "one")
    b2, d2 = tar_bytes(tmp_path / "two")
    assert b1 == b2 and d1 == d2
    assert tar_bytes(tmp_path / "one") == (b1, d1)  # regenerated: byte-identical


def test_headers_are_normalised(tmp_path):
    make_tree(tmp_path / "t")
    data, _ = tar_bytes(tmp_path / "t")
    assert data.endswith(b"\0" * 1024) and len(data) % 512 == 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        ms = tf.getmembers()
    names = [m.name for m in ms]
    assert names.index("b") < names.index("b/sym") and "long/" + "n" * 120 + "/f" in names
    for m in ms:
        assert m.uname == "" and m.gname == ""
        assert m.mtime == 0  # clamped to SOURCE_DATE_EPOCH default 0
        assert not {"atime", "ctime"} & set(m.pax_headers)
    by = {m.name: m for m in ms}
    assert by["b/x-hard"].islnk() and by["b/x-hard"].linkname == "b/x"
    assert by["b/sym"].issym() and by["b/sym"].linkname == "../a-file"
    assert by["fifo"].isfifo()
    assert by["a-file"].mode == 0o4755
    assert by["a-file"].pax_headers["SCHILY.xattr.user.note"] == "kept"
    assert "ünï" in by
    if ROOT:
        assert (by["b/x"].uid, by["b/x"].gid) == (1234, 5678)
        assert by[".wh.gone"].isfile() and by[".wh.gone"].size == 0
        assert names.index("opq") + 1 == names.index("opq/.wh..wh..opq")
        assert not any("overlay" in k for m in ms for k in m.pax_headers)


def test_epoch_clamps_but_keeps_older_times(tmp_path):
    d = tmp_path / "t"
    d.mkdir()
    (d / "old").write_text("o")
    (d / "new").write_text("n")
    os.utime(d / "old", (100, 100))
    os.utime(d / "new", (2_000_000_000, 2_000_000_000))
    data, _ = tar_bytes(d, epoch=1_000_000)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        times = {m.name: m.mtime for m in tf}
    assert times == {"new": 1_000_000, "old": 100}
    data, _ = tar_bytes(d, epoch=None)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        assert {m.name: m.mtime for m in tf}["new"] == 2_000_000_000


def test_gnu_tar_reads_it(tmp_path):
    make_tree(tmp_path / "t")
    data, _ = tar_bytes(tmp_path / "t")
    (tmp_path / "l.tar").write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()
    r = subprocess.run(["tar", "-xpf", str(tmp_path / "l.tar"), "-C", str(out)], check=False,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (out / "b" / "x").read_bytes() == b"x" * 70000
    assert os.path.samefile(out / "b" / "x", out / "b" / "x-hard")


def test_write_then_extract_round_trips_overlay_format(tmp_path):
    make_tree(tmp_path / "t")
    data, diff_id = tar_bytes(tmp_path / "t")
    (tmp_path / "u").mkdir()
    assert extract(io.BytesIO(data), tmp_path / "u") == diff_id
    assert tar_bytes(tmp_path / "u")[1] == diff_id  # unpacked layer regenerates the same tar


def test_names_starting_with_wh_are_refused(tmp_path):
    from cache.errors import StoreError
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / ".wh.sneaky").write_text("")
    with pytest.raises(StoreError, match=".wh."):
        write_tar(tmp_path / "t", io.BytesIO())


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_two_store_roots_give_identical_blob_digests(tmp_path, compression):
    digests = []
    for n in ("m1", "m2"):
        store = Store.open(tmp_path / n / "root")
        upper = store.new_scratch() / "upper"
        make_tree(upper)
        diff_id = store.commit_layer(upper)
        desc = store.layer_blob(diff_id, compression)
        blob = store.blob_path(desc["digest"]).read_bytes()
        digests.append((diff_id, desc["digest"], desc["mediaType"]))
        assert extract(io.BytesIO(blob), store.new_scratch()) == diff_id
    assert digests[0] == digests[1]
    assert digests[0][2].endswith("+" + compression)


def test_gzip_header_is_fixed(tmp_path):
    store = Store.open(tmp_path / "root")
    upper = store.new_scratch() / "u"
    upper.mkdir()
    (upper / "f").write_text("x")
    desc = store.layer_blob(store.commit_layer(upper), "gzip")
    head = store.blob_path(desc["digest"]).read_bytes()[:10]
    assert head == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, mtime 0, OS fixed
    r = subprocess.run(["gzip", "-t"], input=store.blob_path(desc["digest"]).read_bytes(), check=False,
                       capture_output=True)
    assert r.returncode == 0


@pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd CLI not installed (apt-get install zstd)")
def test_zstd_blob_decompresses_with_the_cli(tmp_path):
    store = Store.open(tmp_path / "root")
    upper = store.new_scratch() / "u"
    make_tree(upper)
    diff_id = store.commit_layer(upper)
    desc = store.layer_blob(diff_id, "zstd")
    r = subprocess.run(["zstd", "-dc"], input=store.blob_path(desc["digest"]).read_bytes(), check=False,
                       capture_output=True)
    assert r.returncode == 0
    import hashlib
    assert "sha256:" + hashlib.sha256(r.stdout).hexdigest() == diff_id
