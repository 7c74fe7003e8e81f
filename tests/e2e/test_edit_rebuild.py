"""The edit-rebuild loop (issue 14): a build after a change to the context gives what a cold build
(`--no-cache`, fresh store root) of the same context gives: the same image ID, the same diff_ids,
the same saved layer bytes, the same files inside. The previous image stays intact: its layer
dirs are unchanged by the rebuild, it still saves its old layers, and once it is removed and
pruned the new image is whole. Also under kill -9 of an edited COPY.

Every build of one context uses the same tag and the same context dir, as a developer's loop
does, so an engine that reuses the previous layer of the same step is exercised."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from busybox_fixture import REPO, copy_store
from fs_probe import XATTR_REASON, xattrs_supported

from runtime.mountinfo import mounts_under

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds mount overlays: run as root")

TAG = "edit/app"
# the RUN sees every attribute of every copied file (link counts and times included): its layer,
# and so the image ID, differs from a cold build's if the COPY layer's view does. A directory's
# link count and size are left out: above an edited entry it is a merged directory of the delta
# layer and its base (builder.delta), which overlayfs shows with a link count of 1 and the size
# of the delta's copy (an ext4 directory's size is the history of its entries anyway)
LISTING = ("RUN (find /app ! -type d | sort | xargs stat -c '%n|%F|%s|%a|%u:%g|%h|%Y|%N'; "
           "find /app -type d | sort | xargs stat -c '%n|%F|%a|%u:%g|%Y') > /listing\n")
DOCKERFILE = "FROM busybox\nCOPY . /app\n" + LISTING
CHOWN = "FROM busybox\nCOPY --chown=1:2 . /app\n" + LISTING
STAT = "%n|%F|%s|%a|%u:%g|%Y"


def ok(r) -> subprocess.CompletedProcess:
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def make_context(ctx: Path, dirs: int = 3, per_dir: int = 100) -> None:
    for i in range(dirs):
        d = ctx / f"d{i}"
        d.mkdir(parents=True)
        for j in range(per_dir):
            (d / f"f{j:03d}").write_text(f"file {i}/{j}\n" + "x" * (j % 50) + "\n")
    (ctx / "Dockerfile").write_text(DOCKERFILE)


class Builds:
    """Builds of one context dir into the test's store and cold builds into fresh stores."""

    def __init__(self, pybuild, store: Path, template: Path, tmp: Path):
        self.pybuild, self.store, self.template, self.tmp = pybuild, store, template, tmp
        self.n = 0

    def env(self, root: Path) -> dict:
        return {**os.environ, "PYBUILD_ROOT": str(root)}

    def build(self, ctx: Path, *args: str, root: Path | None = None) -> str:
        """Build ctx (tag TAG) into `root` (the test's store); the image ID."""
        root = root or self.store
        ok(self.pybuild("build", "--progress", "plain", *args, "-t", TAG, str(ctx),
                        env=self.env(root)))
        return image(root, TAG)["id"]

    def cold(self, ctx: Path, *args: str) -> Path:
        """A `--no-cache` build of ctx in a fresh store holding only busybox; that store's root."""
        self.n += 1
        root = copy_store(self.template, self.tmp / f"cold-{self.n}" / "root")
        self.build(ctx, "--no-cache", *args, root=root)
        return root


def image(root: Path, ref: str) -> dict:
    from cache.store import Store

    img = Store.open(root).image(ref)
    return {"id": img.id, "diff_ids": list(img.diff_ids)}


def saved_layers(pybuild, root: Path, ref: str, out: Path, *more: str) -> list[tuple[str, str]]:
    """(sha256 of the blob bytes, sha256 of the uncompressed tar) of each layer in
    `pybuild save ref`, in order; with `more` refs saved in the same archive, a list of those
    lists, one per ref."""
    ok(pybuild("save", "-o", str(out), ref, *more, env={**os.environ, "PYBUILD_ROOT": str(root)}))
    import gzip
    with tarfile.open(out) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))
        per_image = []
        for entry in manifest:
            got = []
            for name in entry["Layers"]:
                data = outer.extractfile(name).read()
                raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
                got.append(("sha256:" + hashlib.sha256(data).hexdigest(),
                            "sha256:" + hashlib.sha256(raw).hexdigest()))
            per_image.append(got)
    out.unlink()
    assert len(per_image) == 1 + len(more)
    return per_image if more else per_image[0]


def tar_of_dirs(root: Path, diff_ids: list[str]) -> list[str]:
    """The diff_id each layer dir's tar hashes to now (the writer reads the dir itself, not a
    kept blob)."""
    from cache.store import Store

    store = Store.open(root)
    with open(os.devnull, "wb") as null:
        return [store.layer_tar(d, null) for d in diff_ids]


def dir_state(path: Path) -> dict:
    """What a layer dir holds: per entry its type and mode, owner, size, mtime, bytes or link
    target, and xattrs (not ctime, link count or inode: sharing an inode may move those)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [*dirnames, *filenames]:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            body = None
            if os.path.islink(p):
                body = os.readlink(p)
            elif os.path.isfile(p):
                with open(p, "rb") as f:
                    body = hashlib.sha256(f.read()).hexdigest()
            xattrs = {k: os.getxattr(p, k, follow_symlinks=False)
                      for k in sorted(os.listxattr(p, follow_symlinks=False))}
            out[os.path.relpath(p, path)] = (st.st_mode, st.st_uid, st.st_gid, st.st_size,
                                             st.st_mtime_ns, body, xattrs)
    return out


def layer_states(root: Path, diff_ids: list[str]) -> list[dict]:
    from cache.store import Store

    store = Store.open(root)
    paths = [store.layer_path(d) for d in diff_ids]
    assert all(p.is_dir() for p in paths), [str(p) for p in paths if not p.is_dir()]
    return [dir_state(p) for p in paths]


def inside(pybuild, root: Path, ref: str, path: str) -> tuple[str, str]:
    """(stat line, content) of `path` in a container of `ref`."""
    r = ok(pybuild("run", "--rm", "--network", "none", ref, "sh", "-c",
                   f"stat -c '{STAT}' {path}; echo ---; cat {path}",
                   env={**os.environ, "PYBUILD_ROOT": str(root)}))
    stat, _, content = r.stdout.partition("---\n")
    return stat.strip(), content


def assert_same_as_cold(b: Builds, ctx: Path, new_id: str, *args: str,
                        prev: str | None = None) -> tuple[Path, list | None]:
    """The image just built in b.store equals a cold build of ctx: ID, diff_ids, saved layer
    bytes, the layer dirs' tars. (The cold store's root, the saved layers of image `prev` from
    the same save.)"""
    cold = b.cold(ctx, *args)
    want, got = image(cold, TAG), image(b.store, TAG)
    assert got["id"] == new_id
    assert got["diff_ids"] == want["diff_ids"]
    assert got["id"] == want["id"]
    if prev is not None:
        mine, prev_layers = saved_layers(b.pybuild, b.store, TAG, b.tmp / "mine.tar", prev)
    else:
        mine, prev_layers = saved_layers(b.pybuild, b.store, TAG, b.tmp / "mine.tar"), None
    theirs = saved_layers(b.pybuild, cold, TAG, b.tmp / "cold.tar")
    assert mine == theirs
    assert [raw for _, raw in mine] == want["diff_ids"]
    assert tar_of_dirs(b.store, got["diff_ids"]) == got["diff_ids"]
    return cold, prev_layers


@pytest.fixture
def builds(pybuild, busybox_store, busybox_root, tmp_path, monkeypatch) -> Builds:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    return Builds(pybuild, busybox_root, busybox_store.root, tmp_path)


# -- one change at a time ----------------------------------------------------------------------
def _edit(ctx):
    with open(ctx / "d0/f000", "a") as f:
        f.write("one more line\n")
    return "/app/d0/f000"


def _add(ctx):
    (ctx / "d1/new").write_text("a new file\n")
    return "/app/d1/new"


def _delete(ctx):
    (ctx / "d2/f005").unlink()
    return None


def _chmod(ctx):
    os.chmod(ctx / "d1/f001", 0o750)
    return "/app/d1/f001"


def _rename(ctx):
    os.rename(ctx / "d2/f002", ctx / "d2/renamed")
    return "/app/d2/renamed"


def _mtime(ctx):
    os.utime(ctx / "d0/f003", (1_000_000_000, 1_000_000_000))
    return "/app/d0/f003"


def _touch(ctx):
    os.utime(ctx / "d0/f004", None)
    return "/app/d0/f004"


def _xattr(ctx):
    os.setxattr(ctx / "d1/f006", "user.edit", b"v1")
    return "/app/d1/f006"


def _hardlink(ctx):
    os.link(ctx / "d0/f007", ctx / "d0/link")
    return "/app/d0/link"


def _symlink(ctx):
    (ctx / "d2/f008").unlink()
    os.symlink("f009", ctx / "d2/f008")
    return "/app/d2/f008"


def _to_chown(ctx):
    (ctx / "Dockerfile").write_text(CHOWN)
    return "/app/d0/f010"


def _edit_chown(ctx):
    with open(ctx / "d1/f011", "a") as f:
        f.write("edited under --chown\n")
    return "/app/d1/f011"


CASES = {"edit": (_edit, ()), "add": (_add, ()), "delete": (_delete, ()), "chmod": (_chmod, ()),
         "rename": (_rename, ()), "mtime only": (_mtime, ()), "touch": (_touch, ()),
         "user xattr": (_xattr, ()), "hard link": (_hardlink, ()), "symlink": (_symlink, ()),
         "to --chown=1:2": (_to_chown, ()), "edit under --chown=1:2": (_edit_chown, ()),
         "SOURCE_DATE_EPOCH": (lambda ctx: "/app/d2/f012",
                               ("--build-arg", "SOURCE_DATE_EPOCH=1700000000"))}


# the changes an edited COPY writes as a delta over the previous layer of its step (builder.delta);
# a hard link (a cold copy keeps links within a layer), another Dockerfile (another step) or
# another epoch (every time may move) make the layer in full
AS_DELTA = {"edit", "add", "delete", "chmod", "rename", "user xattr", "symlink",
            "edit under --chown=1:2"}


def is_delta(root: Path, diff_id: str) -> bool:
    from cache import layout
    return layout.delta_base(root, diff_id) is not None


@pytest.mark.parametrize("case", [
    pytest.param(c, marks=pytest.mark.skipif(c == "user xattr" and not xattrs_supported("user.x"),
                                             reason=XATTR_REASON))
    for c in CASES])
def test_rebuild_after_a_change_equals_a_cold_build(builds, pybuild, tmp_path, case):
    change, args = CASES[case]
    ctx = tmp_path / "ctx"
    make_context(ctx)
    if case == "edit under --chown=1:2":
        (ctx / "Dockerfile").write_text(CHOWN)
    prev = builds.build(ctx)
    prev_img = image(builds.store, prev)
    prev_saved = saved_layers(pybuild, builds.store, prev, tmp_path / "prev.tar")
    prev_dirs = layer_states(builds.store, prev_img["diff_ids"])

    path = change(ctx)
    new = builds.build(ctx, *args)
    if case not in ("mtime only", "touch"):     # mtime is not content: those rebuild nothing
        assert new != prev
    assert is_delta(builds.store, image(builds.store, new)["diff_ids"][1]) == (case in AS_DELTA)
    cold, prev_now = assert_same_as_cold(builds, ctx, new, *args, prev=prev)

    # the previous image is as it was
    assert layer_states(builds.store, prev_img["diff_ids"]) == prev_dirs
    assert prev_now == prev_saved
    assert tar_of_dirs(builds.store, prev_img["diff_ids"]) == prev_img["diff_ids"]

    # and the file inside is what the context says
    if path is None:            # deleted
        r = pybuild("run", "--rm", "--network", "none", TAG, "ls", "/app/d2")
        assert "f005" not in ok(r).stdout.split() and "f006" in r.stdout.split()
        return
    stat, content = inside(pybuild, builds.store, TAG, path)
    assert (stat, content) == inside(pybuild, cold, TAG, path)
    name, kind, size, mode, owner, _mtime = stat.split("|")
    src = ctx / path[len("/app/"):]
    st = os.lstat(src)
    assert owner == ("1:2" if "chown" in case else "0:0")
    assert int(mode, 8) == st.st_mode & 0o7777 or kind == "symbolic link"
    if kind == "symbolic link":
        assert case == "symlink"
        assert content == (src.parent / os.readlink(src)).read_text()
    else:
        assert kind == "regular file" and int(size) == st.st_size
        assert content == src.read_text()


def test_five_edits_in_a_row_each_equal_a_cold_build(builds, pybuild, tmp_path):
    ctx = tmp_path / "ctx"
    make_context(ctx)
    ids = [builds.build(ctx)]
    for k in range(5):
        with open(ctx / f"d{k % 3}/f{k:03d}", "a") as f:
            f.write(f"edit {k}\n")
        if k == 2:
            os.chmod(ctx / "d0/f050", 0o600)
        if k == 3:
            (ctx / "d1/f051").unlink()
        prev_dirs = layer_states(builds.store, image(builds.store, ids[-1])["diff_ids"])
        new = builds.build(ctx)
        assert new not in ids
        assert is_delta(builds.store, image(builds.store, new)["diff_ids"][1])
        assert_same_as_cold(builds, ctx, new)
        assert layer_states(builds.store, image(builds.store, ids[-1])["diff_ids"]) == prev_dirs
        ids.append(new)
        shutil.rmtree(builds.tmp / f"cold-{builds.n}")


def test_removed_and_pruned_previous_image_leaves_the_new_one_whole(builds, pybuild, tmp_path):
    ctx = tmp_path / "ctx"
    make_context(ctx)
    prev = builds.build(ctx)
    _edit(ctx)
    new = builds.build(ctx)
    diff_ids = image(builds.store, new)["diff_ids"]
    assert is_delta(builds.store, diff_ids[1])  # over the COPY layer of `prev`, which prune keeps
    saved = saved_layers(pybuild, builds.store, TAG, tmp_path / "new.tar")
    dirs = layer_states(builds.store, diff_ids)

    ok(pybuild("rmi", prev))
    ok(pybuild("prune"))
    ok(pybuild("builder", "prune", "-a", "-f"))
    assert pybuild("inspect", prev).returncode != 0
    assert layer_states(builds.store, diff_ids) == dirs
    assert tar_of_dirs(builds.store, diff_ids) == diff_ids
    assert saved_layers(pybuild, builds.store, TAG, tmp_path / "new.tar") == saved
    r = ok(pybuild("run", "--rm", "--network", "none", TAG, "cat", "/app/d0/f000", "/app/d1/f001"))
    assert r.stdout == (ctx / "d0/f000").read_text() + (ctx / "d1/f001").read_text()
    assert_same_as_cold(builds, ctx, new)


# -- kill -9 during an edited COPY -------------------------------------------------------------
def _own_mounts(store: Path, pid: int) -> list:
    """The build's mounts under the store, seen in its own (private) mount namespace."""
    return mounts_under(store, f"/proc/{pid}/mountinfo")


def _copy_done(log: Path) -> bool:
    """Whether the progress says the COPY vertex finished (`#N DONE` of `#N [2/3] COPY . /app`)."""
    text = log.read_text()
    m = re.search(r"^#(\d+) \[[^]]*\] COPY \. /app$", text, re.M)
    return bool(m) and re.search(rf"^#{m.group(1)} DONE", text, re.M) is not None


def _kill_during_copy(store: Path, ctx: Path, log: Path, at_mount: bool) -> bool:
    """Start a build of ctx and kill -9 it in its COPY step: once a mount of its own shows under
    the store (the COPY's overlay) if `at_mount`, else as soon as the COPY's progress line shows;
    whether the COPY had not finished when it died."""
    with open(log, "w") as f:
        p = subprocess.Popen([sys.executable, "-m", "builder", "build", "--progress", "plain",
                              "-t", TAG, str(ctx)], cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=f, env={**os.environ, "PYBUILD_ROOT": str(store)})
    try:
        deadline = time.monotonic() + 120
        while not (_own_mounts(store, p.pid) if at_mount else "] COPY . /app" in log.read_text()):
            if p.poll() is not None or _copy_done(log):
                break               # finished its COPY without a mount: kill at the line next
            assert time.monotonic() < deadline, "the COPY never started"
            time.sleep(0.001)
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            assert p.wait(timeout=30) == -signal.SIGKILL
        return not _copy_done(log) and p.returncode == -signal.SIGKILL
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_kill_9_during_an_edited_copy(builds, pybuild, tmp_path):
    ctx = tmp_path / "ctx"
    make_context(ctx, dirs=20)      # 2,000 files: the COPY takes a while
    prev = builds.build(ctx)
    prev_img = image(builds.store, prev)
    prev_saved = saved_layers(pybuild, builds.store, prev, tmp_path / "prev.tar")
    prev_dirs = layer_states(builds.store, prev_img["diff_ids"])
    killed_in_copy = False
    for k in range(3):      # a COPY made fast (or without a mount) may finish first: try again
        with open(ctx / f"d{k}/f000", "a") as f:
            f.write(f"edit {k}\n")
        killed_in_copy = _kill_during_copy(builds.store, ctx, tmp_path / "build.log", k == 0)
        try:
            assert [m.mount_point for m in mounts_under(builds.store)] == []
        finally:
            for m in mounts_under(builds.store):
                subprocess.run(["umount", "-l", m.mount_point], check=False)
        if killed_in_copy:
            break
    assert killed_in_copy, "every kill -9 landed after the COPY step had finished"
    print(f"killed during the COPY at attempt {k + 1}")

    assert image(builds.store, TAG)["id"] == prev      # the tag still names the old image
    assert layer_states(builds.store, prev_img["diff_ids"]) == prev_dirs
    assert saved_layers(pybuild, builds.store, prev, tmp_path / "prev.tar") == prev_saved
    assert tar_of_dirs(builds.store, prev_img["diff_ids"]) == prev_img["diff_ids"]
    r = ok(pybuild("run", "--rm", "--network", "none", prev, "head", "-1", "/app/d0/f001"))
    assert r.stdout == "file 0/1\n"

    new = builds.build(ctx)
    assert new != prev
    _, prev_now = assert_same_as_cold(builds, ctx, new, prev=prev)
    assert layer_states(builds.store, prev_img["diff_ids"]) == prev_dirs
    assert prev_now == prev_saved
    ok(pybuild("prune"))
    assert mounts_under(builds.store) == []

