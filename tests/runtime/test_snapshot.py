"""The native snapshotter against the real thing: every scenario runs once through a real
overlayfs mount and once through runtime.snapshot, and both upper dirs must make the same layer
(same diff_id from cache.layers.write_tar), with the entries a user of that layer would expect."""
from __future__ import annotations

import os
import shutil
import stat
import struct
import subprocess
import time
from pathlib import Path

import pytest
from rootfs_helpers import requires_root
from snaphelpers import listing as _listing

from cache.layers import write_tar
from runtime import overlay, snapshot, snapshotter
from runtime.errors import SandboxError

pytestmark = requires_root

CAP_NET_RAW = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)   # vfs_cap_data v2, effective


def _write(p: Path, text: str, mode: int = 0o644, mtime: int = 1_000_000) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    p.chmod(mode)
    os.utime(p, (mtime, mtime))
    return p


def _whiteout(p: Path) -> None:
    os.mknod(p, stat.S_IFCHR, os.makedev(0, 0))


@pytest.fixture
def lowers(tmp_path) -> list[Path]:
    """Two layer dirs in overlay format, top first: the bottom one has a bit of everything, the
    top one deletes, replaces and overrides some of it."""
    low = tmp_path / "layers/low"
    _write(low / "d/f", "lower f")
    _write(low / "d/sub/g", "lower g")
    _write(low / "keep", "12345678")
    _write(low / "file", "a file")
    _write(low / "ren/f", "in ren")
    _write(low / "gone", "deleted by the top layer")
    _write(low / "opq/old", "hidden by an opaque dir")
    _write(low / "h1", "hard linked")
    os.link(low / "h1", low / "h2")
    _write(low / "tool", "#!/bin/sh\n", 0o755)
    os.setxattr(low / "tool", "security.capability", CAP_NET_RAW)
    os.setxattr(low / "file", "user.note", b"lower")
    os.symlink("file", low / "link")
    os.mkfifo(low / "fifo", 0o640)
    os.mknod(low / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    (low / "home/alice").mkdir(parents=True)
    os.chown(low / "home/alice", 1000, 1000)
    (low / "tmp").mkdir(mode=0o1777)
    (low / "opt").mkdir()
    (low / "empty").mkdir()
    top = tmp_path / "layers/top"
    top.mkdir()
    _whiteout(top / "gone")
    (top / "opq").mkdir()
    os.setxattr(top / "opq", "trusted.overlay.opaque", b"y")
    _write(top / "opq/new", "only this")
    _write(top / "keep", "87654321", 0o600)
    return [top, low]


def _through(kind: str, lowers, op, tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("PYBUILD_SNAPSHOTTER", kind)
    upper = tmp_path / kind / "upper"
    upper.mkdir(parents=True)
    with snapshotter.mounted(lowers, upper) as root:
        op(Path(root))
    return upper


def _sh(script: str):
    return lambda root: subprocess.run(["sh", "-ec", script], cwd=root, check=True)


def _same_size_same_mtime(root: Path) -> None:
    p = root / "keep"
    st = p.stat()
    p.write_text("abcdefgh")           # as many bytes as before
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))


def _recreate_dir(root: Path) -> None:
    shutil.rmtree(root / "d")
    (root / "d").mkdir()
    (root / "d/n").write_text("new")


def _rename_fresh_dir_into_place(root: Path) -> None:
    (root / "tmp/build").mkdir()
    (root / "tmp/build/bin").write_text("x")
    os.rename(root / "tmp/build", root / "opt/app")


def _set_xattrs(root: Path) -> None:
    os.setxattr(root / "file", "user.note", b"changed")
    os.setxattr(root / "keep", "security.capability", CAP_NET_RAW)


def _special_files(root: Path) -> None:
    os.mkfifo(root / "newfifo", 0o600)
    os.mknod(root / "zero", stat.S_IFCHR | 0o600, os.makedev(1, 5))
    (root / "newempty").mkdir()


def _hard_links(root: Path) -> None:
    (root / "a").write_text("shared")
    os.link(root / "a", root / "b")
    os.link(root / "tool", root / "tool2")


WH, DIR, OPQ = "whiteout", "dir", "opaque"

# name -> (operation on the merged root, entries the layer must hold (None: must not hold))
SCENARIOS = {
    "create": (_sh("echo new > new; mkdir -p x/y/z; echo deep > x/y/z/f"),
               {"new": "file:", "x/y/z/f": "file:", "x": DIR}),
    "modify lower file": (_sh("echo more >> d/f"), {"d": DIR, "d/f": "file:", "d/sub": None}),
    "same size and mtime": (_same_size_same_mtime, {"keep": "file:"}),
    "delete lower file": (_sh("rm d/f"), {"d": DIR, "d/f": WH}),
    "delete file of a lower layer": (_sh("rm file"), {"file": WH}),
    "delete lower dir": (_sh("rm -r d"), {"d": WH, "d/f": None}),
    "delete and recreate dir": (_recreate_dir, {"d": OPQ, "d/n": "file:", "d/f": None}),
    "file replaced by dir": (_sh("rm file; mkdir file"), {"file": DIR}),
    "dir replaced by file": (_sh("rm -r d; echo f > d"), {"d": "file:"}),
    "mkdir where a lower layer deleted": (_sh("mkdir gone"), {"gone": DIR}),
    "chmod only": (_sh("chmod 700 d; chmod 640 file"), {"d": DIR, "file": "file:", "d/f": None}),
    "chown only": (_sh("chown 1000:1000 file d/sub"), {"file": "file:", "d/sub": DIR}),
    "same chmod": (_sh("chmod 755 d"), {"d": DIR}),
    "setuid": (_sh("chmod u+s tool"), {"tool": "file:"}),
    "xattrs": (_set_xattrs, {"file": "file:", "keep": "file:"}),
    "symlinks": (_sh("ln -s /etc/x newlink; rm link; ln -s keep link"),
                 {"newlink": "link:/etc/x", "link": "link:keep"}),
    "hard links": (_hard_links, {"a": "file:", "b": "file:", "tool": "file:", "tool2": "file:"}),
    "delete one name of a lower hard link": (_sh("rm h2"), {"h2": WH, "h1": None}),
    "rename lower file": (_sh("mv file file2"), {"file": WH, "file2": "file:"}),
    "rename lower dir": (_sh("mv ren ren2"), {"ren": WH, "ren2": DIR, "ren2/f": "file:"}),
    "rename a fresh dir into place": (_rename_fresh_dir_into_place,
                                      {"opt/app": DIR, "opt/app/bin": "file:"}),
    "fifo, device, empty dir": (_special_files, {"newfifo": "p", "zero": "c", "newempty": DIR}),
    "create then delete": (_sh("echo t > tmp/t; rm tmp/t"), {"tmp": DIR, "tmp/t": None}),
    "touch atime only": (_sh("touch -a -d @5 keep"), {"keep": "file:"}),
    "nothing": (_sh("cat d/f > /dev/null; ls -R > /dev/null"), {"d": None, "keep": None}),
    "opaque lower dir": (_sh("echo 2 > opq/second"), {"opq": DIR, "opq/second": "file:",
                                                       "opq/old": None}),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_native_upper_makes_the_same_layer_as_overlay(name, lowers, tmp_path, monkeypatch):
    op, expect = SCENARIOS[name]
    ov = _through("overlay", lowers, op, tmp_path, monkeypatch)
    nat = _through("native", lowers, op, tmp_path, monkeypatch)
    got = _listing(nat)
    for rel, kind in expect.items():
        if kind is None:
            assert rel not in got, f"{rel} should not be in the layer"
        else:
            assert got.get(rel, "").startswith(kind), f"{rel}: {got.get(rel)} is not {kind}"
    assert got == _listing(ov)
    assert write_tar(nat).diff_id == write_tar(ov).diff_id


def test_hard_links_and_metadata_survive_into_the_layer(lowers, tmp_path, monkeypatch):
    nat = _through("native", lowers, _hard_links, tmp_path, monkeypatch)
    assert os.stat(nat / "a").st_ino == os.stat(nat / "b").st_ino
    assert os.stat(nat / "tool").st_ino == os.stat(nat / "tool2").st_ino
    assert os.getxattr(nat / "tool", "security.capability") == CAP_NET_RAW
    assert stat.S_IMODE(os.stat(nat / "tool").st_mode) == 0o755


def test_writing_one_name_of_a_lower_hard_link_changes_both(lowers, tmp_path, monkeypatch):
    """The one semantic difference kept on purpose: the native tree is a real filesystem, where a
    hard link is one inode; overlay's copy-up (index=off) would break the link instead."""
    nat = _through("native", lowers, _sh("echo more >> h1"), tmp_path, monkeypatch)
    assert (nat / "h1").read_text() == (nat / "h2").read_text() == "hard linked" + "more\n"


def test_a_recreated_dir_is_opaque_even_when_it_reuses_its_inode(lowers, tmp_path, monkeypatch):
    """ext4 usually hands a removed dir's inode number to the next mkdir, so the inode alone
    cannot tell a recreated dir; whichever number it gets, the layer must mark it opaque."""
    def op(root):
        os.rmdir(root / "empty")
        os.mkdir(root / "empty")

    nat = _through("native", lowers, op, tmp_path, monkeypatch)
    assert _listing(nat) == {"empty": OPQ}


def test_materialised_tree_shows_what_a_read_only_overlay_shows(lowers, tmp_path):
    def describe(root: Path) -> tuple[dict, list]:
        out, inodes = {}, {}
        for dirpath, dirs, files in os.walk(root):
            for n in dirs + files:
                p = Path(dirpath) / n
                rel = str(p.relative_to(root))
                st = os.lstat(p)
                xattrs = {k: os.getxattr(p, k, follow_symlinks=False)
                          for k in os.listxattr(p, follow_symlinks=False)
                          if not k.startswith("trusted.overlay.")}
                data = p.read_bytes() if stat.S_ISREG(st.st_mode) else b""
                link = os.readlink(p) if stat.S_ISLNK(st.st_mode) else ""
                mtime = st.st_mtime_ns if not stat.S_ISLNK(st.st_mode) else 0
                out[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, mtime, data, link,
                            st.st_rdev, xattrs)
                if not stat.S_ISDIR(st.st_mode):
                    inodes.setdefault(st.st_ino, []).append(rel)
        return out, sorted(sorted(v) for v in inodes.values() if len(v) > 1)

    tree = tmp_path / "tree"
    tree.mkdir()
    snapshot.materialise(lowers, tree)
    with overlay.mounted(lowers) as merged:
        want = describe(Path(merged))
    assert describe(tree) == want
    assert want[1] == [["h1", "h2"]]


def test_sockets_are_skipped(tmp_path):
    import socket

    layer = tmp_path / "layer"
    layer.mkdir()
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(layer / "sock"))
        tree = tmp_path / "tree"
        tree.mkdir()
        snapshot.materialise([layer], tree)
    assert os.listdir(tree) == []


def test_settle_waits_past_every_recorded_ctime(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t/f").write_text("x")
    snap = snapshot.Snapshot.take(tmp_path / "t")
    snapshot.settle(snap, tmp_path)
    os.chmod(tmp_path / "t/f", 0o644)
    assert os.stat(tmp_path / "t/f").st_ctime_ns > snap.max_ctime


def test_overlay_upper_drops_only_opaque_markers_that_hide_nothing(lowers, tmp_path, monkeypatch):
    def op(root):
        _rename_fresh_dir_into_place(root)
        _recreate_dir(root)

    ov = _through("overlay", lowers, op, tmp_path, monkeypatch)
    assert _listing(ov)["opt/app"] == DIR      # overlay had marked it: nothing below to hide
    assert _listing(ov)["d"] == OPQ            # this one hides the lower d/f and d/sub


def test_snapshotter_env_is_checked(monkeypatch):
    monkeypatch.setenv("PYBUILD_SNAPSHOTTER", "zfs")
    with pytest.raises(SandboxError, match="PYBUILD_SNAPSHOTTER='zfs' is not a snapshotter: use "
                                           "overlay, native or auto"):
        snapshotter.snapshotter()


@pytest.fixture
def overlay_backed_dir(tmp_path):
    """A directory on an overlayfs mount: overlayfs refuses it as an upper dir (EINVAL), as in a
    container whose store is on the container's own root filesystem."""
    for d in ("l", "u", "w", "m"):
        (tmp_path / "ovl" / d).mkdir(parents=True)
    m = tmp_path / "ovl/m"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={tmp_path}/ovl/l,upperdir={tmp_path}/ovl/u,workdir={tmp_path}/ovl/w",
                    str(m)], check=True)
    try:
        yield m
    finally:
        subprocess.run(["umount", "-l", str(m)], check=False)


def test_auto_picks_native_where_overlay_refuses_and_says_so_once(overlay_backed_dir, tmp_path,
                                                                  monkeypatch, capsys):
    monkeypatch.delenv("PYBUILD_SNAPSHOTTER", raising=False)
    monkeypatch.setattr(snapshotter, "_choice", {})
    monkeypatch.setattr(snapshotter, "_noticed", False)
    assert snapshotter.snapshotter(tmp_path) == "overlay"
    assert snapshotter.snapshotter(overlay_backed_dir) == "native"
    assert snapshotter.snapshotter(overlay_backed_dir) == "native"
    err = capsys.readouterr().err
    assert err.count("pybuild: notice:") == 1
    assert f"overlayfs refuses upper dirs on {overlay_backed_dir} (overlay)" in err
    assert "native snapshotter" in err
    assert os.listdir(overlay_backed_dir) == []      # the probe cleaned up


def test_native_on_overlayfs_cannot_record_a_deletion_and_says_what_to_do(
        overlay_backed_dir, lowers, monkeypatch):
    monkeypatch.setenv("PYBUILD_SNAPSHOTTER", "native")
    upper = overlay_backed_dir / "upper"
    upper.mkdir()
    with pytest.raises(SandboxError, match=r"refuses overlay whiteouts .* put PYBUILD_ROOT on "
                                           r"ext4, xfs, btrfs or tmpfs"), \
            snapshotter.mounted(lowers, upper) as root:
        os.unlink(root / "file")


def test_native_read_only_view_is_read_only(lowers, monkeypatch):
    import errno

    monkeypatch.setenv("PYBUILD_SNAPSHOTTER", "native")
    with snapshotter.mounted(lowers) as root:
        assert (root / "opq/new").read_text() == "only this"
        with pytest.raises(OSError) as e:
            (root / "x").write_text("x")
        assert e.value.errno == errno.EROFS
        where = root
    assert not where.exists()


def test_native_costs_a_copy_per_step_but_no_more(lowers, tmp_path, monkeypatch):
    """A coarse guard that the snapshot is not quadratic: a 2,000-file lower copies, snapshots
    and diffs in well under the time a RUN may take (a few hundred ms on any machine)."""
    big = tmp_path / "layers/big"
    for i in range(2000):
        _write(big / f"d{i % 20}/f{i}", "x" * 100)
    t = time.monotonic()
    nat = _through("native", [big], _sh("echo 1 > d3/f3"), tmp_path, monkeypatch)
    assert time.monotonic() - t < 5
    assert _listing(nat) == {"d3": DIR, "d3/f3": _listing(nat)["d3/f3"]}
