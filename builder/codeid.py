"""Which pybuild code is running: a result kept across runs is trusted only by the same code.

The replay records (builder.replay) and the parse cache (builder.parsecache) both key on this
identity, so editing, adding or removing any source file of a package that affects output
invalidates both. The files are found by listing the package directories (subpackages
included), never named one by one: a new module counts without anyone remembering to add it.
The identity is stat data only (path, inode, size, mtime), no hashing: it is computed on the
replay fast path, once per process. A dangling link counts as no file. Only os is imported.
"""
from __future__ import annotations

import os

PACKAGES = ("builder", "grammar", "cache", "runtime")  # what a build's output depends on
SOURCES = (".py", ".lark", ".json")  # code, the grammar, data shipped with a package
_TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_memo: tuple | None = None


def identity() -> tuple:
    """Sorted `(path, inode, size, mtime_ns)` of every source file under PACKAGES."""
    global _memo
    if _memo is None:
        out: list = []
        for pkg in PACKAGES:
            _scan(os.path.join(_TOP, pkg), pkg, out)
        out.sort()
        _memo = tuple(out)
    return _memo


def _scan(path: str, rel: str, out: list) -> None:
    with os.scandir(path) as it:
        for e in it:
            name = e.name
            if name.startswith("."):  # editor and tool files (emacs' .#x.py is a dead link)
                continue
            if name.endswith(SOURCES):
                try:
                    st = e.stat()
                except FileNotFoundError:  # a dangling symlink: no file, nothing to run
                    continue
                out.append((f"{rel}/{name}", st.st_ino, st.st_size, st.st_mtime_ns))
            elif name != "__pycache__" and e.is_dir():
                _scan(e.path, f"{rel}/{name}", out)
