"""What the runtime tests share besides fixtures: a busybox rootfs from the host's busybox-static
and the skip marker for machines that cannot run the sandbox. A module of its own (not conftest)
so test files import it by a name no other test directory uses."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

BUSYBOX = shutil.which("busybox") or "/bin/busybox"

PASSWD = ("root:x:0:0:root:/root:/bin/sh\n"
          "nobody:x:65534:65534:nobody:/home:/bin/false\n"
          "alice:x:1000:1000::/home/alice:/bin/sh\n")
GROUP = ("root:x:0:\nwheel:x:10:root,alice\nstaff:x:50:alice\nalice:x:1000:\nnogroup:x:65534:\n")


def _overlay_supported() -> bool:
    try:
        with open("/proc/filesystems") as f:
            return "overlay" in f.read()
    except OSError:
        return False


requires_root = pytest.mark.skipif(
    os.geteuid() != 0 or not _overlay_supported() or not os.path.exists(BUSYBOX),
    reason="the sandbox tests need root, overlayfs and busybox-static (apt-get install busybox-static)")


def make_busybox_rootfs(root: Path) -> Path:
    """A minimal layer dir: /bin/busybox + applet links, /etc/passwd and /etc/group, /root, /tmp."""
    (root / "bin").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "root").mkdir(mode=0o700)
    (root / "tmp").mkdir(mode=0o1777)
    (root / "home/alice").mkdir(parents=True)
    os.chown(root / "home/alice", 1000, 1000)
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for a in applets:
        if a != "busybox":
            os.symlink("busybox", root / "bin" / a)
    (root / "etc/passwd").write_text(PASSWD)
    (root / "etc/group").write_text(GROUP)
    return root
