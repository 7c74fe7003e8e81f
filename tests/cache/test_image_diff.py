"""cache.diff on real layer tars (cache.layers.write_tar of real directories): every kind of
change is named with its attribute, identical tars give nothing, the reader streams (a large
file is never held) and a tar that does not hash to its diff_id is an error."""
from __future__ import annotations

import io
import os
import shutil
import stat

import pytest
from fs_probe import XATTR_REASON, xattrs_supported

from cache import diff
from cache.errors import StoreError
from cache.layers import write_tar

ROOT = os.geteuid() == 0


def layer(d) -> diff.Layer:
    buf = io.BytesIO()
    res = write_tar(d, buf, epoch=None)
    data = buf.getvalue()
    return diff.Layer(res.diff_id, lambda: io.BytesIO(data))


def base(d):
    (d / "etc").mkdir(parents=True)
    (d / "etc" / "conf").write_text("a=1\nb=2\nc=3\n")
    (d / "bin").mkdir()
    (d / "bin" / "tool").write_bytes(b"\x7fELF" + b"\0" * 100)
    os.chmod(d / "bin" / "tool", 0o755)
    os.symlink("tool", d / "bin" / "alias")
    (d / "gone").write_text("bye")
    for p in [d, *d.rglob("*")]:
        os.utime(p, (1_700_000_000, 1_700_000_000), follow_symlinks=False)
    return d


def rows_by_path(rows):
    return {r["path"]: r for r in rows}


def test_identical_trees_give_no_rows_and_the_same_diff_id(tmp_path):
    a, b = base(tmp_path / "a"), base(tmp_path / "b")
    la, lb = layer(a), layer(b)
    assert la.diff_id == lb.diff_id
    assert diff.compare_layers(la, lb) == []


def test_each_change_is_named_with_its_attribute(tmp_path):
    a, b = base(tmp_path / "a"), base(tmp_path / "b")
    (b / "etc" / "conf").write_text("a=1\nb=20\nc=3\n")
    os.chmod(b / "bin" / "tool", 0o700)
    (b / "bin" / "alias").unlink()
    os.symlink("other", b / "bin" / "alias")
    (b / "gone").unlink()
    (b / "new").write_text("hello")
    for p in (b / "etc" / "conf", b / "bin" / "alias", b / "bin", b):
        os.utime(p, (1_700_000_000, 1_700_000_000), follow_symlinks=False)
    rows = rows_by_path(diff.compare_layers(layer(a), layer(b)))
    conf = rows["etc/conf"]["attrs"]
    assert list(conf) == ["content"]
    assert conf["content"]["lines"] == ["-b=2", "+b=20"]
    assert rows["bin/tool"]["attrs"] == {"mode": {"a": "0755", "b": "0700"}}
    assert rows["bin/alias"]["attrs"] == {"link target": {"a": "tool", "b": "other"}}
    assert rows["gone"]["change"] == "removed"
    assert rows["new"]["change"] == "added" and rows["new"]["b"]["size"] == 5
    assert set(rows) == {"etc/conf", "bin/tool", "bin/alias", "gone", "new"}


def test_mtime_is_named_and_semantic_ignores_it(tmp_path):
    a, b = base(tmp_path / "a"), base(tmp_path / "b")
    os.utime(b / "etc" / "conf", (1_800_000_000, 1_800_000_000))
    rows = diff.compare_layers(layer(a), layer(b))
    assert rows == [{"path": "etc/conf", "change": "changed",
                     "attrs": {"mtime": {"a": 1_700_000_000, "b": 1_800_000_000}}}]
    assert diff.compare_layers(layer(a), layer(b), diff.Options(semantic=True)) == []


def test_type_change_is_named_alone(tmp_path):
    a, b = base(tmp_path / "a"), base(tmp_path / "b")
    (b / "gone").unlink()
    (b / "gone").mkdir()
    os.utime(b / "gone", (1_700_000_000, 1_700_000_000))
    rows = diff.compare_layers(layer(a), layer(b))
    assert rows_by_path(rows)["gone"]["attrs"] == {"type": {"a": "file", "b": "dir"}}


@pytest.mark.skipif(not ROOT, reason="chown and mknod need root")
def test_owner_device_and_hardlink(tmp_path):
    a, b = base(tmp_path / "a"), base(tmp_path / "b")
    for d, dev in ((a, os.makedev(1, 3)), (b, os.makedev(1, 5))):
        os.mknod(d / "node", stat.S_IFCHR | 0o600, dev)
        os.link(d / "bin" / "tool", d / "bin" / ("tool2" if d == a else "tool3"))
    os.chown(b / "etc" / "conf", 1000, 1000)
    rows = rows_by_path(diff.compare_layers(layer(a), layer(b)))
    assert rows["etc/conf"]["attrs"] == {"owner": {"a": "0:0", "b": "1000:1000"}}
    assert rows["node"]["attrs"] == {"device": {"a": "1:3", "b": "1:5"}}
    # the second name of the inode is a hardlink entry: a different one in each tree
    assert rows["bin/tool2"]["change"] == "removed" and rows["bin/tool3"]["change"] == "added"
    assert rows["bin/tool3"]["b"]["hardlink"] == "bin/tool"


@pytest.mark.skipif(not xattrs_supported("user.x"), reason=XATTR_REASON)
def test_xattr_change(tmp_path):
    a, b = base(tmp_path / "a"), base(tmp_path / "b")
    os.setxattr(a / "bin" / "tool", "user.x", b"1")
    os.setxattr(b / "bin" / "tool", "user.x", b"2")
    rows = rows_by_path(diff.compare_layers(layer(a), layer(b)))
    assert rows["bin/tool"]["attrs"] == {"xattrs": {"a": {"user.x": "1"}, "b": {"user.x": "2"}}}


def test_binary_or_large_content_is_named_without_lines(tmp_path):
    a, b = base(tmp_path / "a"), base(tmp_path / "b")
    (a / "big").write_bytes(b"x" * (diff.TEXT_MAX + 1))
    (b / "big").write_bytes(b"y" * (diff.TEXT_MAX + 1))
    shutil.copystat(a / "etc" / "conf", a / "big")
    shutil.copystat(a / "etc" / "conf", b / "big")
    rows = rows_by_path(diff.compare_layers(layer(a), layer(b)))
    c = rows["big"]["attrs"]["content"]
    assert c["a"] != c["b"] and "lines" not in c


def test_a_tar_that_does_not_hash_to_its_diff_id_is_an_error(tmp_path):
    a = base(tmp_path / "a")
    la = layer(a)
    wrong = diff.Layer("sha256:" + "0" * 64, la.open)
    with pytest.raises(StoreError, match="hashes to"):
        diff.compare_layers(wrong, la)


def test_store_layers_stream_through_a_pipe(tmp_path):
    """The store's tar writer pushes, the reader pulls: a layer of a store image is read with
    the pipe's memory, and what the producer raises reaches the reader."""
    def produce(out):
        for _ in range(64):
            out.write(b"z" * (1 << 20))
        raise StoreError("producer failed")

    with diff._Pipe(produce) as p:
        got = 0
        with pytest.raises(StoreError, match="producer failed"):
            while data := p.read(1 << 20):
                got += len(data)
        assert got == 64 << 20


def test_a_truncated_layer_is_an_error_naming_the_side(tmp_path):
    a = base(tmp_path / "a")
    (a / "big").write_bytes(os.urandom(50_000))
    la = layer(a)
    data = la.open().read()
    cut = diff.Layer("sha256:" + "1" * 64, lambda: io.BytesIO(data[:20_000]))
    with pytest.raises(StoreError, match="^B: corrupt or truncated layer tar"):
        diff.compare_layers(la, cut)
