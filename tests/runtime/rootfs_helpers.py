"""What the runtime tests share besides fixtures: a bare busybox layer dir and the skip marker for
machines that cannot run the sandbox. A module of its own (not conftest) so test files import it
by a name no other test directory uses.

The layer is laid out by fixtures/busybox.py's make_rootfs (the one busybox rootfs builder); it
differs from the busybox:latest image in two ways the runtime tests need: it is a plain layer dir
(runtime is tested without a store), and its passwd/group add a user `alice` with supplementary
groups (wheel, staff) for the user/group resolution tests."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from busybox_fixture import busybox_module

BUSYBOX = busybox_module().BUSYBOX

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
    """A minimal layer dir: fixtures/busybox.py's rootfs with the users above and /home/alice."""
    root.mkdir(parents=True)
    busybox_module().make_rootfs(root)
    (root / "etc/passwd").write_text(PASSWD)
    (root / "etc/group").write_text(GROUP)
    os.rename(root / "home/app", root / "home/alice")
    return root
