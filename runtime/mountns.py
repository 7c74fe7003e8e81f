"""A mount namespace of this process's own, so the mounts it makes die with it.

A build mounts overlays outside any sandbox (COPY and WORKDIR write through one, RUN
--mount=from reads through one). Made in the host's mount namespace they would outlive a
`kill -9` of the build, holding its scratch dir. `enter_private` moves the calling process into
a new mount namespace once, at start, before any thread exists: only the calling thread changes
namespace, and threads and children made afterwards inherit it, so the solver's threads and
every sandbox (forked from here) see the build's mounts, and nothing else needs to. When the
last process in it exits, the kernel drops the namespace and every mount in it.

Propagation is made slave, recursively: mounts and unmounts on the host still reach us (a disk
the host unmounts is not kept busy here), and none of ours reaches the host.

The namespace also gets a small tmpfs of its own (`private_tmpfs`) for a sandbox's run-dir
files that need no disk: the generated /etc files and the rootfs's mount point. On the store's
ext4 each of their creations and removals is a journalled metadata write (1-4 ms apiece
under load, measured); there they cost none, and they go with the namespace, kill -9 included.
"""
from __future__ import annotations

import _thread
import errno
import os

from runtime import kernel
from runtime.errors import SandboxError

TMPFS_POINT = "/run/pybuild/private"    # a tmpfs here in each private namespace, none on the host
_entered = False
_tmpfs: str | None = None
_tmpfs_lock = _thread.allocate_lock()    # threading.Lock, without importing threading


def enter_private() -> None:
    """Enter a new mount namespace (slave of the current one); once per process, before threads."""
    global _entered
    if _entered:
        return
    if len(os.listdir("/proc/self/task")) > 1:
        raise RuntimeError("enter_private must run before any thread starts (it moves only the "
                           "calling thread)")
    kernel.unshare(kernel.CLONE_NEWNS)
    kernel.mount(None, "/", None, kernel.MS_REC | kernel.MS_SLAVE)
    _entered = True


def private_tmpfs() -> str | None:
    """The tmpfs of this process's private mount namespace (mounted on first use, on
    TMPFS_POINT, which only this namespace sees); None before enter_private, in the host's, or
    where it cannot be made."""
    global _tmpfs
    if not _entered:
        return None
    with _tmpfs_lock:
        if _tmpfs is None:
            try:
                try:
                    _mount_tmpfs()
                except SandboxError as e:   # the first time on this host: no mount point yet
                    if getattr(e, "errno", None) != errno.ENOENT:
                        raise
                    os.makedirs(TMPFS_POINT, mode=0o700, exist_ok=True)
                    _mount_tmpfs()
            except (OSError, SandboxError):
                _tmpfs = ""         # a read-only /run, no tmpfs: the run dir stays on disk
            else:
                _tmpfs = TMPFS_POINT
    return _tmpfs or None


def _mount_tmpfs() -> None:
    kernel.mount("tmpfs", TMPFS_POINT, "tmpfs", kernel.MS_NOSUID | kernel.MS_NODEV,
                 "mode=0755,size=16m")
