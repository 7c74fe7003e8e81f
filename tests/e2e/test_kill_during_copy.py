"""`kill -9` of a build while a COPY has its overlay mounted (or a COPY --from its stage's view),
then `pybuild prune`: no mount under the store root survives the build, nothing lands in the
system temp dir, and prune unmounts (then removes) what an older pybuild or a killed process left
mounted under the store's tmp/."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.mountinfo import mounts_under

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds mount overlays: run as root")


def _mounts_under(root: Path, mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    return [m.mount_point for m in mounts_under(root, mountinfo)]


def _text(f) -> str:
    f.seek(0)
    return f.read()


def _kill_when_mounted(store: Path, ctx: Path, log, want, env=None) -> tuple[list[str], list[str]]:
    """Build ctx, kill -9 the build once a mount point `want(m)` shows in its own mount namespace;
    (mounts left under store in ours, the build's mounts that were wanted)."""
    p = subprocess.Popen([sys.executable, "-m", "builder", "build", "--progress", "plain", "-t", "big",
                          str(ctx)], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 120
        seen: list[str] = []
        while not seen:     # the build's own view (its namespace is private), [] once it is gone
            assert p.poll() is None, f"the build ended before its mount was seen: {_text(log)}"
            assert time.monotonic() < deadline, "the mount never appeared"
            seen = [m for m in _mounts_under(store, f"/proc/{p.pid}/mountinfo") if want(m)]
            time.sleep(0.005)
        os.kill(p.pid, signal.SIGKILL)
        assert p.wait(timeout=30) == -signal.SIGKILL
        return _mounts_under(store), seen
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        for m in _mounts_under(store):      # never leave a mount behind for other tests
            subprocess.run(["umount", "-l", m], check=False)


def _many_files(ctx: Path, dirs: int) -> None:
    """dirs x 100 small files: 50 dirs keep a COPY's mount up for ~0.5 s (more on a loaded
    machine), a hundred times the 5 ms poll of _kill_when_mounted."""
    for i in range(dirs):
        d = ctx / f"d{i:03d}"
        d.mkdir(parents=True)
        for j in range(100):
            (d / f"f{j:03d}").write_text(f"{i} {j}\n")


def test_kill_9_during_copy_leaves_no_mount(busybox_root, tmp_path, pybuild):
    ctx = tmp_path / "ctx"
    _many_files(ctx, 50)
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY . /data/\n")
    with open(tmp_path / "build.log", "w+") as log:     # a file, not a pipe nobody drains
        left, seen = _kill_when_mounted(busybox_root, ctx, log, lambda m: "/pybuild-merged-" in m)
    assert left == [], f"left mounted after kill -9 (seen in the build: {seen})"
    r = pybuild("prune")
    assert r.returncode == 0, r.stderr
    assert os.listdir(busybox_root / "tmp") == []


@pytest.mark.parametrize("snap", ["overlay", "native"])
def test_kill_9_during_copy_from_leaves_only_what_prune_removes(snap, busybox_root, tmp_path, pybuild):
    """A `COPY --from=stage` has the stage's rootfs mounted read-only (an overlay, or the native
    snapshotter's full copy): nothing of it lands in the system temp dir, and prune then leaves
    the store's tmp/ empty (DESIGN.md: a crash leaves only garbage that prune removes)."""
    ctx = tmp_path / "ctx"
    _many_files(ctx, 50)
    (ctx / "Dockerfile").write_text("FROM busybox AS src\nCOPY . /data/\n"
                                    "FROM busybox\nCOPY --from=src /data /copy/\n")
    systmp = tmp_path / "systmp"      # the build's system temp dir ($TMPDIR), empty before
    systmp.mkdir()
    env = {**os.environ, "TMPDIR": str(systmp), "PYBUILD_SNAPSHOTTER": snap}
    ro_view = "/pybuild-merged-" if snap == "overlay" else "/view"
    with open(tmp_path / "build.log", "w+") as log:
        _, views = _kill_when_mounted(busybox_root, ctx, log,
                                      lambda m: ro_view in m and "/scratch-" not in m, env)
    assert os.listdir(systmp) == [], f"the build put its mount of {views} in the system temp dir"
    r = pybuild("prune")
    assert r.returncode == 0, r.stderr
    assert os.listdir(busybox_root / "tmp") == []


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _overlay_in(scratch: Path) -> Path:
    for n in ("lower", "upper", "work", "merged"):
        (scratch / n).mkdir(parents=True)
    (scratch / "lower" / "file").write_text("from the lower dir\n")
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={scratch}/lower,upperdir={scratch}/upper,workdir={scratch}/work",
                    str(scratch / "merged")], check=True)
    return scratch / "merged"


def test_prune_unmounts_what_a_dead_process_left_and_keeps_a_live_ones(busybox_root, pybuild):
    tmp = busybox_root / "tmp"
    dead = _overlay_in(tmp / f"scratch-{_dead_pid()}-old")
    live = _overlay_in(tmp / f"scratch-{os.getpid()}-mine")      # this test process is alive
    try:
        assert sorted(_mounts_under(busybox_root)) == sorted([str(dead), str(live)])
        r = pybuild("prune")
        assert r.returncode == 0, r.stderr
        assert _mounts_under(busybox_root) == [str(live)]
        assert not dead.parent.exists()                      # gc then removed the scratch dir
        assert (live / "file").read_text() == "from the lower dir\n"
    finally:
        for m in _mounts_under(busybox_root):
            subprocess.run(["umount", "-l", m], check=False)
