"""What is mounted where, read from /proc/self/mountinfo (the one reader of that file).

Used to name the filesystem behind a path in error messages, and by `pybuild prune` to find
mounts that a killed build (or a pybuild older than its private mount namespace, `runtime.mountns`)
left under the store's tmp/, so they are unmounted before the scratch dirs holding them are
removed: an rmtree that walks into a live overlay would write whiteouts through it, and a
mount point cannot be removed at all.
"""
from __future__ import annotations

import errno
import os
from _collections_abc import Callable

from runtime import kernel
from runtime.errors import KernelCallError
from runtime.spec import Record

_OCTAL = "01234567"


class MountEntry(Record):
    """One line of mountinfo; hashable (never changed once read)."""
    _fields = ("mount_id", "mount_point", "fstype", "source")

    def __init__(self, mount_id: int, mount_point: str, fstype: str, source: str):
        self.mount_id = mount_id
        self.mount_point = mount_point      # as this process sees it (its root and mount namespace)
        self.fstype = fstype
        self.source = source

    def __hash__(self) -> int:
        return hash((self.mount_id, self.mount_point, self.fstype, self.source))


def unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes (\\040 ...):
    each backslash followed by three octal digits is that character (the one decoder of them)."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while True:
        j = field.find("\\", i)
        if j < 0:
            out.append(field[i:])
            return "".join(out)
        code = field[j + 1:j + 4]
        if len(code) == 3 and all(c in _OCTAL for c in code):
            out += (field[i:j], chr(int(code, 8)))
            i = j + 4
        else:
            out.append(field[i:j + 1])
            i = j + 1


def mounts(path: str = "/proc/self/mountinfo") -> list[MountEntry]:
    """Every mount of this process's mount namespace, in mount order (parents before children)."""
    out = []
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError:
        return out
    for line in lines:
        left, sep, right = line.partition(" - ")
        a, b = left.split(), right.split()
        if not sep or len(a) < 5 or len(b) < 2:
            continue
        out.append(MountEntry(int(a[0]), unescape(a[4]), b[0], unescape(b[1])))
    return out


def filesystem_of(path: str | os.PathLike) -> tuple[str, str]:
    """(mount point, filesystem type) holding path."""
    real = os.fsdecode(os.path.realpath(path))
    best = ("/", "unknown")
    for m in mounts():
        mnt = m.mount_point
        if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[0]):
            best = (mnt, m.fstype)
    return best


def mounts_under(directory: str | os.PathLike, mountinfo: str = "/proc/self/mountinfo") -> list[MountEntry]:
    """The mounts strictly below directory (not directory itself), deepest first, in the mount
    namespace `mountinfo` describes (another process's: `/proc/<pid>/mountinfo`)."""
    top = os.fsdecode(os.path.realpath(directory)).rstrip("/") + "/"
    found = [m for m in mounts(mountinfo) if m.mount_point.startswith(top)]
    return sorted(found, key=lambda m: (m.mount_point.count("/"), m.mount_id), reverse=True)


def unmount_under(directory: str | os.PathLike,
                  keep: Callable[[str], bool] = lambda _path: False) -> list[str]:
    """Detach every mount strictly below directory for which keep(mount point) is false,
    deepest (and, on one mount point, latest) first; return the mount points detached.
    The store root itself and anything mounted above it are never touched."""
    done = []
    for m in mounts_under(directory):
        if keep(m.mount_point):
            continue
        try:
            kernel.umount2(m.mount_point, kernel.MNT_DETACH | kernel.UMOUNT_NOFOLLOW)
        except KernelCallError as e:
            if e.errno not in (errno.EINVAL, errno.ENOENT):   # gone already, with a parent
                raise
            continue
        done.append(m.mount_point)
    return done
