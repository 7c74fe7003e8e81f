"""overlayfs mounts of layer dirs: the merged view a RUN writes into and a COPY reads from.

Layer dirs at rest are already in overlay format (0/0 char-dev whiteouts, trusted.overlay.opaque),
so they stack as lowerdirs directly. The mount uses the new mount API (fsopen + one
`lowerdir+` per layer), which has no page-size limit on the option string; on kernels without it
(< 6.8) it falls back to mount(2) with `/proc/self/fd/N` names, short enough for ~200 layers.
Options are fixed for builds: redirect_dir, index and metacopy off, so the upper dir is a plain
tree of changes that `cache.layers` can tar without looking at the lowers.

Where overlayfs cannot be used, `runtime.snapshotter` picks the native snapshotter instead;
callers mount through `runtime.snapshotter.mounted`, never through this module's `mounted`.
"""
from __future__ import annotations

import errno
import os
from _collections_abc import Iterator, Sequence

from runtime import kernel, lazyctx
from runtime.errors import KernelCallError, SandboxError
from runtime.snapshot import drop_redundant_opaque

TYPE_CHECKING = False
if TYPE_CHECKING:       # annotations only: pathlib is imported where a Path is made
    from pathlib import Path

_BUILD_OPTS = (("redirect_dir", "off"), ("index", "off"), ("metacopy", "off"))


def distinct_layers(lowerdirs: Sequence[str | os.PathLike]) -> list:
    """Each layer dir once, at its topmost place. An image can hold the same layer twice (two
    steps that changed nothing both have the empty layer) and overlayfs refuses a lower dir
    given twice (ELOOP); the lower copy can add nothing the upper one does not already show."""
    seen: set[str] = set()
    out = []
    for d in lowerdirs:
        key = os.path.realpath(d)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def mount_overlay(target: str | os.PathLike, lowerdirs: Sequence[str | os.PathLike],
                  upperdir: str | os.PathLike | None = None,
                  workdir: str | os.PathLike | None = None, *, volatile: bool = False) -> None:
    """Mount an overlay of lowerdirs (top first) [+ upper/work] on target, read-only without upper.

    The kernel needs one lower dir with an upper dir, two without. `volatile`: its unmount
    does not sync the upper dir's whole filesystem (overlayfs's default, which writes out
    every dirty page of the disk the store is on); the caller makes what it keeps durable.
    """
    lowerdirs = distinct_layers(lowerdirs)
    if len(lowerdirs) < (1 if upperdir is not None else 2):
        raise SandboxError("overlay needs a lower dir and an upper dir, or two lower dirs")
    if (upperdir is None) != (workdir is None):
        raise SandboxError("overlay needs both an upper dir and a work dir, or neither")
    for d in lowerdirs:
        if not os.path.isdir(d):
            raise SandboxError(f"layer dir {os.fsdecode(d)} is missing (run `pybuild prune`?)")
    volatile = volatile and upperdir is not None
    try:
        _mount_new_api(target, lowerdirs, upperdir, workdir, volatile)
    except KernelCallError as e:
        if not (e.errno == errno.ENOSYS or (e.errno == errno.EINVAL and "lowerdir+" in e.what)):
            raise
        _mount_legacy(target, lowerdirs, upperdir, workdir, volatile)


def _mount_new_api(target, lowerdirs, upperdir, workdir, volatile=False) -> None:
    fd = kernel.fsopen("overlay")
    try:
        for d in lowerdirs:
            kernel.fsconfig(fd, kernel.FSCONFIG_SET_STRING, "lowerdir+", os.fspath(d))
        if upperdir is not None:
            kernel.fsconfig(fd, kernel.FSCONFIG_SET_STRING, "upperdir", os.fspath(upperdir))
            kernel.fsconfig(fd, kernel.FSCONFIG_SET_STRING, "workdir", os.fspath(workdir))
        for key, value in _BUILD_OPTS:
            kernel.fsconfig(fd, kernel.FSCONFIG_SET_STRING, key, value)
        if volatile:
            kernel.fsconfig(fd, kernel.FSCONFIG_SET_FLAG, "volatile")
        kernel.fsconfig(fd, kernel.FSCONFIG_CMD_CREATE)
        mfd = kernel.fsmount(fd, kernel.MOUNT_ATTR_RDONLY if upperdir is None else 0)
        try:
            kernel.move_mount(mfd, os.fspath(target))
        finally:
            os.close(mfd)
    finally:
        os.close(fd)


def _mount_legacy(target, lowerdirs, upperdir, workdir, volatile=False) -> None:
    fds = [os.open(d, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) for d in lowerdirs]
    try:
        opts = "lowerdir=" + ":".join(f"/proc/self/fd/{fd}" for fd in fds)
        if upperdir is not None:
            opts += f",upperdir={os.fspath(upperdir)},workdir={os.fspath(workdir)}"
        opts += "".join(f",{k}={v}" for k, v in _BUILD_OPTS)
        if volatile:
            opts += ",volatile"
        if len(opts) >= 4096:
            raise SandboxError(f"too many layers ({len(lowerdirs)}) for this kernel's overlay mount "
                               "options; a kernel >= 6.8 has no such limit")
        flags = kernel.MS_RDONLY if upperdir is None else 0
        kernel.mount("overlay", target, "overlay", flags, opts)
    finally:
        for fd in fds:
            os.close(fd)


@lazyctx.contextmanager
def mounted(lowerdirs: Sequence[Path], upperdir: Path | None = None,
            workdir: Path | None = None, *, base: str | os.PathLike | None = None,
            volatile: bool = False) -> Iterator[Path]:
    """The merged Path of the layer dirs (top first), an overlay unmounted on exit: see
    `runtime.snapshotter.mounted`, which picks this or the native snapshotter's copy. Its mount
    point (and work dir) go in `base`, default next to upperdir, else the system temp dir.
    `volatile`: `mount_overlay`'s."""
    import shutil
    from pathlib import Path

    # 0700 dirs of this process, as tempfile's mkdtemp, without importing tempfile and random
    # (~1% of a small build)
    from cache.owner import temp_dir
    made: list[str] = []
    try:
        if base is None and upperdir is not None:
            base = Path(upperdir).parent
        if base is None:
            import tempfile
            base = tempfile.gettempdir()
        base = os.fspath(base)
        if upperdir is not None and workdir is None:
            workdir = Path(temp_dir(base, ".work"))
            made.append(os.fspath(workdir))
        lowers = distinct_layers(lowerdirs)
        if not lowers or (len(lowers) == 1 and upperdir is None):  # the kernel wants two then
            empty = temp_dir(base, ".empty")
            made.append(empty)
            lowers.append(Path(empty))
        target = temp_dir(base, "pybuild-merged")
        made.append(target)
        mount_overlay(target, lowers, upperdir, workdir, volatile=volatile)
        try:
            yield Path(target)
        finally:
            kernel.umount2(target, kernel.MNT_DETACH)
        if upperdir is not None:
            drop_redundant_opaque(upperdir, lowers)
    finally:
        for d in reversed(made):
            shutil.rmtree(d, ignore_errors=True)
