"""A COPY that misses after an edit builds its layer from the previous layer of the same step
(builder.copying.Share: unchanged files hard-linked, changed ones copied). What a user must
see: the same image ID and layer digest as a cold build of the same context in a fresh store,
every attribute of every file included, and the previous layer left exactly as it was (its
files, and its recorded fingerprint) - also after the older image is removed and pruned, or
the build is killed mid-COPY."""
from __future__ import annotations

import glob
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from e2e_helpers import ok
from fs_probe import XATTR_REASON, xattrs_supported

from cache.layers import fingerprint

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds mount overlays: run as root")

OLD_T = 1_600_000_000      # the files' mtimes: below the epoch, so they reach the layer as they are
EPOCH = "1700000000"
DOCKERFILE = "FROM busybox\nCOPY . /app\n"


def _context(ctx: Path, dockerfile: str = DOCKERFILE) -> None:
    for i in range(4):
        d = ctx / f"d{i}"
        d.mkdir(parents=True)
        for j in range(12):
            (d / f"f{j}").write_text(f"file {i} {j}\n" * (j + 1))
    (ctx / "d0" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (ctx / "d0" / "run.sh").chmod(0o755)
    (ctx / "d1" / "empty").write_bytes(b"")
    os.symlink("d0/f1", ctx / "link")
    os.link(ctx / "d3" / "f0", ctx / "d3" / "hard")     # a hardlink in the context itself
    (ctx / "Dockerfile").write_text(dockerfile)
    _settle_times(ctx)


def _settle_times(ctx: Path) -> None:
    for dirpath, dirs, files in os.walk(ctx, topdown=False):
        for n in files + dirs:
            os.utime(os.path.join(dirpath, n), (OLD_T, OLD_T), follow_symlinks=False)
    os.utime(ctx, (OLD_T, OLD_T))


def _env(root: Path, epoch: str = EPOCH, share: str = "link") -> dict:
    return {**os.environ, "PYBUILD_ROOT": str(root), "SOURCE_DATE_EPOCH": epoch,
            "PYBUILD_COPY_SHARE": share}


def _build(root: Path, ctx: Path, epoch: str = EPOCH, tag: str = "app",
           share: str = "link") -> tuple[str, str]:
    """(image ID, the COPY layer's diff_id) of a build in store `root`."""
    iid = ctx.parent / f"iid-{os.getpid()}"
    r = subprocess.run([sys.executable, "-m", "builder", "build", "--progress", "plain", "-t", tag,
                        "--iidfile", str(iid), str(ctx)], cwd=REPO, env=_env(root, epoch, share),
                       capture_output=True, text=True, timeout=300)
    ok(r)
    image_id = iid.read_text().strip()
    r = ok(subprocess.run([sys.executable, "-m", "builder", "inspect", "--format",
                           "{{json .RootFS.Layers}}", image_id], cwd=REPO, env=_env(root),
                          capture_output=True, text=True, timeout=60))
    return image_id, json.loads(r.stdout)[1]     # the COPY after busybox (not Store.image: it holds)


def _layer_dir(root: Path, diff_id: str) -> Path:
    return root / "layers" / diff_id[7:]


def _files(d: Path) -> dict:
    """Every entry's content digest (or link target), mode, owner, mtime and inode."""
    out = {}
    for dirpath, dirs, files in os.walk(d):
        for n in files + dirs:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            if os.path.isfile(p) and not os.path.islink(p):
                what = hashlib.sha256(Path(p).read_bytes()).hexdigest()
            elif os.path.islink(p):
                what = os.readlink(p)
            else:
                what = "dir"
            out[os.path.relpath(p, d)] = (what, st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns,
                                          (st.st_dev, st.st_ino))
    return out


def _shared(old: Path, new: Path) -> set[str]:
    """Files of the new layer that are inodes of the old one."""
    olds = {v[5] for k, v in _files(old).items() if v[0] != "dir"}
    return {k for k, v in _files(new).items() if v[0] != "dir" and v[5] in olds}


def _recorded_fp(root: Path, diff_id: str) -> str:
    return json.loads((root / "layers.json").read_text())[diff_id]["fingerprint"]


USER_XATTRS = xattrs_supported("user.test")


def _user_xattr(path: Path, value: bytes) -> None:
    os.setxattr(path, "user.test", value)


def _edit(ctx: Path) -> None:
    p = ctx / "d1" / "f3"
    p.write_text("edited\n")
    os.utime(p, (OLD_T, OLD_T))
    os.utime(p.parent, (OLD_T, OLD_T))


CHANGES = {
    "edit": _edit,
    "add": lambda c: ((c / "d2" / "new").write_text("new\n"), _settle_times(c)),
    "delete": lambda c: ((c / "d0" / "f1").unlink(), (c / "link").unlink(), _settle_times(c)),
    "chmod": lambda c: (c / "d1" / "f2").chmod(0o711),
    "rename": lambda c: ((c / "d0" / "f4").rename(c / "d0" / "f4b"), _settle_times(c)),
    # one file edited, another only given another (unclamped) mtime: that one must be copied
    "mtime": lambda c: (_edit(c), os.utime(c / "d2" / "f5", (OLD_T + 77, OLD_T + 77))),
    "xattr": lambda c: _user_xattr(c / "d2" / "f6", b"v1"),
    "chown": _edit,
    "epoch": _edit,
}


@pytest.mark.parametrize("change", [
    pytest.param(c, marks=pytest.mark.skipif(c == "xattr" and not USER_XATTRS, reason=XATTR_REASON))
    for c in sorted(CHANGES)])
def test_a_rebuild_after_a_change_is_a_cold_build_and_leaves_the_old_layer(
        change, busybox_root, other_busybox_root, tmp_path):
    ctx = tmp_path / "ctx"
    df = "FROM busybox\nCOPY --chown=1234:5678 . /app\n" if change == "chown" else DOCKERFILE
    _context(ctx, df)
    if change == "xattr":
        _user_xattr(ctx / "d2" / "f7", b"kept")     # an unchanged file with an xattr is shared
    _, old = _build(busybox_root, ctx)
    old_dir = _layer_dir(busybox_root, old)
    before = _files(old_dir)
    CHANGES[change](ctx)
    epoch = "1550000000" if change == "epoch" else EPOCH   # every mtime clamps to another time
    image_id, new = _build(busybox_root, ctx, epoch)
    assert new != old
    cold_id, cold = _build(other_busybox_root, ctx, epoch)
    assert (image_id, new) == (cold_id, cold)
    new_files = {k: v[:5] for k, v in _files(_layer_dir(busybox_root, new)).items()}
    assert new_files == {k: v[:5] for k, v in _files(_layer_dir(other_busybox_root, cold)).items()}
    assert _files(old_dir) == before, "the old layer's files changed"
    assert fingerprint(old_dir) == _recorded_fp(busybox_root, old)
    assert fingerprint(_layer_dir(busybox_root, new)) == _recorded_fp(busybox_root, new)
    shared = _shared(old_dir, _layer_dir(busybox_root, new))
    if change == "epoch":
        assert shared == set()      # another epoch settles every file to another time
        return
    assert "app/d2/f0" in shared and len(shared) > 40, shared
    assert not shared & {"app/d3/f0", "app/d3/hard", "app/link"}   # hardlinks, symlinks: copied
    changed = {"edit": "app/d1/f3", "chmod": "app/d1/f2", "mtime": "app/d2/f5",
               "xattr": "app/d2/f6", "chown": "app/d1/f3", "add": "app/d2/new"}.get(change)
    assert changed is None or changed not in shared
    if change == "xattr":
        assert "app/d2/f7" in shared


def test_a_context_file_hard_linked_to_a_layer_file_is_never_linked_in(busybox_root, tmp_path):
    ctx = tmp_path / "ctx"
    _context(ctx)
    _, old = _build(busybox_root, ctx)
    old_dir = _layer_dir(busybox_root, old)
    src = ctx / "d2" / "f1"
    src.unlink()
    os.link(old_dir / "app" / "d2" / "f1", src)   # same bytes, mode and time as the layer's file
    _edit(ctx)
    _, new = _build(busybox_root, ctx)
    got = os.lstat(_layer_dir(busybox_root, new) / "app" / "d2" / "f1")
    assert (got.st_dev, got.st_ino) != (os.lstat(src).st_dev, os.lstat(src).st_ino)
    assert "app/d2/f0" in _shared(old_dir, _layer_dir(busybox_root, new))


def _save_layers(root: Path, ref: str, out: Path) -> list[str]:
    ok(subprocess.run([sys.executable, "-m", "builder", "save", "-o", str(out), ref], cwd=REPO,
                      env=_env(root), capture_output=True, text=True, timeout=300))
    import tarfile
    with tarfile.open(out) as t:
        return json.load(t.extractfile("manifest.json"))[0]["Layers"]


def test_the_newer_image_survives_removing_and_pruning_the_older(busybox_root, tmp_path):
    ctx = tmp_path / "ctx"
    _context(ctx)

    def cli(*args):
        return ok(subprocess.run([sys.executable, "-m", "builder", *args], cwd=REPO,
                                 env=_env(busybox_root), capture_output=True, text=True,
                                 timeout=300))

    _, old = _build(busybox_root, ctx, tag="new")
    cli("tag", "new", "old")
    _edit(ctx)
    _, new = _build(busybox_root, ctx, tag="new")     # the loop: same tag, "new" moves on
    assert _shared(_layer_dir(busybox_root, old), _layer_dir(busybox_root, new))
    saved = _save_layers(busybox_root, "new", tmp_path / "a.tar")
    cli("rmi", "old")
    cli("prune", "-a", "-f")        # the build cache too: nothing holds the old layer now
    assert not _layer_dir(busybox_root, old).exists()
    assert fingerprint(_layer_dir(busybox_root, new)) == _recorded_fp(busybox_root, new)
    r = cli("run", "--rm", "new", "cat", "/app/d2/f0", "/app/d1/f3")
    assert r.stdout == "file 2 0\nedited\n"
    (tmp_path / "a.tar").unlink()
    assert _save_layers(busybox_root, "new", tmp_path / "b.tar") == saved


def test_kill_9_while_linking_leaves_the_old_layer_and_a_consistent_store(
        busybox_root, other_busybox_root, tmp_path):
    ctx = tmp_path / "ctx"
    for i in range(60):
        d = ctx / f"d{i:03d}"
        d.mkdir(parents=True)
        for j in range(100):
            (d / f"f{j:03d}").write_text(f"{i} {j}\n")
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    _settle_times(ctx)
    _, old = _build(busybox_root, ctx)
    old_dir = _layer_dir(busybox_root, old)
    before = _files(old_dir)
    (ctx / "d059" / "f099").write_text("edited\n")
    p = subprocess.Popen([sys.executable, "-m", "builder", "build", "--progress", "plain", "-t",
                          "app", str(ctx)], cwd=REPO, env=_env(busybox_root),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        first = str(busybox_root / "tmp" / "*" / "upper" / "app" / "d000" / "f000")
        while True:     # the first file linked into the new layer's scratch upper dir
            assert p.poll() is None, "the build ended before it linked a file"
            assert time.monotonic() < deadline
            hit = [f for f in glob.glob(first) if os.lstat(f).st_nlink > 1]
            if hit:
                break
            time.sleep(0.002)
        os.kill(p.pid, signal.SIGKILL)
        assert p.wait(timeout=30) == -signal.SIGKILL
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert _files(old_dir) == before
    assert fingerprint(old_dir) == _recorded_fp(busybox_root, old)
    ok(subprocess.run([sys.executable, "-m", "builder", "prune", "-f"], cwd=REPO,
                      env=_env(busybox_root), capture_output=True, text=True, timeout=300))
    assert os.listdir(busybox_root / "tmp") == []
    assert _files(old_dir) == before
    assert _build(busybox_root, ctx) == _build(other_busybox_root, ctx)


def test_without_the_setting_nothing_is_shared_and_a_run_sees_one_link(busybox_root, tmp_path):
    """Sharing is opt-in (PYBUILD_COPY_SHARE=link): by default a RUN after an edited COPY sees
    the link counts a cold build gives."""
    ctx = tmp_path / "ctx"
    _context(ctx, DOCKERFILE + "RUN stat -c %h /app/d2/f0 > /links\n")
    _, old = _build(busybox_root, ctx, share="off")
    _edit(ctx)
    _, new = _build(busybox_root, ctx, share="off")
    assert not _shared(_layer_dir(busybox_root, old), _layer_dir(busybox_root, new))
    r = ok(subprocess.run([sys.executable, "-m", "builder", "run", "--rm", "app", "cat", "/links"],
                          cwd=REPO, env=_env(busybox_root, share="off"), capture_output=True,
                          text=True, timeout=120))
    assert r.stdout == "1\n"
