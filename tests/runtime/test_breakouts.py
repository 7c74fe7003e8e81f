"""Regression tests for known container breakouts (research/runtime-anchors.md §5) that apply
to a build sandbox: hostile images with symlinked mount points, leaked fds as a cwd, and the
runtime's own binary reachable through /proc."""
from __future__ import annotations

import os
import shutil
import stat

import pytest
from rootfs_helpers import make_busybox_rootfs, requires_root
from sbhelpers import sh, tree

from runtime.errors import SandboxError
from runtime.spec import Mount

pytestmark = requires_root


@pytest.mark.parametrize("name", ["proc", "dev", "sys"])
def test_symlinked_proc_dev_sys_are_refused(busybox_layer, tmp_path, name):
    """CVE-2019-19921 / CVE-2026-41579: /proc or /dev as a symlink would redirect the mount."""
    evil = tmp_path / "evil"
    evil.mkdir()
    os.symlink("/tmp", evil / name)
    with pytest.raises(SandboxError, match=f"refusing to mount on /{name}: it is a symlink in the image"):
        sh([evil, busybox_layer], "true")


def test_proc_as_a_file_is_refused(busybox_layer, tmp_path):
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "proc").write_text("")
    with pytest.raises(SandboxError, match="refusing to mount on /proc: it is not a directory"):
        sh([evil, busybox_layer], "true")


@pytest.mark.parametrize("link", ["relative", "absolute"])
def test_etc_hosts_symlink_out_of_root_stays_inside(busybox_layer, tmp_path, upper, link):
    """A symlinked /etc/hosts must resolve inside the container root, never onto a host file."""
    victim = tmp_path / "host-victim"
    victim.write_text("host secret\n")
    evil = tmp_path / "evil"
    (evil / "etc").mkdir(parents=True)
    target = ("../" * 20).rstrip("/") + str(victim) if link == "relative" else str(victim)
    os.symlink(target, evil / "etc/hosts")
    u, w = upper
    rc, out, err = sh([evil, busybox_layer], "cat /etc/hosts; cat " + str(victim), upperdir=u, workdir=w)
    assert rc == 0, err
    assert "host secret" not in out and out.startswith("127.0.0.1\tlocalhost buildkitsandbox\n")
    assert victim.read_text() == "host secret\n"
    # the placeholder made inside the root (at the link's target) is gone from the layer
    assert not any(p.endswith("host-victim") for p in tree(u)), tree(u)


def test_resolv_conf_dangling_symlink_into_host_dir(busybox_layer, tmp_path, upper):
    hostdir = tmp_path / "hostdir"
    hostdir.mkdir()
    evil = tmp_path / "evil"
    (evil / "etc").mkdir(parents=True)
    os.symlink(str(hostdir / "resolv.conf"), evil / "etc/resolv.conf")
    u, w = upper
    rc, _, err = sh([evil, busybox_layer], "grep -c nameserver /etc/resolv.conf", upperdir=u, workdir=w)
    assert rc == 0, err
    assert os.listdir(hostdir) == []


def test_symlinked_mount_target_cannot_create_on_the_host(busybox_layer, tmp_path, upper):
    """CVE-2024-45310 / CVE-2021-30465: mount points are created inside the root, never on the host."""
    hostdir = tmp_path / "hostdir"
    hostdir.mkdir()
    evil = tmp_path / "evil"
    evil.mkdir()
    os.symlink(str(hostdir), evil / "mnt")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("bound")
    u, w = upper
    rc, out, err = sh([evil, busybox_layer], "cat /mnt/a/f; ls /mnt/b", upperdir=u, workdir=w,
                      mounts=[Mount(target="/mnt/a", source=str(src)),
                              Mount(target="/mnt/b", type="tmpfs")])
    assert rc == 0, err
    assert out == "bound"
    assert os.listdir(hostdir) == []


def test_leaked_host_dir_fd_cannot_be_the_cwd(busybox_layer, tmp_path):
    """CVE-2024-21626 (Leaky Vessels): WORKDIR /proc/self/fd/N must not land in a host dir."""
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    os.set_inheritable(fd, True)
    try:
        for n in range(3, max(fd, 8) + 1):
            try:
                _, out, _ = sh([busybox_layer], "pwd; ls", cwd=f"/proc/self/fd/{n}")
            except SandboxError as e:
                assert "working directory" in str(e)
                continue
            assert tmp_path.name not in out
    finally:
        os.close(fd)


def test_image_dev_null_symlink_is_not_used(busybox_layer, tmp_path):
    """CVE-2025-31133: the image's /dev is hidden by a fresh tmpfs; /dev/null is the real device."""
    evil = tmp_path / "evil"
    (evil / "dev").mkdir(parents=True)
    os.symlink("/etc/passwd", evil / "dev/null")
    rc, out, _ = sh([evil, busybox_layer], "stat -c %F /dev/null; cat /proc/interrupts | wc -c")
    assert rc == 0 and out.split("\n")[:2] == ["character special file", "0"]


def test_host_python_is_not_writable_through_proc(busybox_layer):
    """CVE-2019-5736: with --init /proc/1/exe is the host interpreter; opening it for writing
    must fail."""
    _, out, _ = sh([busybox_layer], "echo x >> /proc/1/exe && echo WROTE; "
                                       "cat /proc/1/exe > /dev/null && echo READ; true", init=True)
    assert "WROTE" not in out and "READ" not in out


def test_injected_files_are_not_in_the_layer_even_after_writes_next_to_them(tmp_path, upper):
    layer = make_busybox_rootfs(tmp_path / "l")
    shutil.rmtree(layer / "etc")
    u, w = upper
    rc, _, err = sh([layer], "echo x > /etc/mine", upperdir=u, workdir=w)
    assert rc == 0, err
    assert tree(u) == ["etc", "etc/mine"]
    assert stat.S_IMODE(os.stat(u / "etc").st_mode) == 0o755
