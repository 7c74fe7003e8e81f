"""ctypes wrappers for the system calls Python 3.11's `os` lacks, each wrapped once.

Every wrapper raises `KernelCallError` (a SandboxError with `.errno`) whose message names the call
and its argument, so a failure deep in sandbox setup still reads as one clear line. Syscall
numbers are x86_64 and aarch64 (the two platforms we build for); the libc symbol is used where
glibc exports one.
"""
from __future__ import annotations

import ctypes
import errno as _errno
import os
import struct

from runtime.errors import KernelCallError

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

_ARCH = os.uname().machine      # platform.machine(), without importing platform (~3 ms, 9 regexes)
_NR = {
    # name: (x86_64, aarch64)
    "pivot_root": (155, 41),
    "setns": (308, 268),
    "open_tree": (428, 428),
    "move_mount": (429, 429),
    "fsopen": (430, 430),
    "fsconfig": (431, 431),
    "fsmount": (432, 432),
    "openat2": (437, 437),
    "mount_setattr": (442, 442),
}


def _nr(name: str) -> int:
    return _NR[name][0 if _ARCH == "x86_64" else 1]


# clone / unshare flags
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWCGROUP = 0x02000000

# mount flags
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_STRICTATIME = 0x1000000
MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8

# new mount API
FSOPEN_CLOEXEC = 0x1
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
FSMOUNT_CLOEXEC = 0x1
MOUNT_ATTR_RDONLY = 0x1
MOVE_MOUNT_F_EMPTY_PATH = 0x4
AT_EMPTY_PATH = 0x1000

# openat2 resolve flags
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

# prctl
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NAME = 15
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

_HINTS = {
    _errno.EPERM: "pybuild needs root for this (or a user namespace it can create)",
    _errno.ENOSYS: "the kernel does not support this call",
}


def _fail(what: str, hint: str = "") -> KernelCallError:
    e = ctypes.get_errno()
    return KernelCallError(what, e, hint or _HINTS.get(e, ""))


def _b(s: str | bytes | os.PathLike | None) -> bytes | None:
    if s is None:
        return None
    return os.fsencode(s)


def mount(source, target, fstype=None, flags: int = 0, data: str | None = None) -> None:
    """mount(2); `target` may be a /proc/self/fd/N path of an fd checked beforehand."""
    if _libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data)) != 0:
        kind = "bind" if flags & MS_BIND else ("remount" if flags & MS_REMOUNT else fstype or "propagation")
        raise _fail(f"mount {kind} on {os.fsdecode(target)}")


def umount2(target, flags: int = 0) -> None:
    if _libc.umount2(_b(target), ctypes.c_int(flags)) != 0:
        raise _fail(f"umount {os.fsdecode(target)}")


def pivot_root(new_root, put_old) -> None:
    if _syscall(ctypes.c_long(_nr("pivot_root")), _b(new_root), _b(put_old)) != 0:
        raise _fail(f"pivot_root {os.fsdecode(new_root)}")


def unshare(flags: int) -> None:
    """unshare(2) (os.unshare arrived only in Python 3.12)."""
    if _libc.unshare(ctypes.c_int(flags)) != 0:
        raise _fail("unshare namespaces", "new namespaces need root (CAP_SYS_ADMIN) or user namespaces")


def setns(fd: int, nstype: int = 0) -> None:
    if _syscall(ctypes.c_long(_nr("setns")), ctypes.c_int(fd), ctypes.c_int(nstype)) != 0:
        raise _fail("setns")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    r = _libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                    ctypes.c_ulong(arg4), ctypes.c_ulong(arg5))
    if r < 0:
        raise _fail(f"prctl({option})")
    return r


def c_string(s: str) -> int:
    """Address of a NUL-terminated copy of s, for prctl arguments (kept alive in a cache)."""
    buf = ctypes.create_string_buffer(s.encode())
    _keep.append(buf)
    return ctypes.addressof(buf)


_keep: list = []


def overwrite(address: int, data: bytes) -> None:
    """Write data at a raw address of this process (used to retitle pid 1's argv area)."""
    ctypes.memmove(address, data, len(data))


def ioctl_int(fd: int, request: int, arg: int = 0) -> None:
    if _libc.ioctl(ctypes.c_int(fd), ctypes.c_ulong(request), ctypes.c_ulong(arg)) < 0:
        raise _fail(f"ioctl {request:#x}")


def loopback_up() -> None:
    """Set `lo` up in this network namespace (SIOCGIFFLAGS/SIOCSIFFLAGS, no netlink import)."""
    fd = _libc.socket(ctypes.c_int(2), ctypes.c_int(2 | 0o2000000), ctypes.c_int(0))  # AF_INET, DGRAM|CLOEXEC
    if fd < 0:
        raise _fail("socket")
    try:
        ifr = ctypes.create_string_buffer(b"lo", 40)
        if _libc.ioctl(fd, ctypes.c_ulong(0x8913), ifr) < 0:        # SIOCGIFFLAGS
            raise _fail("get flags of lo")
        flags = int.from_bytes(ifr.raw[16:18], "little") | 0x1      # IFF_UP
        ctypes.memmove(ctypes.addressof(ifr) + 16, flags.to_bytes(2, "little"), 2)
        if _libc.ioctl(fd, ctypes.c_ulong(0x8914), ifr) < 0:        # SIOCSIFFLAGS
            raise _fail("set lo up")
    finally:
        os.close(fd)


def open_pty() -> tuple[int, str]:
    """posix_openpt + unlockpt + ptsname in this mount namespace: (master fd, slave path)."""
    fd = _libc.posix_openpt(ctypes.c_int(os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC))
    if fd < 0:
        raise _fail("open /dev/ptmx")
    buf = ctypes.create_string_buffer(64)
    if _libc.unlockpt(fd) != 0 or _libc.ptsname_r(fd, buf, ctypes.c_size_t(64)) != 0:
        os.close(fd)
        raise _fail("unlock pty")
    return fd, buf.value.decode()


# --- statx (Python 3.11 has no os.statx) ---------------------------------------------------

_STATX_BTIME = 0x800
_AT_SYMLINK_NOFOLLOW = 0x100
_statx = getattr(_libc, "statx", None)     # glibc >= 2.28
if _statx is not None:
    _statx.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]


def btime(path: str | bytes | os.PathLike) -> int:
    """The birth time of path (not following a symlink) in ns, or 0 where the filesystem (or
    libc) keeps none. Never raises: a missing birth time is an answer, not an error."""
    if _statx is None:
        return 0
    buf = ctypes.create_string_buffer(256)          # struct statx
    if _statx(-100, _b(path), _AT_SYMLINK_NOFOLLOW, _STATX_BTIME, buf) != 0:   # AT_FDCWD
        return 0
    mask, = struct.unpack_from("I", buf, 0)                      # stx_mask
    if not mask & _STATX_BTIME:
        return 0
    sec, nsec = struct.unpack_from("qI", buf, 80)                # stx_btime
    return sec * 1_000_000_000 + nsec


def setdomainname(name: str) -> None:
    """The UTS namespace's NIS domain name (docker run --domainname)."""
    b = name.encode()
    if _libc.setdomainname(b, ctypes.c_size_t(len(b))) != 0:
        raise _fail(f"setdomainname {name!r}")


def sethostname(name: str) -> None:
    b = name.encode()
    if _libc.sethostname(b, ctypes.c_size_t(len(b))) != 0:
        raise _fail(f"sethostname {name!r}")


# --- capabilities -------------------------------------------------------------------------

_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def capset(effective: int, permitted: int, inheritable: int = 0) -> None:
    """Set this thread's capability sets (64-bit masks) with capset(2), version 3."""
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in (0, 1):
        sh = 32 * i
        data[i].effective = (effective >> sh) & 0xFFFFFFFF
        data[i].permitted = (permitted >> sh) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> sh) & 0xFFFFFFFF
    if _libc.capset(ctypes.byref(hdr), data) != 0:
        raise _fail("capset")


def capget() -> tuple[int, int, int]:
    """(effective, permitted, inheritable) of this thread as 64-bit masks."""
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if _libc.capget(ctypes.byref(hdr), data) != 0:
        raise _fail("capget")
    eff = data[0].effective | (data[1].effective << 32)
    prm = data[0].permitted | (data[1].permitted << 32)
    inh = data[0].inheritable | (data[1].inheritable << 32)
    return eff, prm, inh


def cap_last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap", "rb") as f:
            return int(f.read())
    except OSError:
        return 40


def drop_bounding(keep_mask: int, last: int) -> None:
    """Drop every capability not in keep_mask from the bounding set (needs CAP_SETPCAP)."""
    for cap in range(last + 1):
        if not keep_mask >> cap & 1:
            prctl(PR_CAPBSET_DROP, cap)


# --- openat2 and the new mount API --------------------------------------------------------

class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """openat2(2): open `path` relative to dirfd with RESOLVE_* confinement; returns an fd."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    fd = _syscall(ctypes.c_long(_nr("openat2")), ctypes.c_int(dirfd), _b(path),
                  ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        raise _fail(f"open {path}")
    return fd


def fsopen(fstype: str) -> int:
    fd = _syscall(ctypes.c_long(_nr("fsopen")), _b(fstype), ctypes.c_uint(FSOPEN_CLOEXEC))
    if fd < 0:
        raise _fail(f"fsopen {fstype}")
    return fd


def fsconfig(fd: int, cmd: int, key: str | None = None, value: str | None = None, aux: int = 0) -> None:
    r = _syscall(ctypes.c_long(_nr("fsconfig")), ctypes.c_int(fd), ctypes.c_uint(cmd), _b(key),
                 _b(value), ctypes.c_int(aux))
    if r != 0:
        what = f"overlay option {key}={value}" if key else "create overlay"
        raise _fail(what, _fsconfig_log(fd))


def _fsconfig_log(fd: int) -> str:
    """The kernel's own explanation of a failed fsconfig (read from the fs context fd)."""
    msgs = []
    try:
        while True:
            m = os.read(fd, 1024)
            if not m:
                break
            msgs.append(m.decode(errors="replace").strip())
    except OSError:
        pass
    return "; ".join(msgs)


def fsmount(fd: int, attr_flags: int = 0) -> int:
    r = _syscall(ctypes.c_long(_nr("fsmount")), ctypes.c_int(fd), ctypes.c_uint(FSMOUNT_CLOEXEC),
                 ctypes.c_uint(attr_flags))
    if r < 0:
        raise _fail("fsmount")
    return r


def move_mount(from_fd: int, to_path: str, to_dirfd: int = -100) -> None:
    """Attach a detached mount (an fsmount fd) at to_path (relative to to_dirfd)."""
    r = _syscall(ctypes.c_long(_nr("move_mount")), ctypes.c_int(from_fd), b"", ctypes.c_int(to_dirfd),
                 _b(to_path), ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH))
    if r != 0:
        raise _fail(f"move_mount to {to_path}")


# --- seccomp ------------------------------------------------------------------------------

PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2


class _SockFprog(ctypes.Structure):     # struct sock_fprog
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_program(program: bytes):
    """A struct sock_fprog for a BPF program (bytes of struct sock_filter), made before the
    fork so the process that loads it only makes the system call."""
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.addressof(buf))
    fprog._buf = buf        # keep the instructions alive with the struct
    return fprog


def seccomp_load(fprog) -> None:
    """Install the filter for this thread and what it execs (needs no_new_privs or
    CAP_SYS_ADMIN)."""
    if _libc.prctl(ctypes.c_int(PR_SET_SECCOMP), ctypes.c_ulong(SECCOMP_MODE_FILTER),
                   ctypes.byref(fprog), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        raise _fail("load the seccomp filter", "the kernel refused the seccomp filter (prctl "
                    "PR_SET_SECCOMP); --security-opt seccomp=unconfined runs without one")
