"""runtime.mountns on this machine: a process's private mount namespace and its tmpfs (where
run dirs keep their /etc files and rootfs mount point): none before enter_private, invisible
to the host, and nothing of it left once the process is gone, kill -9 included."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

from busybox_fixture import REPO
from rootfs_helpers import requires_root

from runtime import mountns

CHILD = r"""
import os, sys
from runtime import mountns
print(mountns.private_tmpfs())
mountns.enter_private()
d = mountns.private_tmpfs()
assert mountns.private_tmpfs() == d                 # mounted once
with open(os.path.join(d, sys.argv[1]), "w") as f:
    f.write("x")
print(d, flush=True)
sys.stdin.read()                                    # until killed
"""


@requires_root
def test_the_private_tmpfs_is_the_namespace_s_and_goes_with_a_killed_process(tmp_path):
    name = f"probe-{os.getpid()}"
    p = subprocess.Popen([sys.executable, "-c", CHILD, name], cwd=REPO, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "None\n"              # no private namespace yet: no tmpfs
        point = p.stdout.readline().strip()
        assert point == mountns.TMPFS_POINT
        assert not os.path.exists(os.path.join(point, name))    # the host sees an empty dir
        with open(f"/proc/{p.pid}/mountinfo") as f:
            assert any(line.split()[4] == point and " - tmpfs " in line for line in f)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    with open("/proc/self/mountinfo") as f:
        assert not any(line.split()[4] == point for line in f)
    assert not os.path.exists(os.path.join(point, name))


@requires_root
def test_the_mount_point_is_made_the_first_time(tmp_path):
    """On a host that never had it, the mount point is made (on the host: an empty dir), then
    the tmpfs mounted on it in the private namespace only."""
    point = tmp_path / "private"
    code = ("from runtime import mountns\n"
            f"mountns.TMPFS_POINT = {str(point)!r}\n"
            "mountns.enter_private()\n"
            "d = mountns.private_tmpfs()\n"
            "open(d + '/f', 'w').close()\n"
            "print(d)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{point}\n"
    assert point.is_dir() and os.listdir(point) == []
