"""builder.copying's direct writes: below a directory a COPY made through the overlay, entries go
straight into the upper dir. The layer must be the one writing everything through the mount
gives: same tar, same diff_id, whatever the destination (new, an image dir, through an image
symlink), with hard links across the two kinds of directory and two sources merging."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from builder.context import BuildContext
from builder.copying import copy
from cache.layers import write_tar
from runtime.snapshotter import mounted, writes_through

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="overlay mounts need root")


def _context(c: Path) -> None:
    (c / "a" / "sub" / "deep").mkdir(parents=True)
    (c / "a" / "empty").mkdir()
    (c / "b" / "sub").mkdir(parents=True)
    (c / "top.txt").write_text("top")
    (c / "a" / "sub" / "deep" / "f").write_text("deep")
    (c / "a" / "sub" / "x").write_text("x")
    (c / "b" / "sub" / "y").write_text("y")
    (c / "b" / "z").write_text("z")
    os.link(c / "top.txt", c / "a" / "sub" / "deep" / "top-link")     # one inode, two dirs
    os.link(c / "a" / "sub" / "x", c / "a" / "x-link")
    os.symlink("../top.txt", c / "a" / "sub" / "rel")
    os.mkfifo(c / "a" / "sub" / "fifo")
    os.chmod(c / "a" / "sub" / "x", 0o4755)
    os.chmod(c / "a" / "sub", 0o700)
    try:
        os.setxattr(c / "a" / "sub" / "x", "user.k", b"v")
    except OSError:
        pass


def _image(lower: Path) -> None:
    (lower / "existing" / "sub").mkdir(parents=True)
    (lower / "existing" / "sub" / "old").write_text("old")
    (lower / "existing" / "keep").write_text("keep")
    os.chmod(lower / "existing", 0o750)
    os.chown(lower / "existing", 7, 8)
    os.symlink("/existing", lower / "link")


CASES = [
    (["a"], "/app"),                   # a new dir: all of it below dirs the copy made
    (["a"], "/existing/"),             # merged into an image dir and its sub/
    (["a"], "/link/sub/"),             # through an image symlink
    (["a", "b"], "/two/"),             # two sources, both with sub/
    (["."], "/existing/a/"),
    (["top.txt", "a"], "/existing/sub/new/"),
]


@pytest.mark.parametrize("srcs,dest", CASES)
def test_a_direct_copy_makes_the_layer_a_copy_through_the_mount_makes(tmp_path, srcs, dest):
    ctx = tmp_path / "ctx"
    _context(ctx)
    lower = tmp_path / "lower"
    lower.mkdir()
    _image(lower)
    got = {}
    for direct in (False, True):
        base = tmp_path / ("direct" if direct else "through")
        upper, work = base / "upper", base / "work"
        upper.mkdir(parents=True)
        work.mkdir()
        with mounted([lower], upper, work) as root:
            assert writes_through(root, upper)
            c = BuildContext(ctx, None)
            copy(c.select(srcs, ()), Path(root), dest, settle=(0,), multiple=len(srcs) > 1,
                 upper=upper if direct else None)
        res = write_tar(upper, None, epoch=0)
        got[direct] = res.diff_id, sorted(
            (str(p.relative_to(upper)), stat.filemode(p.lstat().st_mode), p.lstat().st_nlink)
            for p in upper.rglob("*"))
    assert got[True] == got[False]


def test_the_native_snapshotter_is_not_written_through(tmp_path, monkeypatch):
    """Its merged dir is a copy whose changes reach the upper dir only at the end: a direct
    write there would be lost or doubled, so the COPY step must not make one."""
    monkeypatch.setenv("PYBUILD_SNAPSHOTTER", "native")
    lower = tmp_path / "lower"
    lower.mkdir()
    _image(lower)
    upper = tmp_path / "s" / "upper"
    upper.mkdir(parents=True)
    with mounted([lower], upper) as root:
        assert not writes_through(root, upper)
