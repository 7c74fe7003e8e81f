"""The layer writer's fast path (issue 14: per-entry work on dir fds, headers from shared pieces)
writes the bytes the writer before it wrote: the writer of commit 8659484 (cache/layers.py and
cache/tarfmt.py as they were, loaded from git into modules of their own) is the reference, over a
tree with every entry kind and every field that needs PAX. A layer's bytes are its diff_id and so
its image IDs: they must never move."""
from __future__ import annotations

import errno
import io
import os
import random
import shutil
import socket
import stat
import subprocess
import sys
import types
from pathlib import Path

import pytest

from cache import tarfmt
from cache.errors import StoreError
from cache.layers import fingerprint, write_tar

REPO = Path(__file__).resolve().parents[2]
REF = "8659484"


def _git_show(path: str) -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(REPO), "show", f"{REF}:{path}"],
                           capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    return r.stdout if r.returncode == 0 else None


def _reference():
    """(old tarfmt module, old layers module) from commit REF, or None."""
    tf_src, ly_src = _git_show("cache/tarfmt.py"), _git_show("cache/layers.py")
    if tf_src is None or ly_src is None:
        return None
    old_tf = types.ModuleType("_ref_tarfmt")
    exec(compile(tf_src, "ref:cache/tarfmt.py", "exec"), old_tf.__dict__)
    line = "from cache import overlayfmt, tarfmt\n"
    assert line in ly_src
    sys.modules["_ref_tarfmt"] = old_tf
    old_ly = sys.modules["_ref_layers"] = types.ModuleType("_ref_layers")
    exec(compile(ly_src.replace(line, "from cache import overlayfmt\nimport _ref_tarfmt as tarfmt\n"),
                 "ref:cache/layers.py", "exec"), old_ly.__dict__)
    return old_tf, old_ly


REFERENCE = _reference()
needs_ref = pytest.mark.skipif(REFERENCE is None, reason=f"needs git and commit {REF} of this "
                               "repository (the reference writer); run from a git checkout")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="device nodes, whiteouts and large "
                                "uids need root")


def _tree(d: Path) -> Path:
    """Every kind of entry and every field that does not fit ustar."""
    d.mkdir()
    (d / "plain").write_bytes(b"x" * 200)
    (d / "empty").write_bytes(b"")
    (d / "block").write_bytes(b"b" * 512)
    (d / "big").write_bytes(random.Random(3).randbytes(300_000))  # > one read
    (d / "exec").write_bytes(b"#!/bin/sh\n")
    os.chmod(d / "exec", 0o4755)
    sub = d / "sub" / "deeper"
    sub.mkdir(parents=True)
    (sub / "f").write_text("deep\n")
    os.link(d / "plain", d / "sub" / "hard")        # a hard link: its second name is a link
    os.link(d / "plain", d / "zz-hard2")
    os.symlink("plain", d / "link")
    os.symlink("/" + "t" * 150, d / "longlink")     # a link target > 100 bytes: PAX linkpath
    os.symlink("ü", d / "utf8link")
    long_dir = d / ("L" * 60) / ("M" * 60)
    long_dir.mkdir(parents=True)                    # a name > 100 bytes: PAX path
    (long_dir / "file").write_text("long\n")
    (d / "ü-名前").write_text("utf8\n")              # a non-ASCII name
    (d / ("x" * 99)).write_text("99\n")               # right at the ustar limits
    (d / ("y" * 100)).write_text("100\n")
    (d / "xattrs").write_text("x\n")
    os.setxattr(d / "xattrs", "user.b", b"2")
    os.setxattr(d / "xattrs", "user.a", b"1")
    os.setxattr(d / "sub", "user.dir", b"d")
    os.mkfifo(d / "fifo")
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(d / "sock"))                         # sockets are skipped
    s.close()
    (d / "opaque").mkdir()
    (d / "opaque" / "kept").write_text("k\n")
    from cache.overlayfmt import set_opaque
    set_opaque(d / "opaque")
    # mtimes: old (kept under the epoch), before 1970 (PAX), beyond 8**11 s (PAX)
    os.utime(d / "plain", ns=(1_500_000_000_250_000_000,) * 2)
    os.utime(d / "empty", ns=(-5_000_000_000,) * 2)
    os.utime(d / "block", ns=(8 ** 11 * 1_000_000_000 + 7,) * 2)
    return d


def _root_entries(d: Path) -> None:
    os.mknod(d / "gone", stat.S_IFCHR | 0o600, 0)                  # an overlay whiteout
    os.mknod(d / "sub" / "gone2", stat.S_IFCHR, 0)
    os.mknod(d / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))   # a char device
    os.mknod(d / "loop", stat.S_IFBLK | 0o660, os.makedev(7, 0))   # a block device
    (d / "bigids").write_text("ids\n")
    os.chown(d / "bigids", 0o10000000, 2 ** 31, follow_symlinks=False)  # > 7 octal digits
    os.chown(d / "sub" / "deeper", 1000, 1000, follow_symlinks=False)
    os.chown(d / "link", 123, 456, follow_symlinks=False)


def _build(tmp_path: Path, name: str) -> Path:
    d = _tree(tmp_path / name)
    if os.geteuid() == 0:
        _root_entries(d)
    return d


def _both(tmp_path: Path, **kw):
    """The tar of the same tree by the reference and by this writer (bytes, result)."""
    _old_tf, old = REFERENCE
    a, b = _build(tmp_path, "a"), _build(tmp_path, "b")
    # the same times on both copies (the dirs' own mtimes moved while they were filled)
    for root, dirs, files in os.walk(a):
        for n in dirs + files:
            pa = Path(root) / n
            pb = b / pa.relative_to(a)
            st = os.lstat(pa)
            os.utime(pb, ns=(st.st_mtime_ns, st.st_mtime_ns), follow_symlinks=False)
    ra, rb = io.BytesIO(), io.BytesIO()
    got_a = old.write_tar(a, ra, **kw)
    got_b = write_tar(b, rb, **kw)
    return a, b, ra.getvalue(), rb.getvalue(), got_a, got_b


@needs_ref
@pytest.mark.parametrize("epoch", [0, 1_600_000_000, None])
def test_every_entry_kind_gives_the_reference_bytes(tmp_path, epoch):
    _a, _b, old, new, ra, rb = _both(tmp_path, epoch=epoch)
    assert len(old) > 300_000
    assert new == old
    assert (rb.diff_id, rb.size) == (ra.diff_id, ra.size)


@needs_ref
def test_settling_gives_the_reference_bytes_times_and_fingerprint(tmp_path):
    a, b, old, new, ra, rb = _both(tmp_path, epoch=1_600_000_000, settle=True)
    assert new == old and rb.diff_id == ra.diff_id
    assert rb.fingerprint == fingerprint(b)           # the dir as it is after the settling
    for root, dirs, files in os.walk(a):
        for n in dirs + files:
            pa = Path(root) / n
            assert (os.lstat(b / pa.relative_to(a)).st_mtime_ns
                    == os.lstat(pa).st_mtime_ns), pa.relative_to(a)
    again = write_tar(b, None, epoch=1_600_000_000, settle=True)  # settled: nothing moves
    assert again.diff_id == rb.diff_id and again.fingerprint == rb.fingerprint


@needs_ref
def test_top_entry_gives_the_reference_bytes(tmp_path):
    _old_tf, old = REFERENCE
    d = _build(tmp_path, "a")
    for src in (d, d / "plain", d / "link"):
        x, y = io.BytesIO(), io.BytesIO()
        old.write_tar(src, x, top="app")
        write_tar(src, y, top="app")
        assert y.getvalue() == x.getvalue(), src


@needs_ref
def test_headers_equal_the_reference_over_random_fields():
    old_tf, _old = REFERENCE
    r = random.Random(14)
    for _ in range(5000):
        kw = {"mode": r.choice([0o644, 0o100755, 0o4755, 0o40700, 0]),
                  "uid": r.choice([0, 1000, 0o7777777, 0o10000000]),
                  "gid": r.choice([0, 5, 2 ** 21, 2 ** 32]),
                  "size": r.choice([0, 1, 200, 8 ** 11 - 1, 8 ** 11]),
                  "mtime": r.choice([0, 1_700_000_000, 8 ** 11 - 1, 8 ** 11]),
                  "typeflag": r.choice([tarfmt.REG, tarfmt.LNK, tarfmt.SYM, tarfmt.CHR, tarfmt.DIR]),
                  "linkname": r.choice([b"", b"a/b", b"l" * 100, b"l" * 101, "é".encode()]),
                  "devmajor": r.choice([0, 8, 0o7777777]), "devminor": r.choice([0, 1, 255]),
                  "xattrs": r.choice([None, {}, {b"user.a": b"1"}])}
        name = r.choice([b"a", b"dir/", b"n" * 100, b"n" * 101, "ü".encode(), b"d0000/f000.txt"])
        assert tarfmt.header(name, **kw) == old_tf.header(name, **kw), (name, kw)


@needs_ref
def test_deep_tree_beyond_the_open_dir_limit(tmp_path):
    """Dirs deeper than the fds the walk keeps open are reopened on the way back up: the
    reference's bytes, every one of the 160 entries there."""
    _old_tf, old = REFERENCE
    d = tmp_path / "deep"
    p = d
    for i in range(80):
        p = p / "d"
        p.mkdir(parents=True)
        (p / "f").write_text(str(i))
        (p / "g").write_text(str(i))   # a file after the subdir: its parent's fd again
    x, y = io.BytesIO(), io.BytesIO()
    old.write_tar(d, x)
    write_tar(d, y)
    assert y.getvalue() == x.getvalue()
    import tarfile
    y.seek(0)
    with tarfile.open(fileobj=y) as t:
        assert len(t.getnames()) == 240


def test_a_file_that_shrinks_is_an_error(tmp_path, monkeypatch):
    d = tmp_path / "s"
    d.mkdir()
    (d / "f").write_bytes(b"x" * 1000)
    real = os.read

    def short_read(fd, n):
        return real(fd, n)[:10]
    import cache.layers as layers
    monkeypatch.setattr(layers.os, "read", short_read)
    with pytest.raises(StoreError, match="changed size"):
        write_tar(d, None)


def test_a_whiteout_lookalike_name_is_refused(tmp_path):
    d = tmp_path / "w"
    d.mkdir()
    (d / ".wh.x").write_text("")
    with pytest.raises(StoreError, match=".wh."):
        write_tar(d, None)


def test_settled_hard_links_share_one_stat_in_the_fingerprint(tmp_path):
    d = tmp_path / "h"
    (d / "a").mkdir(parents=True)
    (d / "a" / "one").write_text("1\n")
    os.link(d / "a" / "one", d / "two")
    got = write_tar(d, None, epoch=0, settle=True)
    assert got.fingerprint == fingerprint(d)
    shutil.rmtree(d)


@pytest.mark.parametrize("name", [b"f", b"n" * 120])      # the fast path, and the by-path one
@pytest.mark.parametrize("swap", ["fifo", "symlink", "other file"])
def test_a_file_swapped_after_the_walk_is_an_error_not_a_hang(tmp_path, monkeypatch, name, swap):
    """What the walk lstat'ed as a regular file and is something else by the time it is opened
    (a container still writing its upper dir; `pybuild cp` from a running one): a FIFO is never
    waited on, a link never followed, another inode never read - the layer write stops."""
    import cache.layers as layers

    d = tmp_path / "s"
    d.mkdir()
    (tmp_path / "outside").write_bytes(b"HOST-SECRET")
    entry = os.fsdecode(name)
    (d / entry).write_bytes(b"x" * 10)
    real = layers._sorted_children

    def swapped(path):
        items = real(path)
        target = os.path.join(os.fsencode(path) if isinstance(path, str) else path, name)
        os.link(target, tmp_path / "kept")      # its inode number is not reused meanwhile
        os.unlink(target)
        if swap == "fifo":
            os.mkfifo(target)
        elif swap == "symlink":
            os.symlink(tmp_path / "outside", target)
        else:
            (tmp_path / "other").write_bytes(b"y" * 10)
            os.rename(tmp_path / "other", target)
        return items
    monkeypatch.setattr(layers, "_sorted_children", swapped)
    out = io.BytesIO()
    with pytest.raises((StoreError, OSError)) as e:
        write_tar(d, out)
    assert "changed" in str(e.value) or e.value.errno in (errno.ELOOP, errno.ESTALE)
    assert b"HOST-SECRET" not in out.getvalue()
