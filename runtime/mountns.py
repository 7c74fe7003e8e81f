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
"""
from __future__ import annotations

import os

from runtime import kernel

_entered = False


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
