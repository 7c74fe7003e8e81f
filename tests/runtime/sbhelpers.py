"""Run a command in the sandbox and capture what a user would see (exit code, stdout, stderr)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from runtime.sandbox import run
from runtime.spec import SandboxSpec


def sh(layers: list[Path], script: str, **kw) -> tuple[int, str, str]:
    return capture(layers, ["sh", "-c", script], **kw)


def capture(layers: list[Path], argv: list[str], stdin: bytes | None = None, **kw) -> tuple[int, str, str]:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.TemporaryFile() as inp:
        if stdin is not None:
            inp.write(stdin)
            inp.seek(0)
        spec = SandboxSpec(lowerdirs=list(layers), argv=argv, stdin=inp.fileno(), stdout=out.fileno(),
                           stderr=err.fileno(), **kw)
        rc = run(spec)
        out.seek(0)
        err.seek(0)
        return rc, out.read().decode(), err.read().decode()


def tree(d: Path) -> list[str]:
    """Every path under d, relative, sorted (what a layer made of this upper dir would hold)."""
    out = []
    for root, dirs, files in os.walk(d):
        for n in dirs + files:
            out.append(os.path.relpath(os.path.join(root, n), d))
    return sorted(out)
