"""A build context holding an entry of every kind the context key tells apart, for the tests
that compare two walks of it (tests/builder/test_context_walk.py, test_context_dirs.py)."""
from __future__ import annotations

import os
import time
from pathlib import Path

CAP = bytes.fromhex("0100000200100000000000000000000000000000")  # v2: cap_net_bind_service


def every_kind(d: Path, big: int, xattrs: tuple = (("user.a", b"1"),)) -> None:
    """Regular files (one big, one hard-linked, one not-UTF-8 name), a symlink, xattrs on a
    file (`xattrs`, in that order) and a dir, and as root a file capability, a device and
    another owner."""
    (d / "src" / "pkg").mkdir(parents=True, exist_ok=True)
    (d / "src" / "main.go").write_text("package main\n")
    (d / "src" / "pkg" / "u.go").write_text("package pkg\n")
    (d / "big").write_bytes(os.urandom(big))
    os.link(d / "src" / "main.go", d / "hard")
    os.symlink("src/main.go", d / "link")
    (d / "attrs").write_text("x\n")
    for name, value in xattrs:
        os.setxattr(d / "attrs", name, value)
    os.setxattr(d / "src", "user.dir", b"d")
    if os.geteuid() == 0:
        (d / "capped").write_text("c\n")
        os.setxattr(d / "capped", "security.capability", CAP)
        os.mknod(d / "null", 0o20666, os.makedev(1, 3))
        os.chown(d / "src" / "pkg" / "u.go", 1000, 1001)
    (d / "ü-名前").write_text("utf8\n")
    (d / os.fsdecode(b"not-utf8-\xff")).write_text("bytes\n")     # a name the memo keeps as-is


def backdate(d: Path) -> Path:
    """Every entry's times 10 s back: none is racy, so the memos keep them all."""
    old = time.time() - 10
    for p in [*d.rglob("*"), d]:
        os.utime(p, (old, old), follow_symlinks=False)
    return d
