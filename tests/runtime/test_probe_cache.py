"""The overlay probe's answers kept in /run/pybuild/overlay-probe: a run on a filesystem already
probed mounts no test overlay (counted with strace: the probe is an fsopen("overlay") of its
own), an answer of another boot is not used, and a wrong "overlay works" is probed again: a
build's mount falls back on the native snapshotter at once, a run's refused rootfs makes the
next run probe and fall back. Each test's filesystem is a fresh mount of its own, so its
entries never touch another filesystem's."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from busybox_fixture import REPO, copy_store
from rootfs_helpers import requires_root

from runtime import snapshotter

pytestmark = [requires_root,
              pytest.mark.skipif(shutil.which("strace") is None, reason="counts mounts with strace")]


def _store_on(fs_mount: list[str], tmp_path, busybox_store, monkeypatch):
    fs = tmp_path / "fs"
    fs.mkdir()
    subprocess.run([*fs_mount, str(fs)], check=True)
    try:
        root = copy_store(busybox_store.root, fs / "root")
        monkeypatch.setenv("PYBUILD_ROOT", str(root))
        monkeypatch.delenv(snapshotter.SNAPSHOTTER_ENV, raising=False)
        yield root
        snapshotter.forget(root)
    finally:
        subprocess.run(["umount", "-l", str(fs)], check=False)


@pytest.fixture
def tmpfs_store(tmp_path, busybox_store, monkeypatch):
    """busybox's store on a tmpfs mounted for this test (overlay works there)."""
    yield from _store_on(["mount", "-t", "tmpfs", "tmpfs"], tmp_path, busybox_store, monkeypatch)


@pytest.fixture
def overlay_store(tmp_path, busybox_store, monkeypatch):
    """busybox's store on an overlayfs (overlay refuses an upper dir there)."""
    o = tmp_path / "o"
    for d in ("l", "u", "w"):
        (o / d).mkdir(parents=True)
    yield from _store_on(["mount", "-t", "overlay", "overlay", "-o",
                          f"lowerdir={o}/l,upperdir={o}/u,workdir={o}/w"],
                         tmp_path, busybox_store, monkeypatch)


def _pybuild_counting_overlays(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, int]:
    log = tmp_path / "strace.log"
    r = subprocess.run(["strace", "-f", "-qq", "-e", "trace=fsopen", "-o", str(log),
                        sys.executable, "-m", "builder", *args],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    return r, log.read_text().count('fsopen("overlay"')


def _entries() -> list[str]:
    try:
        with open(snapshotter.PROBE_CACHE) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


RUN = ("run", "--rm", "--network", "none", "busybox", "true")


def test_a_filesystem_is_probed_once_then_runs_mount_only_their_rootfs(tmpfs_store, tmp_path):
    key = snapshotter._fs_key(str(tmpfs_store))
    assert not any(e.startswith(key + " ") for e in _entries())
    r, mounts = _pybuild_counting_overlays(tmp_path, *RUN)
    assert r.returncode == 0, r.stderr
    assert mounts == 2                          # the probe, then the container's rootfs
    assert f"{key} overlay" in _entries()
    r, mounts = _pybuild_counting_overlays(tmp_path, *RUN)
    assert r.returncode == 0, r.stderr
    assert mounts == 1                          # the rootfs only: the answer was kept
    assert r.stderr == ""


def test_an_answer_of_another_boot_is_not_used_and_goes(tmpfs_store, tmp_path):
    key = snapshotter._fs_key(str(tmpfs_store))
    stale = "00000000-0000-0000-0000-000000000000/" + key.split("/", 1)[1]
    with open(snapshotter.PROBE_CACHE, "a") as f:
        f.write(f"{stale} native overlayfs was refused before the reboot\n")
    r, mounts = _pybuild_counting_overlays(tmp_path, *RUN)
    assert r.returncode == 0, r.stderr
    assert mounts == 2 and "notice" not in r.stderr     # probed again: overlay works
    entries = _entries()
    assert f"{key} overlay" in entries
    assert not any(e.startswith(stale.split("/", 1)[0]) for e in entries)


def _plant_overlay_works(root) -> str:
    key = snapshotter._fs_key(str(root))
    snapshotter._store(key, "overlay")
    return key


def test_a_wrong_overlay_works_is_probed_again_by_a_build_s_mount(overlay_store, tmp_path):
    key = _plant_overlay_works(overlay_store)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f.txt").write_text("hi\n")
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY f.txt /f.txt\n")
    r, _ = _pybuild_counting_overlays(tmp_path, "build", "--progress", "plain", "-t", "t", str(ctx))
    assert r.returncode == 0, r.stderr
    notices = [ln for ln in r.stderr.splitlines() if ln.startswith("pybuild: notice:")]
    assert len(notices) == 1 and "using the native snapshotter" in notices[0], r.stderr
    assert [e for e in _entries() if e.startswith(key + " ")][0].startswith(f"{key} native ")


def test_a_wrong_overlay_works_refused_by_a_run_is_probed_again_by_the_next(overlay_store,
                                                                             tmp_path):
    key = _plant_overlay_works(overlay_store)
    r, _ = _pybuild_counting_overlays(tmp_path, *RUN)
    assert r.returncode == 125
    errors = r.stderr.splitlines()
    assert len(errors) == 1 and errors[0].startswith("pybuild: error:"), r.stderr
    assert not any(e.startswith(key + " ") for e in _entries())     # forgotten
    r, mounts = _pybuild_counting_overlays(tmp_path, *RUN)
    assert r.returncode == 0, r.stderr
    assert mounts == 1 and "using the native snapshotter" in r.stderr   # the probe's only
    assert [e for e in _entries() if e.startswith(key + " ")][0].startswith(f"{key} native ")
