"""Helpers for end-to-end tests: build a context with the CLI, look at the result."""
from __future__ import annotations

import contextlib
import subprocess
import uuid
from pathlib import Path


def ok(r) -> subprocess.CompletedProcess:
    """A command that must have worked; its stderr tail says why not."""
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def cmdline(pid: int) -> bytes:
    """/proc/<pid>/cmdline (NUL-separated), or b"" once the process is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def descendants(pid: int) -> list[int]:
    """Every process below pid (children of children too), from /proc's children lists."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                kids = [int(k) for k in f.read().split()]
        except OSError:
            kids = []
        out += kids
        todo += kids
    return out


def one_error_line(r, *words, code: int | None = None) -> str:
    """The failure a user sees: non-zero (`code` if given), one `pybuild: error:` line with
    `words` in it, no traceback."""
    assert r.returncode != 0 if code is None else r.returncode == code, (r.returncode, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("pybuild:")]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("pybuild: error: "), r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def store_snapshot(root: Path) -> dict:
    """What a failed command must leave as it was: every index, every blob, layer and tmp/
    entry."""
    import os
    out = {}
    for name in ("tags.json", "images.json", "layers.json", "cachekeys.json", "index.json",
                 "sources.json"):
        p = root / name
        out[name] = p.read_text() if p.exists() else None
    for d in ("blobs/sha256", "tmp", "layers"):
        p = root / d
        out[d] = sorted(os.listdir(p)) if p.exists() else []
    return out


def config_of(pybuild, ref: str) -> dict:
    """The stored image config of `ref` (what docker inspect's Config shows), ID as `_id`."""
    from cache.store import Store

    img = Store.open().image(ref)
    return {**img.config, "_id": img.id}


def build(pybuild, ctx: Path, dockerfile: str, *args: str, tag: str | None = None):
    """Build `dockerfile` in `ctx`; return (config, fs) where `fs()` mounts the rootfs read-only."""
    (ctx / "Dockerfile").write_text(dockerfile)
    tag = tag or f"t-{uuid.uuid4().hex[:8]}"
    r = pybuild("build", "--progress", "plain", "-t", tag, *args, str(ctx))
    assert r.returncode == 0, r.stderr
    return config_of(pybuild, tag), (lambda: image_fs(tag))


@contextlib.contextmanager
def image_fs(ref: str):
    """The image's filesystem: a read-only overlay of its layer dirs."""
    from cache.store import Store
    from runtime.snapshotter import mounted

    store = Store.open()
    img = store.image(ref)
    with mounted(store.layer_dirs(img.diff_ids)) as root:
        yield Path(root)
