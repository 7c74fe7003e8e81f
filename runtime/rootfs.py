"""The container's filesystem: stub layer, overlay, /proc, /dev, /sys, masks, binds, pivot_root.

Two halves. `make_stub` runs on the host before the fork and writes a tiny *bottom* lower layer
holding every mount point the sandbox needs (/proc, /dev, /sys, /etc/hosts, mount targets) that
no layer has already (none at all when they all do). Being the lowest layer, it only fills
gaps: the image's own entries win, and nothing the sandbox injects ever lands in the upper dir,
so the layer diff stays exactly what the command wrote. (The native
snapshotter copies the stub in first too, so its snapshot holds the mount points as well.)
`setup` runs inside the new mount and pid namespaces (as pid 1) and builds the view Docker gives:
fresh procfs, a tmpfs /dev with docker's null/zero/full/random/urandom/tty nodes (mknod), devpts,
shm, mqueue, read-only sysfs, Docker's masked and read-only paths, generated /etc/hosts,
/etc/resolv.conf and /etc/hostname, the caller's bind/tmpfs mounts, then pivot_root; with
`readonly` (run --read-only) the root mount is then remounted read-only, the mounts on it
(/dev, /proc, /sys, tmpfs, volumes) keeping their own flags, as runc does.

Every mount target inside the rootfs is opened with openat2(RESOLVE_IN_ROOT) and mounted on
through /proc/self/fd/N, so a symlink in the image (say /etc/hosts -> ../../../../etc/shadow)
resolves inside the container root and never reaches the host. /proc, /dev and /sys must be
real directories (CVE-2019-19921, CVE-2026-41579); a masked-path source must be a real
/dev/null (CVE-2025-31133).

--device nodes (and, with --privileged, every device of the host's /dev, as containerd's
HostDevices lists them) are made with mknod after the default ones, with the host node's
type, numbers, mode and owner (runc's createDevices); --privileged also leaves /proc and /sys
unmasked and sysfs read-write, as docker does. Which nodes may be opened is the devices
cgroup's (runtime.cgroups).
"""
from __future__ import annotations

import errno
import os
import stat

from cache.fspath import clean
from runtime import kernel
from runtime.errors import KernelCallError, SandboxError
from runtime.overlay import mount_overlay
from runtime.spec import Record

MASKED_PATHS = (
    "/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/sched_debug", "/proc/scsi", "/proc/timer_list",
    "/proc/timer_stats", "/sys/firmware", "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
# docker's default device nodes (oci.DefaultSimpleDevices): name, major, minor; mode 0666, root's
DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9),
           ("tty", 5, 0))
DEV_LINKS = (("ptmx", "pts/ptmx"), ("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"))
ETC_FILES = ("/etc/hosts", "/etc/resolv.conf", "/etc/hostname")
HOST_DEV_SKIP = ("pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev")   # containerd's

_IN_ROOT = kernel.RESOLVE_IN_ROOT | kernel.RESOLVE_NO_MAGICLINKS
_NO_LINKS = kernel.RESOLVE_IN_ROOT | kernel.RESOLVE_NO_SYMLINKS | kernel.RESOLVE_NO_MAGICLINKS


class MountPlan(Record):
    """What `setup` mounts; built on the host, used in the child (plain data, no fds)."""
    _fields = ("rootdir", "lowerdirs", "upperdir", "workdir", "etc_files", "mounts", "new_netns",
               "tree", "readonly", "devices", "privileged", "shm_size", "sysctls", "volatile")

    def __init__(self, rootdir: str, lowerdirs: list[str], upperdir: str, workdir: str,
                 etc_files: dict[str, str], mounts: list | None = None, new_netns: bool = False,
                 tree: str = "", readonly: bool = False, devices: list | None = None,
                 privileged: bool = False, shm_size: int = 0, sysctls: dict | None = None,
                 volatile: bool = False):
        self.rootdir = rootdir
        self.lowerdirs = lowerdirs
        self.upperdir = upperdir
        self.workdir = workdir
        self.etc_files = etc_files      # container path -> host file generated for this run
        self.mounts = [] if mounts is None else mounts   # spec.Mount
        self.new_netns = new_netns
        self.tree = tree            # native snapshotter: bind this copied rootfs instead of the overlay
        self.readonly = readonly    # --read-only: the root mount read-only (its sub-mounts are not)
        self.devices = [] if devices is None else devices   # device_nodes: made with mknod
        self.privileged = privileged    # --privileged: no masked or read-only paths, rw sysfs
        self.shm_size = shm_size        # /dev/shm's size in bytes; 0: docker's 64 MiB
        self.sysctls = {} if sysctls is None else sysctls   # --sysctl: written before /proc/sys is ro
        self.volatile = volatile    # overlay.mount_overlay's: an upper dir used once


def _fdpath(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


# --- host side: the stub layer ----------------------------------------------------------------

def make_stub(stub: str, mounts: list, lowerdirs: list | None = None) -> bool:
    """Write the bottom layer of mount points (dirs 0755, empty files 0644, mtimes 0); False
    when it would hold nothing (no dir is made): every mount point is in a layer already.

    An entry that some layer of `lowerdirs` has at its path (resolved beneath the layer, no
    symlink: anything else keeps the entry) is left out: whatever it is there (a dir, a file, a
    whiteout), a stub at the bottom would never show through it, so the container sees the
    same tree, and the run makes fewer files on the store's disk (busybox has /proc, /dev, /sys
    and /etc: four of seven)."""
    dirs = {"proc", "dev", "sys", "etc"}
    files = {p.lstrip("/") for p in ETC_FILES}
    for m in mounts:
        rel = "/".join(clean(m.target))
        if not rel:
            raise SandboxError(f"cannot mount over the container root ({m.target!r})")
        if m.type != "tmpfs" and m.source and not os.path.isdir(m.source):
            files.add(rel)
        else:
            dirs.add(rel)
    if lowerdirs:
        shown = _not_in_layers(dirs | files, lowerdirs)
        dirs, files = dirs & shown, files & shown
        if not (dirs or files):
            return False
    made = []
    for rel in sorted(dirs | {os.path.dirname(f) for f in files} - {""}):
        p = os.path.join(stub, rel)
        os.makedirs(p, mode=0o755, exist_ok=True)
        made.append(p)
    for rel in sorted(files):
        p = os.path.join(stub, rel)
        os.makedirs(os.path.dirname(p), mode=0o755, exist_ok=True)
        if not os.path.lexists(p):
            os.close(os.open(p, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))
        made.append(p)
    for p in made + [stub]:
        os.utime(p, ns=(0, 0), follow_symlinks=False)
    return True


def _not_in_layers(paths: set[str], lowerdirs: list) -> set[str]:
    """The relative paths that no layer dir has an entry at (or that could not be told)."""
    left = set(paths)
    for d in lowerdirs:
        if not left:
            break
        try:
            dfd = os.open(d, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            for rel in sorted(left):
                try:
                    os.close(kernel.openat2(dfd, rel, os.O_PATH | os.O_NOFOLLOW,
                                            kernel.RESOLVE_BENEATH | kernel.RESOLVE_NO_SYMLINKS))
                except KernelCallError:
                    continue        # not here (or a symlink on the way): keep looking
                left.discard(rel)
        finally:
            os.close(dfd)
    return left


# --- host side: --device ----------------------------------------------------------------

def _valid_mode(mode: str) -> bool:
    return bool(mode) and all(c in "rwm" for c in mode) and len(set(mode)) == len(mode)


def parse_device(text: str) -> dict:
    """docker's --device HOST[:CONTAINER][:PERMS] (the CLI's validateDevice, then parseDevice)
    as HostConfig.Devices holds it; SandboxError with docker's line when malformed."""
    split = text.split(":")
    if len(split) > 3 or not split[0]:
        raise SandboxError(f"bad format for path: {text}")
    perms, dst = "rwm", ""
    if len(split) == 3:
        if not _valid_mode(split[2]):
            raise SandboxError(f"bad mode specified: {split[2]}")
        dst, perms = split[1], split[2]
    elif len(split) == 2:
        if _valid_mode(split[1]):
            perms = split[1]
        else:
            dst = split[1]
    check = dst or split[0]
    if not check.startswith("/"):
        raise SandboxError(f"{check} is not an absolute path")
    return {"PathOnHost": split[0], "PathInContainer": os.path.normpath(dst or split[0]),
            "CgroupPermissions": perms}


def _node(path: str, target: str, perms: str) -> dict | None:
    """containerd's DeviceFromPath (lstat: a symlink is no device): None when not a node."""
    st = os.lstat(path)
    kind = {stat.S_IFCHR: "c", stat.S_IFBLK: "b", stat.S_IFIFO: "p"}.get(stat.S_IFMT(st.st_mode))
    if kind is None:
        return None
    return {"path": target, "type": kind, "major": os.major(st.st_rdev),
            "minor": os.minor(st.st_rdev), "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid,
            "gid": st.st_gid, "perms": perms}


def _resolved(path: str) -> str:
    """docker's resolvedDevicePath: a symlink is followed only to a node under /dev."""
    path = os.path.normpath(path)
    if os.path.islink(path):
        real = os.path.realpath(path)
        if real == "/dev" or real.startswith("/dev/"):
            return real
    return path


def device_nodes(mappings: list[dict], privileged: bool = False) -> list[dict]:
    """The nodes to make for --device mappings (docker's DevicesFromPath: a directory gives
    the nodes below it) and, with privileged, every node of the host's /dev; SandboxError with
    docker's line for a host path that is no device."""
    out: list[dict] = []
    if privileged:
        out += _host_devices("/dev", "/dev")
    for m in mappings:
        src, dst = _resolved(m["PathOnHost"]), m["PathInContainer"]
        if privileged and m["PathOnHost"] == dst:
            continue            # docker: it is there already
        perms = "rwm" if privileged else m["CgroupPermissions"]
        why = "not a device node"
        try:
            node = _node(src, dst, perms)
            if node is not None:
                out.append(node)
                continue
            if os.path.isdir(src):
                found = []
                for d, dirs, files in os.walk(src):
                    dirs.sort()
                    for f in sorted(files):
                        p = os.path.join(d, f)
                        try:
                            n = _node(_resolved(p), dst + p[len(src):], perms)
                        except OSError:
                            continue
                        if n is not None:
                            found.append(n)
                if found:
                    out += found
                    continue
        except OSError as e:
            why = (e.strerror or str(e)).lower()
        raise SandboxError(f"error gathering device information while adding custom device "
                           f'"{m["PathOnHost"]}": {why}')
    return out


def _host_devices(path: str, target: str) -> list[dict]:
    """containerd's HostDevices: the char and block nodes below /dev, but pts, shm, fd,
    mqueue (the container has its own) and console."""
    out = []
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError:
        return out
    for e in entries:
        if e.is_dir(follow_symlinks=False):
            if e.name not in HOST_DEV_SKIP:
                out += _host_devices(e.path, os.path.join(target, e.name))
            continue
        if e.name == "console":
            continue
        try:
            n = _node(e.path, os.path.join(target, e.name), "rwm")
        except OSError:
            continue
        if n is not None and n["type"] != "p":
            out.append(n)
    return out


# --- child side -----------------------------------------------------------------------------

def _open(rootfd: int, path: str, resolve: int, flags: int = 0) -> int:
    return kernel.openat2(rootfd, path, os.O_PATH | flags, resolve)


def _real_dir(rootfd: int, path: str) -> int:
    """Open /proc, /dev or /sys, refusing anything but a real directory in the image."""
    try:
        fd = _open(rootfd, path, _NO_LINKS)
    except KernelCallError as e:
        if e.errno == errno.ELOOP:
            raise SandboxError(f"refusing to mount on {path}: it is a symlink in the image") from None
        raise
    if not stat.S_ISDIR(os.fstat(fd).st_mode):
        os.close(fd)
        raise SandboxError(f"refusing to mount on {path}: it is not a directory in the image")
    return fd


def _target(rootfd: int, path: str, is_dir: bool, created: list, depth: int = 0) -> int:
    """Open a mount target, resolving symlinks inside the root; create it when missing.

    The stub layer normally provides every target; creation is the fallback for an image that
    hides a stub entry (a whiteout or opaque dir above it, or a symlink into a missing place).
    A dangling symlink is followed inside the root and its target created there, as runc's
    MkdirAllInRoot does. Created paths are recorded (host path, parent atime/mtime) so the host
    removes them from the upper dir after the run.
    """
    try:
        fd = _open(rootfd, path, _IN_ROOT)
    except KernelCallError as e:
        if e.errno != errno.ENOENT:
            raise
        if depth > 40:
            raise SandboxError(f"cannot mount on {path}: too many levels of symlinks") from None
        *up, name = clean(path) or [""]
        if not name:
            raise
        pfd = _target(rootfd, "/" + "/".join(up), True, created, depth + 1)
        try:
            where = os.readlink(_fdpath(pfd))
            pst = os.fstat(pfd)
            try:
                if is_dir:
                    os.mkdir(name, 0o755, dir_fd=pfd)
                else:
                    os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                                     | os.O_CLOEXEC, 0o644, dir_fd=pfd))
            except FileExistsError:   # a dangling symlink: follow it, inside the root
                link = os.readlink(name, dir_fd=pfd)
                root = os.readlink(_fdpath(rootfd))
                cparent = "/" + os.path.relpath(where, root).lstrip(".")
                return _target(rootfd, os.path.join(cparent, link), is_dir, created, depth + 1)
        finally:
            os.close(pfd)
        fd = _open(rootfd, path, _IN_ROOT)
        created.append((os.path.join(where, name), pst.st_atime_ns, pst.st_mtime_ns))
    st = os.fstat(fd)
    if stat.S_ISDIR(st.st_mode) != is_dir:
        os.close(fd)
        want = "a directory" if is_dir else "a file"
        raise SandboxError(f"cannot mount on {path}: the image has it, but not as {want}")
    return fd


def _bind_ro(rootfd: int, path: str, resolve: int, extra: int = 0) -> None:
    """Remount the mount now on top of path read-only (reopened so we get the new mount)."""
    fd = _open(rootfd, path, resolve)
    try:
        kernel.mount(None, _fdpath(fd), None,
                     kernel.MS_BIND | kernel.MS_REMOUNT | kernel.MS_RDONLY | extra)
    finally:
        os.close(fd)


def _check_char(fd: int, path: str, major: int, minor: int) -> None:
    st = os.fstat(fd)
    if not stat.S_ISCHR(st.st_mode) or (os.major(st.st_rdev), os.minor(st.st_rdev)) != (major, minor):
        raise SandboxError(f"host {path} is not the expected device {major}:{minor}; refusing to use it")


def _setup_dev(rootfd: int, rootdir: str, shm_size: int = 0) -> None:
    fd = _real_dir(rootfd, "/dev")
    try:
        kernel.mount("tmpfs", _fdpath(fd), "tmpfs", kernel.MS_NOSUID | kernel.MS_STRICTATIME,
                     "mode=755,size=65536k")
    finally:
        os.close(fd)
    dev = os.path.join(rootdir, "dev")   # our fresh tmpfs: nothing from the image is in it
    for name, major, minor in DEVICES:  # made, as docker makes them: no mount each to undo
        target = os.path.join(dev, name)
        os.mknod(target, stat.S_IFCHR | 0o666, os.makedev(major, minor))
        os.chmod(target, 0o666)         # whatever the umask
    os.mkdir(os.path.join(dev, "pts"), 0o755)
    kernel.mount("devpts", os.path.join(dev, "pts"), "devpts", kernel.MS_NOSUID | kernel.MS_NOEXEC,
                 "newinstance,ptmxmode=0666,mode=0620,gid=5")
    os.mkdir(os.path.join(dev, "shm"), 0o1777)
    kernel.mount("shm", os.path.join(dev, "shm"), "tmpfs",
                 kernel.MS_NOSUID | kernel.MS_NODEV | kernel.MS_NOEXEC,
                 f"mode=1777,size={(shm_size or 64 << 20) // 1024}k")
    os.mkdir(os.path.join(dev, "mqueue"), 0o755)
    try:
        kernel.mount("mqueue", os.path.join(dev, "mqueue"), "mqueue",
                     kernel.MS_NOSUID | kernel.MS_NODEV | kernel.MS_NOEXEC)
    except KernelCallError:
        os.rmdir(os.path.join(dev, "mqueue"))
    for name, target in DEV_LINKS:
        os.symlink(target, os.path.join(dev, name))


def _make_nodes(rootfd: int, nodes: list[dict]) -> None:
    """mknod each device_nodes entry in the container (a name already there, a default node,
    is kept, as runc does); parent dirs are made inside the root and, as runc's, stay (in
    /dev they are on its tmpfs)."""
    kinds = {"c": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}
    old = os.umask(0)
    try:
        for n in nodes:
            *up, name = clean(n["path"]) or [""]
            if not name:
                raise SandboxError(f"cannot make the device {n['path']!r}")
            pfd = _target(rootfd, "/" + "/".join(up), True, [])
            try:
                try:
                    os.mknod(name, kinds[n["type"]] | n["mode"], os.makedev(n["major"], n["minor"]),
                             dir_fd=pfd)
                except FileExistsError:
                    continue
                os.chown(name, n["uid"], n["gid"], dir_fd=pfd, follow_symlinks=False)
            finally:
                os.close(pfd)
    finally:
        os.umask(old)


def _setup_sys(rootfd: int, new_netns: bool, privileged: bool = False) -> None:
    fd = _real_dir(rootfd, "/sys")
    flags = kernel.MS_NOSUID | kernel.MS_NOEXEC | kernel.MS_NODEV | (0 if privileged else kernel.MS_RDONLY)
    try:
        try:
            kernel.mount("sysfs", _fdpath(fd), "sysfs", flags)
        except KernelCallError as e:
            if e.errno != errno.EPERM or new_netns:
                raise
            kernel.mount("/sys", _fdpath(fd), None, kernel.MS_BIND | kernel.MS_REC)
            if not privileged:
                _bind_ro(rootfd, "/sys", _NO_LINKS, kernel.MS_NOSUID | kernel.MS_NOEXEC | kernel.MS_NODEV)
    finally:
        os.close(fd)


def _mask(rootfd: int, rootdir: str, devnull: int) -> None:
    paths = list(MASKED_PATHS)
    cpu = os.path.join(rootdir, "sys/devices/system/cpu")
    try:
        paths += [f"/sys/devices/system/cpu/{c}/thermal_throttle" for c in sorted(os.listdir(cpu))
                  if c.startswith("cpu") and c[3:].isdigit()]
    except OSError:
        pass
    for path in paths:
        try:
            fd = _open(rootfd, path, _NO_LINKS)
        except KernelCallError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                continue
            raise
        try:
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                kernel.mount("tmpfs", _fdpath(fd), "tmpfs", kernel.MS_RDONLY, "size=0,nr_inodes=1")
            else:
                kernel.mount(_fdpath(devnull), _fdpath(fd), None, kernel.MS_BIND)
        finally:
            os.close(fd)


def _sysctls(rootfd: int, sysctls: dict) -> None:
    """--sysctl: each namespaced key written in the container's new /proc (runc's way), before
    /proc/sys is made read-only; the error is runc's line."""
    procfd = _real_dir(rootfd, "/proc")     # opened again: the fd before the mount is under it
    try:
        for key, value in sysctls.items():
            rel = "sys/" + key.replace(".", "/")
            try:
                with open(f"{_fdpath(procfd)}/{rel}", "w") as f:
                    f.write(value)
            except OSError as e:
                raise SandboxError(f"open /proc/{rel}: {(e.strerror or '').lower()}") from None
    finally:
        os.close(procfd)


def _readonly(rootfd: int) -> None:
    keep = kernel.MS_NOSUID | kernel.MS_NODEV | kernel.MS_NOEXEC
    for path in READONLY_PATHS:
        try:
            fd = _open(rootfd, path, _NO_LINKS)
        except KernelCallError as e:
            if e.errno == errno.ENOENT:
                continue
            raise
        try:
            kernel.mount(_fdpath(fd), _fdpath(fd), None, kernel.MS_BIND | kernel.MS_REC)
        finally:
            os.close(fd)
        _bind_ro(rootfd, path, _NO_LINKS, keep)


def _bind_file(rootfd: int, target: str, source: str, readonly: bool, created: list) -> None:
    sfd = os.open(source, os.O_PATH | os.O_CLOEXEC)
    try:
        is_dir = stat.S_ISDIR(os.fstat(sfd).st_mode)
        fd = _target(rootfd, target, is_dir, created)
        try:
            kernel.mount(_fdpath(sfd), _fdpath(fd), None, kernel.MS_BIND | kernel.MS_REC)
        finally:
            os.close(fd)
    finally:
        os.close(sfd)
    if readonly:
        _bind_ro(rootfd, target, _IN_ROOT)


def _user_mounts(rootfd: int, mounts: list, created: list) -> None:
    for m in sorted(mounts, key=lambda m: len(clean(m.target))):
        if m.type == "tmpfs":
            fd = _target(rootfd, m.target, True, created)
            try:
                flags = kernel.MS_NOSUID | kernel.MS_NODEV | (kernel.MS_RDONLY if m.readonly else 0)
                kernel.mount("tmpfs", _fdpath(fd), "tmpfs", flags, ",".join(m.options) or None)
            finally:
                os.close(fd)
        else:
            if not os.path.exists(m.source):
                raise SandboxError(f"mount source {m.source} does not exist")
            _bind_file(rootfd, m.target, m.source, m.readonly, created)


def setup(plan: MountPlan, created: list) -> None:
    """In the new mount ns (as the new pid ns's pid 1): build the rootfs and pivot_root into it."""
    kernel.mount(None, "/", None, kernel.MS_REC | kernel.MS_PRIVATE)
    if plan.tree:
        kernel.mount(plan.tree, plan.rootdir, None, kernel.MS_BIND)
    else:
        try:
            mount_overlay(plan.rootdir, plan.lowerdirs, plan.upperdir, plan.workdir,
                          volatile=plan.volatile)
        except KernelCallError as e:
            e.overlay_refused = True    # the snapshotter's cached "overlay works" may be wrong
            raise
    devnull = os.open("/dev/null", os.O_PATH | os.O_CLOEXEC | os.O_NOFOLLOW)
    _check_char(devnull, "/dev/null", 1, 3)
    rootfd = os.open(plan.rootdir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = _real_dir(rootfd, "/proc")
        try:
            kernel.mount("proc", _fdpath(fd), "proc", kernel.MS_NOSUID | kernel.MS_NOEXEC | kernel.MS_NODEV)
        finally:
            os.close(fd)
        if plan.sysctls:
            _sysctls(rootfd, plan.sysctls)
        _setup_dev(rootfd, plan.rootdir, plan.shm_size)
        if plan.devices:
            _make_nodes(rootfd, plan.devices)
        _setup_sys(rootfd, plan.new_netns, plan.privileged)
        if not plan.privileged:     # docker --privileged: no masked nor read-only paths
            _mask(rootfd, plan.rootdir, devnull)
            _readonly(rootfd)
        for target, source in plan.etc_files.items():
            _bind_file(rootfd, target, source, True, created)
        _user_mounts(rootfd, plan.mounts, created)
        os.fchdir(rootfd)
    finally:
        os.close(rootfd)
        os.close(devnull)
    kernel.pivot_root(".", ".")
    kernel.umount2(".", kernel.MNT_DETACH)
    os.chdir("/")
    if plan.readonly:       # runc's readonlyfs: after every mount point below it is made
        kernel.mount(None, "/", None, kernel.MS_BIND | kernel.MS_REMOUNT | kernel.MS_RDONLY)
