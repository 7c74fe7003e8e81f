"""runtime.sandbox with the native snapshotter: the command sees the same rootfs and leaves the
same upper dir as with overlayfs, and nothing the sandbox mounts reaches that upper dir."""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest
from rootfs_helpers import requires_root
from sbhelpers import sh, tree
from snaphelpers import listing as _listing

from cache.layers import write_tar
from runtime.spec import Mount

pytestmark = requires_root


def _run_both(layers, script, tmp_path, monkeypatch, **kw) -> dict[str, Path]:
    uppers = {}
    outs = set()
    for kind in ("overlay", "native"):
        monkeypatch.setenv("PYBUILD_SNAPSHOTTER", kind)
        d = tmp_path / kind
        (d / "upper").mkdir(parents=True)
        (d / "work").mkdir()
        rc, out, err = sh(layers, script, upperdir=d / "upper", workdir=d / "work", **kw)
        assert rc == 0, err
        outs.add(out)
        uppers[kind] = d / "upper"
        assert sorted(os.listdir(d)) == ["upper", "work"]    # no tree, no run dir left behind
    assert len(outs) == 1, outs                               # the command saw the same things
    return uppers


def test_same_upper_and_no_mount_points_in_it(busybox_layer, tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    (src / "data").write_text("bound")
    secret = tmp_path / "secret"
    secret.write_text("s3cret")
    mounts = [Mount(target="/mnt/scratch", type="tmpfs"),
              Mount(target="/run/secrets/token", source=str(secret), readonly=True),
              Mount(target="/src", source=str(src))]
    script = ("cat /src/data /run/secrets/token; ls /proc/self/ns >/dev/null; echo x > /mnt/scratch/t;"
              " cat /etc/hostname; echo new > /new; rm /etc/group; mkdir -p /var/lib/x; "
              "chmod 700 /tmp; ls -la / | cut -c1-10,40- | sort")
    uppers = _run_both([busybox_layer], script, tmp_path, monkeypatch, mounts=mounts)
    nat, ov = (_listing(uppers[k]) for k in ("native", "overlay"))
    assert nat == ov
    assert write_tar(uppers["native"]).diff_id == write_tar(uppers["overlay"]).diff_id
    assert nat["etc/group"] == "whiteout" and nat["new"].startswith("file:")
    assert nat["var/lib/x"] == "dir" and nat["tmp"] == "dir"
    for mount_point in ("proc", "dev", "sys", "etc/hosts", "etc/resolv.conf", "etc/hostname",
                        "mnt", "run", "src"):
        assert mount_point not in nat


def test_mount_points_the_image_hides_are_created_and_removed_the_same_way(
        busybox_layer, tmp_path, monkeypatch):
    """A top layer whose opaque /etc and deleted /home hide the stub's mount points: the sandbox
    makes them in the rootfs and removes them after; /etc stays copied up, as with overlay."""
    top = tmp_path / "top"
    (top / "etc").mkdir(parents=True)
    os.setxattr(top / "etc", "trusted.overlay.opaque", b"y")
    (top / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    os.mknod(top / "home", stat.S_IFCHR, os.makedev(0, 0))
    cache = tmp_path / "cache"
    cache.mkdir()
    mounts = [Mount(target="/home/alice/.cache", source=str(cache))]
    uppers = _run_both([top, busybox_layer], "cat /etc/hosts >/dev/null; touch /home/alice/.cache/c",
                       tmp_path, monkeypatch, mounts=mounts)
    nat = _listing(uppers["native"])
    assert nat == _listing(uppers["overlay"]) == {"etc": "dir"}
    assert (cache / "c").exists()


def test_throw_away_run_leaves_nothing(busybox_layer, monkeypatch):
    monkeypatch.setenv("PYBUILD_SNAPSHOTTER", "native")
    before = set(os.listdir(tempfile.gettempdir()))
    rc, out, _ = sh([busybox_layer], "echo hi > /f; cat /f; exit 7")
    assert (rc, out) == (7, "hi\n")
    assert set(os.listdir(tempfile.gettempdir())) <= before


@pytest.mark.parametrize("kind", ["overlay", "native"])
def test_user_and_owners_in_the_rootfs(busybox_layer, tmp_path, monkeypatch, kind):
    monkeypatch.setenv("PYBUILD_SNAPSHOTTER", kind)
    (tmp_path / "u").mkdir()
    (tmp_path / "w").mkdir()
    rc, out, err = sh([busybox_layer], "id -u; stat -c '%U %a' /home/alice /tmp; touch ~/f",
                      user="alice", upperdir=tmp_path / "u", workdir=tmp_path / "w")
    assert rc == 0, err
    tmp_mode = stat.S_IMODE(os.stat(busybox_layer / "tmp").st_mode)
    assert out == f"1000\nalice 755\nroot {tmp_mode:o}\n"
    assert tree(tmp_path / "u") == ["home", "home/alice", "home/alice/f"]
    assert os.stat(tmp_path / "u/home/alice/f").st_uid == 1000
