"""The `pybuild` launcher install.sh puts on PATH, and its index of the project's compiled modules.

The launcher (`write`) is a script on `python -I -S` (pip's console-script wrapper imports re,
~7 ms, and `site` costs ~5 ms more) that puts the project and the venv's packages on sys.path
itself, installs the index's finder and ends in `builder.cli.exit_now`.

A normal import of each of the ~45 project modules a `pybuild run` loads walks the import
system's path machinery: a stat of the package dir, the source, the .pyc's open, fstat and read,
and ~100 µs of importlib's Python code per module (~3 ms of a 45 ms run). install.sh writes
one file holding every module of grammar/, cache/, runtime/ and builder/ compiled (`build`);
the launcher puts `install`'s finder first on sys.meta_path, which serves a module from it with
one stat (is the source still the one compiled?) and one pread.

Stale entries fall back cleanly: a module whose source's mtime or size changed, that is new or
gone, or a file written by another Python (magic number) or optimisation level, is left to the
normal import system (the finder says "not mine"), so an edited checkout behaves as it would
without the index, only slower to start. Nothing here imports beyond what the interpreter has
loaded at start (marshal, os, sys: importlib.machinery would bring warnings).
"""
from __future__ import annotations

import marshal
import os
import sys

PACKAGES = ("grammar", "cache", "runtime", "builder")
_MAGIC = sys.modules["_frozen_importlib_external"].MAGIC_NUMBER
_ModuleSpec = type(__spec__)   # importlib.machinery.ModuleSpec, without importing importlib


def build(repo: str, out: str) -> int:
    """Write the index of every module under repo's PACKAGES to `out` (atomically); return how
    many modules it holds. Layout: magic, optimize level, header length, the marshalled header
    {name: (is_package, source path, mtime_ns, size, offset, length)}, then each module's
    marshalled code."""
    header: dict[str, tuple] = {}
    blobs: list[bytes] = []
    offset = 0
    for pkg in PACKAGES:
        for d, dirs, files in os.walk(os.path.join(repo, pkg)):
            dirs[:] = sorted(x for x in dirs if x != "__pycache__")
            for f in sorted(files):
                if not f.endswith(".py"):
                    continue
                path = os.path.join(d, f)
                rel = os.path.relpath(path, repo)[:-3].split(os.sep)
                is_pkg = rel[-1] == "__init__"
                name = ".".join(rel[:-1] if is_pkg else rel)
                st = os.stat(path)
                with open(path, "rb") as fh:
                    code = compile(fh.read(), path, "exec", dont_inherit=True, optimize=0)
                blob = marshal.dumps(code)
                header[name] = (is_pkg, path, st.st_mtime_ns, st.st_size, offset, len(blob))
                blobs.append(blob)
                offset += len(blob)
    head = marshal.dumps(header)
    tmp = f"{out}.{os.getpid()}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(_MAGIC + bytes([0]) + len(head).to_bytes(4, "little") + head)
        for b in blobs:
            fh.write(b)
    os.replace(tmp, out)
    return len(header)


class _Finder:
    """The meta path finder (and loader) over one index file."""

    def __init__(self, fd: int, header: dict, base: int):
        self._fd = fd
        self._header = header
        self._base = base

    def find_spec(self, name, path=None, target=None):
        e = self._header.get(name)
        if e is None:
            return None
        is_pkg, source, mtime, size, _, _ = e
        try:
            st = os.stat(source)
        except OSError:
            return None
        if st.st_mtime_ns != mtime or st.st_size != size:
            return None             # edited since install.sh built the index: the normal import
        spec = _ModuleSpec(name, self, origin=source, is_package=is_pkg)
        spec.has_location = True    # __file__ = origin
        if is_pkg:
            spec.submodule_search_locations = [os.path.dirname(source)]
        return spec

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        _, _, _, _, offset, length = self._header[module.__spec__.name]
        code = marshal.loads(os.pread(self._fd, length, self._base + offset))
        exec(code, module.__dict__)


def install(path: str) -> bool:
    """Put the finder of index `path` first on sys.meta_path; False (and nothing done) when
    there is no usable index: missing, unreadable, or written by another Python."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        start = os.pread(fd, len(_MAGIC) + 5, 0)
        if start[:len(_MAGIC)] != _MAGIC or start[len(_MAGIC)] != sys.flags.optimize:
            raise ValueError("another interpreter's index")
        n = int.from_bytes(start[len(_MAGIC) + 1:], "little")
        header = marshal.loads(os.pread(fd, n, len(start)))
    except (OSError, ValueError, EOFError, TypeError):
        os.close(fd)
        return False
    sys.meta_path.insert(0, _Finder(fd, header, len(start) + n))
    return True


def write(script: str, python: str, repo: str, paths: list[str]) -> int:
    """Write the launcher `script` for `repo` (on sys.path first, then `paths`) run by
    `python`, and its index next to it (`script`.index); return how many modules it holds."""
    index = script + ".index"
    n = build(repo, index)
    text = (f"#!{python} -IS\nimport sys\nsys.path[:0] = {[repo, *paths]!r}\n"
            f"from builder.launcher import install\ninstall({index!r})\n"
            "from builder.cli import exit_now, main\nexit_now(main())\n")
    tmp = f"{script}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o755)
    os.replace(tmp, script)
    return n


if __name__ == "__main__":     # install.sh: python -m builder.launcher SCRIPT
    import sysconfig

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    site = list(dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib")))
    print(f"{sys.argv[1]}: {write(sys.argv[1], sys.executable, here, site)} modules indexed")
