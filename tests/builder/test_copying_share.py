"""builder.copying.Share on real directories: a layer dir built by linking the unchanged files
of an older one writes the same tar as a cold copy, leaves the older dir's fingerprint as it
was, and falls back to copying across filesystems (EXDEV)."""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
from pathlib import Path

import pytest

from builder.context import BuildContext
from builder.copying import Share, copy
from builder.replay import Recorder
from cache.layers import fingerprint, write_tar

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="COPY chowns files: run as root")
EPOCH = 1_700_000_000
T = 1_600_000_000


def _ctx(d: Path) -> Path:
    for i in range(3):
        (d / f"d{i}").mkdir(parents=True)
        for j in range(10):
            (d / f"d{i}" / f"f{j}").write_text(f"{i} {j}\n" * (j + 1))
    os.link(d / "d2" / "f0", d / "d2" / "hard")
    os.symlink("d0/f0", d / "sym")
    for dirpath, dirs, files in os.walk(d):
        for n in dirs + files:
            os.utime(os.path.join(dirpath, n), (T, T), follow_symlinks=False)
    return d


def _keyed(ctx: Path):
    """(the tree, its selection of ".", what the build recorded of it) as a build keys it."""
    rec = Recorder()
    tree = BuildContext(ctx, None)
    tree.observe = rec.observe
    sel = tree.select(["."])
    tree.digest(sel)
    return tree, sel, rec


def _then(rec: Recorder, ctx: Path) -> dict:
    """The replay record's `files` as builder.replay.Pending.save writes it."""
    base = str(ctx) + "/"
    return {p[len(base):]: [*sig, rec.contents[p]] for p, sig in rec.observed.items()
            if p.startswith(base) and p in rec.contents}


def _layer(ctx: Path, dest: Path, share_from: tuple | None = None) -> Share | None:
    dest.mkdir(parents=True)
    tree, sel, rec = _keyed(ctx)
    share = None
    if share_from is not None:
        old, then = share_from
        share = Share(str(old), then, rec.contents, rec.observed, tree.root)
    copy(sel, dest, "/app", share=share, settle=(EPOCH,))
    if share is not None:
        share.finish(dest)
    return share


def _tar(d: Path) -> bytes:
    out = io.BytesIO()
    write_tar(d, out, epoch=EPOCH, settle=True)
    return out.getvalue()


def _inodes(d: Path) -> dict:
    return {os.path.relpath(os.path.join(p, n), d): os.lstat(os.path.join(p, n)).st_ino
            for p, _ds, fs in os.walk(d) for n in fs}


def _share_round(tmp_path: Path, old_parent: Path):
    ctx = _ctx(tmp_path / "ctx")
    old = old_parent / "old"
    _layer(ctx, old)
    _tar(old)                                   # committed: settled, fingerprinted
    fp = fingerprint(old)
    then = _then(_keyed(ctx)[2], ctx)
    (ctx / "d1" / "f4").write_text("changed\n")
    new = tmp_path / "new"
    share = _layer(ctx, new, (old, then))
    cold = tmp_path / "cold"
    _layer(ctx, cold)
    return old, new, cold, share, fp


def test_linked_layer_writes_the_cold_tar_and_keeps_the_old_fingerprint(tmp_path):
    old, new, cold, share, fp = _share_round(tmp_path, tmp_path)
    assert share.linked == 28 and share.copied == 0  # 30 files: not the edit nor the linked one
    tar = _tar(new)
    assert tar == _tar(cold)
    assert hashlib.sha256(tar).hexdigest() == hashlib.sha256(_tar(cold)).hexdigest()
    old_ino, new_ino = _inodes(old), _inodes(new)
    assert new_ino["app/d0/f3"] == old_ino["app/d0/f3"]
    assert new_ino["app/d1/f4"] != old_ino["app/d1/f4"]
    # the context's own hardlink is one inode with two names in the layer, as a cold copy
    assert new_ino["app/d2/f0"] == new_ino["app/d2/hard"] != old_ino["app/d2/f0"]
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        kinds = {m.name: m.type for m in t.getmembers()}
    assert kinds["app/d0/f3"] == tarfile.REGTYPE        # a cross-layer link is a plain file
    assert kinds["app/d2/hard"] == tarfile.LNKTYPE and kinds["app/d2/f0"] == tarfile.REGTYPE
    assert fingerprint(old) == fp                       # nlink and ctime moved: not looked at


@pytest.mark.skipif(not os.path.isdir("/dev/shm")
                    or os.stat("/dev/shm").st_dev == os.stat(tempfile.gettempdir()).st_dev,
                    reason="needs /dev/shm on another filesystem than the temp dir (set TMPDIR "
                           "to a dir on the disk)")
def test_another_filesystem_is_a_copy(tmp_path):
    with tempfile.TemporaryDirectory(dir="/dev/shm") as other:
        old, new, cold, share, fp = _share_round(tmp_path, Path(other))
        assert share.linked == 0 and share.copied == 28
        assert _tar(new) == _tar(cold)
        assert fingerprint(old) == fp


def test_another_epoch_or_owner_shares_nothing(tmp_path):
    ctx = _ctx(tmp_path / "ctx")
    old = tmp_path / "old"
    old.mkdir()
    tree, sel, rec = _keyed(ctx)
    copy(sel, old, "/app", settle=(T - 10,))           # settled to another time
    then = _then(rec, ctx)
    new = tmp_path / "new"
    assert _layer(ctx, new, (old, then)).linked == 0
    old2 = tmp_path / "old2"
    old2.mkdir()
    copy(sel, old2, "/app", chown=(7, 7), settle=(EPOCH,))   # another owner
    new2 = tmp_path / "new2"
    assert _layer(ctx, new2, (old2, then)).linked == 0
    new3 = tmp_path / "new3"
    assert _layer(ctx, new3, (new2, then)).linked == 29  # the same result: shared


def test_a_symlink_in_the_old_layer_is_never_followed(tmp_path):
    """The old layer's app/d0 is a symlink to a dir holding files identical in every way: a
    link must never reach through it (it could lead out of the layer)."""
    import shutil
    import subprocess
    ctx = _ctx(tmp_path / "ctx")
    old = tmp_path / "old"
    _layer(ctx, old)
    then = _then(_keyed(ctx)[2], ctx)
    outside = tmp_path / "outside"
    subprocess.run(["cp", "-a", str(old / "app" / "d0"), str(outside)], check=True)
    shutil.rmtree(old / "app" / "d0")
    os.symlink(outside, old / "app" / "d0")
    new = tmp_path / "new"
    share = _layer(ctx, new, (old, then))
    assert share.linked == 19            # d1 and d2 (but the hardlink pair), not d0
    outs = set(_inodes(outside).values())
    assert not outs & set(_inodes(new).values())
    assert _tar(new) == _tar(_layer_cold(ctx, tmp_path / "cold"))


def _layer_cold(ctx: Path, dest: Path) -> Path:
    _layer(ctx, dest)
    return dest
