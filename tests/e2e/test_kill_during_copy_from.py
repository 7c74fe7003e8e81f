"""`kill -9` of a build while a `COPY --from=stage` has the stage's rootfs mounted read-only
(overlay, or the native snapshotter's full copy): nothing lands in the system temp dir, and
`pybuild prune` then leaves the store's tmp/ empty (DESIGN.md: a crash leaves only garbage that
prune removes)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds mount overlays: run as root")


def _mount_points(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/mountinfo") as f:
            return [line.split()[4].replace("\\040", " ") for line in f]
    except (FileNotFoundError, ProcessLookupError):
        return []


@pytest.mark.parametrize("snap", ["overlay", "native"])
def test_kill_9_during_copy_from_leaves_only_what_prune_removes(snap, busybox_root, tmp_path,
                                                                  pybuild):
    ctx = tmp_path / "ctx"
    for i in range(100):
        d = ctx / f"d{i:03d}"
        d.mkdir(parents=True)
        for j in range(100):
            (d / f"f{j:03d}").write_text(f"{i} {j}\n")
    (ctx / "Dockerfile").write_text("FROM busybox AS src\nCOPY . /data/\n"
                                    "FROM busybox\nCOPY --from=src /data /copy/\n")
    systmp = tmp_path / "systmp"      # the build's system temp dir ($TMPDIR), empty before
    systmp.mkdir()
    env = {**os.environ, "TMPDIR": str(systmp), "PYBUILD_SNAPSHOTTER": snap}
    # the stage's read-only view: an overlay on a merged dir, or a bind mount of the native copy
    ro_view = "/pybuild-merged-" if snap == "overlay" else "/view"
    with open(tmp_path / "build.log", "w+") as log:
        p = subprocess.Popen([sys.executable, "-m", "builder", "build", "--progress", "plain",
                              str(ctx)], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log)
        try:
            deadline = time.monotonic() + 120
            while True:
                views = [m for m in _mount_points(p.pid) if ro_view in m and "/scratch-" not in m]
                if views:
                    break
                if p.poll() is not None:
                    log.seek(0)
                    pytest.fail(f"the build ended before its COPY --from was seen: {log.read()}")
                assert time.monotonic() < deadline, "the COPY --from mount never appeared"
                time.sleep(0.005)
            os.kill(p.pid, signal.SIGKILL)
            assert p.wait(timeout=30) == -signal.SIGKILL
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert os.listdir(systmp) == [], f"the build put its mount of {views} in the system temp dir"
    r = pybuild("prune")
    assert r.returncode == 0, r.stderr
    assert os.listdir(busybox_root / "tmp") == []
