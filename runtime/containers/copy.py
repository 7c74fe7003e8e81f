"""`cp` between a container and the host, docker's rules, without a daemon.

Every look inside the container happens in a forked child that sees the container's tree:
a running one's through /proc/<pid 1>/root, a stopped one's overlay (its layers + its own
upper/work dirs, so a write makes the whiteouts and copy-ups a running container would) mounted
in a private mount namespace while the container's supervisor.lock is held so it cannot start
meanwhile. The stat of the path and a copy in work by fd from that root: openat2
(RESOLVE_IN_ROOT) and the extractor's fd walk, so a symlink (`/evil -> /`) leads to the
container's own files, never the host's (they stay outside a chroot: the extractor needs
/proc/self/fd). A copy out walks the tree by path (the tar writer), so it runs chrooted into the
container's root (a running one's mount namespace joined with setns first): a directory swapped
for a link to / mid-walk (a shared volume, a running process) still names the container's /.
Data moves as a tar stream over a pipe, written
by the store's one tar writer (cache.layers.write_tar, mtimes kept) and unpacked by its one
safe extractor (cache.extract, ADD's merge mode: existing dirs merged, a file replaced).
Owners: into the container root:root unless -a (docker); out to the host the caller's.
A stopped container's volumes and binds are mounted where it has them (runtime.rootfs's
own mount code, its placeholder mount points removed from the upper dir after), so a copy into
a volume lands in the volume, as docker's does. Not yet: its tmpfs (gone while it is stopped,
as in docker), progress output.
"""
from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
import sys

from cache.extract import extract_stream  # imported here: the child cannot once chrooted
from cache.layers import write_tar
from runtime import kernel
from runtime.errors import ContainerError, KernelCallError


def _resolve(base: int, path: str, follow: bool) -> int:
    """An O_PATH fd of `path` inside the root `base` (a directory fd)."""
    flags = os.O_PATH | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    return kernel.openat2(base, path, flags, kernel.RESOLVE_IN_ROOT | kernel.RESOLVE_NO_MAGICLINKS)


def _real_path(path: str, follow: bool) -> str:
    """The path (in the container's chroot) naming what `path` names, for the tar writer's walk:
    its links resolved, '..' and absolute links staying inside the chroot."""
    if not path.startswith("/"):
        path = "/" + path
    head, tail = os.path.split(path.rstrip("/") or "/")
    full = os.path.join(os.path.realpath(head), tail) if tail else "/"
    return os.path.realpath(full) if follow else full


class _Child:
    """A forked child inside the container's filesystem (see the module doc); `run(fn, ...)`
    calls fn in it and returns what fn returned (a short string), or raises its error."""

    def __init__(self, root: str, c):
        self.root, self.c = root, c
        self.lockfd = -1
        self.ns = self.rootfd = -1

    def __enter__(self):
        from runtime.containers import inspect

        c = self.c
        self.lockfd = os.open(os.path.join(c.path, "supervisor.lock"),
                              os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.lockfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return self             # no supervisor: stopped, and it stays so while we hold it
        except BlockingIOError:
            os.close(self.lockfd)
            self.lockfd = -1
        pid = inspect.init_pid(c.reload())
        try:
            if not pid:
                raise OSError
            self.ns = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
            self.rootfd = os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            self.__exit__()
            raise ContainerError(f"container {c.name} is starting or stopping; try again") from None
        return self

    def __exit__(self, *exc):
        for fd in (self.lockfd, self.ns, self.rootfd):
            if fd >= 0:
                os.close(fd)
        self.lockfd = self.ns = self.rootfd = -1

    def run(self, fn, *args, stdin: int | None = None, stdout: int | None = None,
            then=None, chroot: bool = False) -> str:
        """fn(*args) in the child (stdin/stdout: fds it gets as 0/1; both are closed here once
        it runs); `then()` runs here meanwhile (the other end of a data pipe)."""
        r, w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.close(r)
                for fd, to in ((stdin, 0), (stdout, 1)):
                    if fd is not None:
                        os.dup2(fd, to)
                keep = {0, 1, 2, w, self.ns, self.rootfd, self.lockfd}
                for fd in [int(n) for n in os.listdir("/proc/self/fd")]:
                    if fd not in keep:      # the pipe's other end too: EOF must reach us
                        try:
                            os.close(fd)
                        except OSError:
                            pass
                msg = "O " + self._enter_and(fn, args, chroot)
            except BaseException as e:  # noqa: BLE001 - reported through the pipe
                msg, code = "E " + _message(e), 1
            try:
                os.write(w, msg.encode(errors="replace")[:8000])
            finally:
                os._exit(code)
        os.close(w)
        for fd in (stdin, stdout):
            if fd is not None:
                os.close(fd)
        error = None
        try:
            if then is not None:
                then()
        except BrokenPipeError:
            pass
        except BaseException as e:  # noqa: BLE001 - after the child is reaped
            error = e
        with os.fdopen(r, "rb") as f:
            msg = f.read().decode(errors="replace")
        os.waitpid(pid, 0)
        if not msg.startswith("O "):
            raise ContainerError(msg[2:] if msg.startswith("E ") else "the copy failed")
        if error is not None:
            raise error
        return msg[2:]

    def _enter_and(self, fn, args, chroot: bool) -> str:
        """fn(base, *args), base a directory fd of the container's root; with `chroot` in a
        chroot of it (the tar writer walks by path), else from this root (openat2 in-root and
        the extractor's fd walk never follow a path out; the extractor needs /proc/self/fd)."""
        if self.ns >= 0 and not chroot:
            return fn(self.rootfd, *args)       # /proc/<pid 1>/root; resolved in-root
        if self.ns >= 0:
            kernel.setns(self.ns, kernel.CLONE_NEWNS)
            return _chrooted(self.rootfd, fn, args)
        from cache import layout
        from runtime import mountns, snapshotter

        mountns.enter_private()
        c = self.c
        with snapshotter.mounted([os.fspath(d) for d in c.config.get("lowerdirs") or []],
                                 upperdir=os.path.join(c.path, "upper"),
                                 workdir=os.path.join(c.path, "work"),
                                 tmp=os.path.join(self.root, layout.TMP_DIR)) as merged:
            base = os.open(merged, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            mounts = [m for m in c.config.get("mounts") or [] if m["type"] != "tmpfs"]
            created: list = []
            try:
                if mounts:      # its volumes and binds where the container has them, as docker
                    from runtime import rootfs
                    from runtime.containers.volumes import to_spec

                    rootfs._user_mounts(base, to_spec(self.root, mounts), created)
                # chrooted as a running one is: a path walk (the tar writer's) cannot leave it
                # even if the upper dir changes meanwhile (a volume shared with a running one)
                if not chroot:
                    return fn(base, *args)
                host = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    return _chrooted(base, fn, args)
                finally:
                    os.fchdir(host)         # back to the host root for the clean-up below
                    os.chroot(".")
                    os.chdir("/")
                    os.close(host)
            finally:
                os.close(base)
                if mounts:
                    from runtime import mountinfo, rundir

                    mountinfo.unmount_under(merged)
                    rundir._remove_placeholders(os.path.join(c.path, "upper"), merged, created)


def _chrooted(rootfd: int, fn, args) -> str:
    os.fchdir(rootfd)
    os.chroot(".")
    os.chdir("/")
    base = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return fn(base, *args)
    finally:
        os.close(base)


def _message(e: BaseException) -> str:
    cause = e
    while cause is not None:        # the extractor reports an OSError as its own error
        if isinstance(cause, OSError) and cause.errno == errno.EROFS:
            return "mounted volume is marked read-only"      # docker's words
        cause = cause.__cause__ or cause.__context__
    if isinstance(e, OSError) and not isinstance(e, KernelCallError):
        return f"{e.strerror}: {e.filename}" if e.filename else str(e.strerror or e)
    return str(e).replace("\n", " ")


# --- what the child does inside the container ------------------------------------------------

def _stat_in(base: int, path: str, follow: bool) -> str:
    """'d' (a directory), 'f' (anything else) or 'm' (missing, its parent a directory)."""
    try:
        fd = _resolve(base, path, follow)
    except KernelCallError as e:
        if e.errno != errno.ENOENT:
            raise
        try:
            parent = _resolve(base, os.path.dirname(path.rstrip("/")) or "/", True)
        except KernelCallError:
            return "n"
        mode = os.fstat(parent).st_mode
        os.close(parent)
        return "m" if stat.S_ISDIR(mode) else "n"
    mode = os.fstat(fd).st_mode
    os.close(fd)
    return "d" if stat.S_ISDIR(mode) else "f"


def _tar_out(base: int, path: str, follow: bool, top: str | None) -> str:
    real = _real_path(path, follow)
    with os.fdopen(os.dup(1), "wb", buffering=1 << 20) as out:
        write_tar(real, out, epoch=None, hash_tar=False, top=top)
    return ""


def _untar_in(base: int, dest_dir: str, owner) -> str:
    fd = _resolve(base, dest_dir, True)
    dirfd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
    os.close(fd)
    try:
        with os.fdopen(os.dup(0), "rb") as src:
            extract_stream(src, dirfd, whiteouts="untar", owner=owner)
    finally:
        os.close(dirfd)
    return ""


def _untar_host(src, dest_dir: str) -> None:
    dirfd = os.open(dest_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        extract_stream(src, dirfd, whiteouts="untar", owner=(os.getuid(), os.getgid()))
    finally:
        os.close(dirfd)


# --- the two directions ------------------------------------------------------------------

def _feed(child: _Child, fn, args, *, reader=None, writer=None) -> str:
    """Run fn in the child with a pipe to this process (fn's stdout, read by `reader(f)`) or
    from it (`writer(f)` feeds fn's stdin)."""
    r, w = os.pipe2(os.O_CLOEXEC)
    if reader is not None:
        def then():
            with os.fdopen(r, "rb") as f:
                reader(f)
        return child.run(fn, *args, stdout=w, then=then, chroot=True)

    def feed():
        with os.fdopen(w, "wb") as f:
            writer(f)
    return child.run(fn, *args, stdin=r, then=feed)


def copy_out(root: str, c, src: str, dest: str, *, follow: bool = False) -> None:
    """docker cp CONTAINER:SRC DEST|-."""
    content_only = src.endswith("/.") or src.rstrip("/") == ""
    follow_src = follow or src.endswith("/") or content_only
    with _Child(root, c) as child:
        kind = child.run(_stat_in, src, follow_src)
        if kind in ("m", "n"):
            raise ContainerError(f"Could not find the file {src} in container {_ref(c)}")
        if src.endswith("/") and kind != "d":
            raise ContainerError(f"{src}: not a directory")
        name = os.path.basename(src.rstrip("/")) or "."
        if dest == "-":
            top = None if content_only else name
            _feed(child, _tar_out, (src, follow_src, top),
                  reader=lambda f: shutil.copyfileobj(f, sys.stdout.buffer, 1 << 20))
            sys.stdout.flush()
            return
        exists = os.path.exists(dest)
        if exists and os.path.isdir(dest):
            into, top = dest, (None if content_only else name)
            if kind == "d" and content_only:
                top = None
        elif exists:
            if kind == "d":
                raise ContainerError(f"cannot overwrite non-directory {dest} with directory")
            into, top = os.path.dirname(os.path.abspath(dest)), os.path.basename(dest)
        else:
            parent = os.path.dirname(os.path.abspath(dest.rstrip("/")))
            if not os.path.isdir(parent):
                raise ContainerError(f"no such directory: {parent}")
            if dest.endswith("/") and kind != "d":
                raise ContainerError(f"no such directory: {dest}")
            into, top = parent, os.path.basename(dest.rstrip("/"))
            if kind == "d" and content_only:
                os.mkdir(dest)
                into, top = dest, None
        _feed(child, _tar_out, (src, follow_src, top), reader=lambda f: _untar_host(f, into))


def copy_in(root: str, c, src: str, dest: str, *, archive: bool = False,
            follow: bool = False) -> None:
    """docker cp SRC|- CONTAINER:DEST."""
    owner = None if archive else (0, 0)
    with _Child(root, c) as child:
        kind = child.run(_stat_in, dest, True)
        if src == "-":
            if kind != "d":
                raise ContainerError(f"destination \"{_ref(c)}:{dest}\" must be a directory")
            _feed(child, _untar_in, (dest, owner),
                  writer=lambda f: shutil.copyfileobj(sys.stdin.buffer, f, 1 << 20))
            return
        content_only = src.endswith("/.")
        follow_src = follow or src.endswith("/") or content_only
        try:
            st = os.stat(src) if follow_src else os.lstat(src)
        except OSError as e:
            raise ContainerError(f"{'stat' if follow_src else 'lstat'} {src}: "
                                 f"{os.strerror(e.errno).lower()}") from None
        is_dir = stat.S_ISDIR(st.st_mode)
        if src.endswith("/") and not is_dir:
            raise ContainerError(f"{src}: not a directory")
        name = os.path.basename(src.rstrip("/")) or "."
        real = os.path.realpath(src) if follow_src else os.path.join(
            os.path.realpath(os.path.dirname(os.path.abspath(src))), os.path.basename(src))
        if kind == "d":
            into, top = dest, (None if is_dir and content_only else name)
        elif kind == "f":
            if is_dir:
                raise ContainerError(f"cannot overwrite non-directory \"{dest}\" with directory")
            into, top = os.path.dirname(dest.rstrip("/")) or "/", os.path.basename(dest)
        elif kind == "m" and not (dest.endswith("/") and not is_dir):
            into, top = os.path.dirname(dest.rstrip("/")) or "/", os.path.basename(dest.rstrip("/"))
            if is_dir and content_only:
                top = os.path.basename(dest.rstrip("/"))
        else:
            raise ContainerError(f"Could not find the file {dest} in container {_ref(c)}")

        def writer(f):
            write_tar(real, f, epoch=None, hash_tar=False, top=top)
        _feed(child, _untar_in, (into, owner), writer=writer)


def _ref(c) -> str:
    return c.name
