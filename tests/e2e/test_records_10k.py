"""The replay and explain records at 10,000 context files (issue 14: marshal records, the stat
memo holding digests and xattrs): a rebuild of the same context replays, a touch replays, an
edit of one file rebuilds with the one file named, and the layer after the edit is the one a
cold build of the same context makes."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from e2e_helpers import ok

from builder import statid
from cache import layout, sealed

pytestmark = pytest.mark.usefixtures("busybox_root")

FILES = 10_000


@pytest.fixture
def ctx(tmp_path) -> Path:
    c = tmp_path / "ctx"
    for i in range(FILES):
        d = c / f"d{i // 100:03d}"
        if i % 100 == 0:
            d.mkdir(parents=True)
        (d / f"f{i % 100:02d}.txt").write_bytes(b"file %d\n" % i)
    (c / "Dockerfile").write_text("FROM busybox\nCOPY . /app\nRUN ls /app | wc -l > /n\n")
    old = time.time() - 10
    for p in c.rglob("*"):
        os.utime(p, (old, old))
    time.sleep(0.06)
    return c


def build(pybuild, ctx: Path, *args: str) -> tuple[str, dict[str, str]]:
    """(image ID, {step text: "CACHED" or its cache-miss line or "ran"})."""
    r = ok(pybuild("build", "--progress", "plain", "-t", "big", "--iidfile",
                   str(ctx.parent / "iid"), *args, str(ctx)))
    names, out = {}, {}
    for line in r.stderr.splitlines():
        num, _, rest = line.partition(" ")
        if rest.startswith("["):
            names[num] = rest.split("] ", 1)[1]
            out.setdefault(names[num], "ran")
        elif num in names and rest == "CACHED":
            out[names[num]] = "CACHED"
        elif num in names and rest.startswith("cache miss: "):
            out[names[num]] = rest[len("cache miss: "):]
    return (ctx.parent / "iid").read_text(), out


def test_replay_touch_and_one_edit_at_10k_files(pybuild, ctx, busybox_root):
    first, _ = build(pybuild, ctx)
    again, steps = build(pybuild, ctx)                 # the replay: every step CACHED
    assert again == first
    assert steps["COPY . /app"] == steps["RUN ls /app | wc -l > /n"] == "CACHED", steps
    os.utime(ctx / "d050" / "f07.txt")                  # a touch: still replays
    time.sleep(0.06)
    assert build(pybuild, ctx)[0] == first
    (ctx / "d050" / "f07.txt").write_bytes(b"edited\n")
    time.sleep(0.06)
    edited, steps = build(pybuild, ctx)
    assert edited != first
    assert steps["COPY . /app"] == "1 file changed: d050/f07.txt (content)"
    # the record holds every path the build looked at, the edited file's content among the
    # few the stat memo's file does not hold yet (its save was put off for one file)
    (record,) = (busybox_root / layout.REPLAY_DIR).iterdir()
    files = sealed.loads(record.read_bytes())["files"]
    assert len(files) > FILES
    assert [p for p, sig in files.items() if len(sig) > statid.CONTENT] == \
        [str(ctx / "d050" / "f07.txt")]
    assert build(pybuild, ctx)[0] == edited             # and that replays in turn
    # the memo's rewrite was put off for one file: the record carries that file's content,
    # so a touch of it replays too, and a chmod of it does not
    os.utime(ctx / "d050" / "f07.txt")
    time.sleep(0.06)
    (explain,) = (busybox_root / layout.EXPLAIN_DIR).iterdir()
    ran_in_full = explain.stat().st_mtime_ns           # a replay never writes it
    again, steps = build(pybuild, ctx)
    assert again == edited and steps["COPY . /app"] == "CACHED", steps
    assert explain.stat().st_mtime_ns == ran_in_full
    os.chmod(ctx / "d050" / "f07.txt", 0o600)
    time.sleep(0.06)
    chmodded, steps = build(pybuild, ctx)
    assert chmodded != edited
    assert steps["COPY . /app"].startswith("1 file changed: d050/f07.txt"), steps
    os.chmod(ctx / "d050" / "f07.txt", 0o644)
    time.sleep(0.06)
    cold, _ = build(pybuild, ctx, "--no-cache")
    assert cold == edited
