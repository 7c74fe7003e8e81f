"""cache.fspath: the one walk inside a root (layer extraction, COPY, --chown lookups, bind
sources and OCI layout dirs all use it); the containerd breakout list is in
test_extract_breakouts.py, these are the forms only the path and open APIs have."""
from __future__ import annotations

import os
import signal

import pytest

from cache import fspath
from cache.errors import StoreError


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "etc" / "passwd").write_text("inside\n")
    (tmp_path / "passwd").write_text("outside\n")
    os.symlink("/", r / "escape")
    os.symlink("../../../../../..", r / "up")
    os.symlink(str(tmp_path / "passwd"), r / "abs")       # a host path: read inside the root
    os.symlink("loop2", r / "loop1")
    os.symlink("loop1", r / "loop2")
    return r


@pytest.mark.parametrize("path,want", [
    ("escape/etc/passwd", "etc/passwd"), ("up/etc/passwd", "etc/passwd"),
    ("/../../etc/passwd", "etc/passwd"), ("missing/../etc/passwd", "etc/passwd"),
    ("missing/x/../../etc/passwd", "etc/passwd"), ("etc/missing/deeper", "etc/missing/deeper"),
    ("escape", ""), ("up/..", ""),
])
def test_resolve_stays_inside(root, path, want):
    assert fspath.resolve(root, path) == (f"{root}/{want}" if want else str(root))


def test_resolve_final_symlink_only_when_asked(root):
    assert fspath.resolve(root, "escape", follow_final=False) == f"{root}/escape"
    with pytest.raises(StoreError, match="too many levels of symbolic links"):
        fspath.resolve(root, "loop1")


def test_open_in_root_reads_the_roots_file(root, tmp_path):
    for p in ("/etc/passwd", "escape/etc/passwd", "up/up/etc/passwd"):
        with fspath.open_in_root(root, p) as f:
            assert f.read() == b"inside\n"
    with pytest.raises(FileNotFoundError):
        fspath.open_in_root(root, "abs")  # -> <root>/<tmp_path>/passwd, which is not there
    with pytest.raises(IsADirectoryError):
        fspath.open_in_root(root, "escape")
    with pytest.raises(NotADirectoryError):
        fspath.open_in_root(root, "etc/passwd/x")


def test_open_in_root_refuses_a_fifo_without_blocking(root):
    os.mkfifo(root / "etc" / "fifo")
    def blocked(*_):
        raise TimeoutError("open() of the fifo blocked")
    old = signal.signal(signal.SIGALRM, blocked)
    signal.alarm(5)  # a blocking open() of a fifo nobody writes would hang here
    try:
        with pytest.raises(StoreError, match="not a regular file"):
            fspath.open_in_root(root, "etc/fifo")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_created_dirs_have_a_depth_limit(tmp_path):
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        d = fspath.open_dir(fd, ["d"] * fspath.MAX_DEPTH, create=True)
        os.close(d)
        with pytest.raises(StoreError, match="path too deep"):
            fspath.open_dir(fd, ["d"] * (fspath.MAX_DEPTH + 1), create=True)
    finally:
        os.close(fd)


def _tree(top):
    """A tree as a run dir holds it: nested dirs, files, a fifo, a dir without permissions,
    symlinks to a dir and a file outside it."""
    outside = top.parent / "outside"
    outside.mkdir()
    (outside / "keep").write_text("kept\n")
    (top / "a" / "b" / "c").mkdir(parents=True)
    (top / "a" / "b" / "c" / "f").write_text("x")
    (top / "a" / "g").write_text("y")
    os.mkfifo(top / "a" / "fifo")
    (top / "locked" / "in").mkdir(parents=True)
    os.chmod(top / "locked", 0)
    os.symlink(outside, top / "a" / "to-dir")
    os.symlink(outside / "keep", top / "to-file")
    return outside


def test_remove_tree_removes_everything_and_follows_no_link(tmp_path):
    top = tmp_path / "run"
    outside = _tree(top)
    fspath.remove_tree(top)
    assert not os.path.lexists(top)
    assert (outside / "keep").read_text() == "kept\n"       # the links went, not their targets


@pytest.mark.parametrize("kind", ["empty dir", "link to a dir", "file", "missing"])
def test_remove_tree_does_what_shutil_rmtree_ignoring_errors_does(tmp_path, kind):
    """An empty dir goes; a symlink (even to a dir), a file or nothing there is left as is."""
    import shutil

    def make(d):
        d.mkdir()
        (d / "target").mkdir()
        if kind == "empty dir":
            (d / "it").mkdir()
        elif kind == "link to a dir":
            os.symlink(d / "target", d / "it")
        elif kind == "file":
            (d / "it").write_text("x")
        return d / "it"

    fspath.remove_tree(make(tmp_path / "mine"))
    shutil.rmtree(make(tmp_path / "theirs"), ignore_errors=True)
    assert sorted(os.listdir(tmp_path / "mine")) == sorted(os.listdir(tmp_path / "theirs"))


def test_remove_tree_of_any_depth_needs_no_recursion(tmp_path):
    """A container can leave a tree thousands of levels deep in its upper dir: removing it
    must not depend on Python's recursion limit (shutil.rmtree's RecursionError)."""
    import sys

    top = tmp_path / "deep"
    fd = os.open(tmp_path, os.O_RDONLY)
    os.mkdir("deep", dir_fd=fd)
    for _ in range(300):            # by fd: the path itself would pass PATH_MAX
        nxt = os.open("deep", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nxt
        os.mkdir("deep", dir_fd=fd)
    with open(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as f:
        f.write("x")
    os.close(fd)
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(100)
    try:
        fspath.remove_tree(top)
    finally:
        sys.setrecursionlimit(old)
    assert not top.exists()
