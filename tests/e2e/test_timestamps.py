"""Issue 12's timestamps, as a user sees them: one time per file whoever looks (a later RUN over
the layer dirs, `pybuild save`'s tars), the build's epoch from SOURCE_DATE_EPOCH (environment or
--build-arg), a git context's HEAD commit time, or `--timestamp`."""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from e2e_helpers import ok

pytestmark = pytest.mark.usefixtures("busybox_root")

EPOCH = 1700000000  # 2023-11-14T22:13:20Z


def saved_mtimes(pybuild, ref: str, tmp_path: Path) -> dict[str, int]:
    """name -> mtime of every entry in the image's own layers, as `pybuild save` writes them
    (a later layer's entry wins)."""
    out = tmp_path / "saved.tar"
    ok(pybuild("save", "-o", str(out), ref))
    got: dict[str, int] = {}
    with tarfile.open(out) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))
        for layer in manifest[0]["Layers"]:
            with tarfile.open(fileobj=outer.extractfile(layer), mode="r:*") as t:
                for m in t:
                    got[m.name.rstrip("/")] = int(m.mtime)
    return got


def build_ok(pybuild, ctx: Path, dockerfile: str, *args: str, env=None, tag="ts") -> str:
    (ctx / "Dockerfile").write_text(dockerfile)
    return ok(pybuild("build", "--progress", "plain", "-q", "-t", tag, *args, str(ctx),
                      **({"env": env} if env else {}))).stdout.strip()


def test_a_later_step_and_save_see_the_same_mtimes(pybuild, tmp_path, monkeypatch):
    """A file a RUN wrote (now, later than the epoch: clamped), one it dated before the epoch
    (kept), a dir it made: the next RUN's `stat` over the layer dirs and the saved tar agree."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(EPOCH))
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    build_ok(pybuild, ctx, "FROM busybox\n"
             "RUN mkdir /d && echo new > /d/new && touch -d @1600000000 /d/old\n"
             "RUN stat -c '%n %Y' /d /d/new /d/old > /seen\n")
    r = ok(pybuild("run", "--rm", "ts", "sh", "-c", "cat /seen; stat -c '%n %Y' /d/new /seen"))
    seen = dict(line.split() for line in r.stdout.splitlines()[:3])
    assert seen == {"/d": str(EPOCH), "/d/new": str(EPOCH), "/d/old": "1600000000"}
    run_view = dict(line.split() for line in r.stdout.splitlines()[3:])
    saved = saved_mtimes(pybuild, "ts", tmp_path)
    assert {k: saved[k] for k in ("d", "d/new", "d/old")} == {
        "d": EPOCH, "d/new": EPOCH, "d/old": 1600000000}
    assert int(run_view["/seen"]) == saved["seen"] == EPOCH
