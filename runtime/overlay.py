"""overlayfs mounts of layer dirs: the merged view a RUN writes into and a COPY reads from.

Layer dirs at rest are already in overlay format (0/0 char-dev whiteouts, trusted.overlay.opaque),
so they stack as lowerdirs directly. The mount uses the new mount API (fsopen + one
`lowerdir+` per layer), which has no page-size limit on the option string; on kernels without it
(< 6.8) it falls back to mount(2) with `/proc/self/fd/N` names, short enough for ~200 layers.
Options are fixed for builds: redirect_dir, index and metacopy off, so the upper dir is a plain
tree of changes that `cache.layers` can tar without looking at the lowers.

Where overlayfs cannot be used (not in the kernel, or the store's filesystem cannot hold an upper
dir, e.g. overlay on overlay), `snapshotter` picks the native one (`runtime.snapshot`) once per
process and filesystem, saying so once on stderr; `PYBUILD_SNAPSHOTTER=overlay|native` forces
either. `mounted` and `runtime.sandbox` both follow that choice, so callers never see it.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from runtime import kernel
from runtime.errors import KernelCallError, SandboxError

_BUILD_OPTS = (("redirect_dir", "off"), ("index", "off"), ("metacopy", "off"))
SNAPSHOTTER_ENV = "PYBUILD_SNAPSHOTTER"
# errnos of an overlay mount that mean "not here" rather than "something broke"
_UNUSABLE = {errno.ENODEV, errno.EINVAL, errno.EPERM, errno.EACCES, errno.EOPNOTSUPP,
             errno.ENOSYS, errno.EXDEV, errno.ENOTDIR}
_choice: dict[int, str] = {}     # st_dev of where upper dirs go -> "overlay" | "native"
_noticed = False
_choice_lock = threading.Lock()


def snapshotter(base: str | os.PathLike | None = None) -> str:
    """"overlay" or "native" for upper dirs made under `base` (default: the temp dir).

    PYBUILD_SNAPSHOTTER=overlay|native decides; otherwise (auto) a probe mounts a tiny overlay
    with its upper dir in `base` once per process and filesystem. A refusal that means overlay
    is unusable there (ENODEV, EINVAL, EPERM, ...) selects the native snapshotter and prints
    one notice line on stderr, once per process.
    """
    global _noticed
    mode = os.environ.get(SNAPSHOTTER_ENV, "") or "auto"
    if mode in ("overlay", "native"):
        return mode
    if mode != "auto":
        raise SandboxError(f"{SNAPSHOTTER_ENV}={mode!r} is not a snapshotter: use overlay, native "
                           "or auto (the default: overlay where it works)")
    base = os.fspath(base) if base is not None else tempfile.gettempdir()
    dev = os.stat(base).st_dev
    with _choice_lock:
        got = _choice.get(dev)
        if got is None:
            problem = overlay_problem(base)
            got = _choice[dev] = "native" if problem else "overlay"
            if problem and not _noticed:
                _noticed = True
                print(f"pybuild: notice: {problem}; using the native snapshotter (slower: each step "
                      f"copies its rootfs). {SNAPSHOTTER_ENV}=native skips this check.",
                      file=sys.stderr, flush=True)
    return got


def overlay_problem(base: str) -> str | None:
    """Why an overlay with its upper dir under `base` cannot be mounted, or None if it can."""
    try:
        with open("/proc/filesystems") as f:
            listed = any(line.split()[-1:] == ["overlay"] for line in f)
    except OSError:
        listed = True
    probe = tempfile.mkdtemp(prefix=".overlay-probe-", dir=base)
    try:
        dirs = [os.path.join(probe, n) for n in ("lower", "upper", "work", "merged")]
        for d in dirs:
            os.mkdir(d)
        try:
            mount_overlay(dirs[3], [dirs[0]], dirs[1], dirs[2])
        except KernelCallError as e:
            if e.errno not in _UNUSABLE:
                raise
            if e.errno == errno.ENODEV and not listed:
                return "overlayfs is not available (not in /proc/filesystems)"
            where, fstype = filesystem_of(base)
            return (f"overlayfs refuses upper dirs on {where} ({fstype}): "
                    f"{os.strerror(e.errno)}")
        kernel.umount2(dirs[3], kernel.MNT_DETACH)
        return None
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def filesystem_of(path: str | os.PathLike) -> tuple[str, str]:
    """(mount point, filesystem type) holding path, from /proc/self/mountinfo."""
    real = os.fsdecode(os.path.realpath(path))
    best = ("/", "unknown")
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                mnt = left.split()[4].replace("\\040", " ")
                if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[0]):
                    best = (mnt, right.split()[0])
    except (OSError, IndexError):
        pass
    return best


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
                  workdir: str | os.PathLike | None = None) -> None:
    """Mount an overlay of lowerdirs (top first) [+ upper/work] on target, read-only without upper.

    The kernel needs one lower dir with an upper dir, two without.
    """
    lowerdirs = distinct_layers(lowerdirs)
    if len(lowerdirs) < (1 if upperdir is not None else 2):
        raise SandboxError("overlay needs a lower dir and an upper dir, or two lower dirs")
    if (upperdir is None) != (workdir is None):
        raise SandboxError("overlay needs both an upper dir and a work dir, or neither")
    for d in lowerdirs:
        if not os.path.isdir(d):
            raise SandboxError(f"layer dir {os.fsdecode(d)} is missing (run `pybuild prune`?)")
    try:
        _mount_new_api(target, lowerdirs, upperdir, workdir)
    except KernelCallError as e:
        if not (e.errno == errno.ENOSYS or e.errno == errno.EINVAL and "lowerdir+" in e.what):
            raise
        _mount_legacy(target, lowerdirs, upperdir, workdir)


def _mount_new_api(target, lowerdirs, upperdir, workdir) -> None:
    fd = kernel.fsopen("overlay")
    try:
        for d in lowerdirs:
            kernel.fsconfig(fd, kernel.FSCONFIG_SET_STRING, "lowerdir+", os.fspath(d))
        if upperdir is not None:
            kernel.fsconfig(fd, kernel.FSCONFIG_SET_STRING, "upperdir", os.fspath(upperdir))
            kernel.fsconfig(fd, kernel.FSCONFIG_SET_STRING, "workdir", os.fspath(workdir))
        for key, value in _BUILD_OPTS:
            kernel.fsconfig(fd, kernel.FSCONFIG_SET_STRING, key, value)
        kernel.fsconfig(fd, kernel.FSCONFIG_CMD_CREATE)
        mfd = kernel.fsmount(fd, kernel.MOUNT_ATTR_RDONLY if upperdir is None else 0)
        try:
            kernel.move_mount(mfd, os.fspath(target))
        finally:
            os.close(mfd)
    finally:
        os.close(fd)


def _mount_legacy(target, lowerdirs, upperdir, workdir) -> None:
    fds = [os.open(d, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) for d in lowerdirs]
    try:
        opts = "lowerdir=" + ":".join(f"/proc/self/fd/{fd}" for fd in fds)
        if upperdir is not None:
            opts += f",upperdir={os.fspath(upperdir)},workdir={os.fspath(workdir)}"
        opts += "".join(f",{k}={v}" for k, v in _BUILD_OPTS)
        if len(opts) >= 4096:
            raise SandboxError(f"too many layers ({len(lowerdirs)}) for this kernel's overlay mount "
                               "options; a kernel >= 6.8 has no such limit")
        flags = kernel.MS_RDONLY if upperdir is None else 0
        kernel.mount("overlay", target, "overlay", flags, opts)
    finally:
        for fd in fds:
            os.close(fd)


def mounted(lowerdirs: Sequence[Path], upperdir: Path | None = None,
            workdir: Path | None = None) -> contextlib.AbstractContextManager[Path]:
    """A context manager yielding the merged Path of the layer dirs (top first).

    With overlayfs: an overlay in the host mount namespace, unmounted on exit. Without upperdir
    the view is read-only. With an upperdir but no workdir, a work dir is made next to it (it
    must be on the same filesystem) and removed afterwards. With no lowerdirs an empty lower dir
    stands in, so the upper dir alone is what is seen. With the native snapshotter: a copy whose
    changes are written to upperdir on a clean exit (`runtime.snapshot.mounted`). Either way the
    upper dir ends in the same form (redundant opaque markers dropped).
    """
    from runtime.privileges import require_root

    require_root()
    base = Path(upperdir).parent if upperdir is not None else None
    if snapshotter(base) == "native":
        from runtime import snapshot
        return snapshot.mounted(lowerdirs, upperdir)
    return _overlay_mounted(lowerdirs, upperdir, workdir)


@contextlib.contextmanager
def _overlay_mounted(lowerdirs, upperdir, workdir) -> Iterator[Path]:
    made: list[str] = []
    try:
        base = os.fspath(Path(upperdir).parent) if upperdir is not None else None
        if upperdir is not None and workdir is None:
            workdir = Path(tempfile.mkdtemp(prefix=".work-", dir=base))
            made.append(os.fspath(workdir))
        lowers = distinct_layers(lowerdirs)
        if not lowers or (len(lowers) == 1 and upperdir is None):  # the kernel wants two then
            empty = tempfile.mkdtemp(prefix=".empty-", dir=base)
            made.append(empty)
            lowers.append(Path(empty))
        target = tempfile.mkdtemp(prefix="pybuild-merged-", dir=base)
        made.append(target)
        mount_overlay(target, lowers, upperdir, workdir)
        try:
            yield Path(target)
        finally:
            kernel.umount2(target, kernel.MNT_DETACH)
        if upperdir is not None:
            from runtime.snapshot import drop_redundant_opaque
            drop_redundant_opaque(upperdir, lowers)
    finally:
        for d in reversed(made):
            shutil.rmtree(d, ignore_errors=True)
