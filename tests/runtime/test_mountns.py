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
