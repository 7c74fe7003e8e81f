"""Run one command in a namespaced sandbox over an overlay of layer dirs: RUN and `pybuild run`.

Process tree (all plain os.fork, no re-exec: measured fastest, see tests/runtime):

    caller ── A "keeper"   host pid ns; own session; unshare(mnt,pid,uts,ipc[,net]); waits for B
               └─ B "init" pid 1 of the new pid ns: mounts the rootfs, pivot_root, hostname,
                    forwards signals, reaps zombies, exits with C's status
                    └─ C    drops to Docker's 14 capabilities, uid/gid/groups, cwd, closes
                            every fd but 0-2, becomes non-dumpable, execs argv

A and B die with their parent (PR_SET_PDEATHSIG), and when B (pid 1) exits the kernel kills
everything left in the namespace, so nothing outlives `run`.

The rootfs is an overlay of the layer dirs, or where overlayfs is unusable (`overlay.snapshotter`)
a plain copy of them (`runtime.snapshot`) bind-mounted in its place and diffed into the upper dir
after the command: the caller gets the same upper dir either way. Errors in A/B/C travel back over a
close-on-exec pipe as one line and surface as SandboxError; a command that cannot be executed
exits 127/126 with docker's message on the container's stderr, as docker does.
"""
from __future__ import annotations

import errno
import os
import shutil
import signal
import stat
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from runtime import kernel, rootfs, users
from runtime.errors import KernelCallError, SandboxError
from runtime.privileges import require_root

INIT_TITLE = "pybuild-init"
TIOCSCTTY = 0x540E
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                     signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH)

# Docker's (and containerd/BuildKit's) default capability set: 14 capabilities.
DEFAULT_CAPS = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_FOWNER": 3, "CAP_FSETID": 4, "CAP_KILL": 5,
    "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8, "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_RAW": 13, "CAP_SYS_CHROOT": 18, "CAP_MKNOD": 27, "CAP_AUDIT_WRITE": 29,
    "CAP_SETFCAP": 31,
}
DEFAULT_CAP_MASK = sum(1 << n for n in DEFAULT_CAPS.values())  # 0x00000000a80425fb


@dataclass
class Mount:
    """A mount in the container. type: bind (also cache/secret: the caller made the source) | tmpfs."""
    target: str
    type: str = "bind"
    source: str = ""
    readonly: bool = False
    options: list[str] = field(default_factory=list)   # tmpfs: e.g. ["size=64m", "mode=1777"]


@dataclass
class SandboxSpec:
    """What to run and on which layers. upperdir/workdir None = a throw-away upper dir."""
    lowerdirs: list[Path] = field(default_factory=list)   # layer dirs, top first
    upperdir: Path | None = None
    workdir: Path | None = None
    argv: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)          # "K=V"; PATH defaults to docker's
    cwd: str = "/"
    user: str = ""                                        # docker -u: name, uid, name:group, uid:gid
    hostname: str = "buildkitsandbox"
    network: str = "host"                                 # host | none
    mounts: list[Mount] = field(default_factory=list)
    stdin: int | None = None                              # fds; None = inherit the caller's
    stdout: int | None = None
    stderr: int | None = None
    tty: bool = False          # allocate a pty inside the container; the master is Sandbox.tty
    make_cwd: bool = False                                # create cwd if missing (docker run -w)


class Sandbox:
    """A started sandbox: `pid` is the keeper (A) in the caller's pid namespace."""

    def __init__(self, pid: int, errfd: int, rundir: str, upperdir: str, rootdir: str,
                 lowers: list[str], keep: bool, tree: str = "", snap=None):
        self.pid = pid
        self._errfd = errfd
        self._rundir = rundir
        self._upperdir = upperdir
        self._rootdir = rootdir
        self._lowers = lowers      # the stack the command saw, stub layer included
        self._keep = keep          # the caller's upper dir: its changes are wanted
        self._tree = tree          # native snapshotter: the copied rootfs, and its snapshot
        self._snap = snap
        self.returncode: int | None = None
        self.tty: int | None = None     # the pty master when spec.tty (the caller closes it)

    def signal(self, sig: int) -> None:
        """Send sig to the command (the keeper and pid 1 forward it)."""
        if self.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """Kill the whole sandbox: SIGKILL to the keeper; pid 1 and the rest follow by pdeathsig."""
        self.signal(signal.SIGKILL)

    def wait(self) -> int:
        """Wait for the command; return its exit status (128+n when killed by signal n)."""
        if self.returncode is not None:
            return self.returncode
        _, status = os.waitpid(self.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        self.returncode = code if code >= 0 else 128 - code
        error, created = self._messages()
        try:
            _remove_placeholders(self._tree or self._upperdir, self._rootdir, created)
            if self._keep and not error:
                self._collect()
        finally:
            shutil.rmtree(self._rundir, ignore_errors=True)
        if error:
            raise SandboxError(error)
        return self.returncode

    def _collect(self) -> None:
        """Leave the command's changes in the upper dir in the one form both snapshotters give."""
        from runtime import snapshot

        try:
            if self._tree:
                snapshot.diff(self._tree, self._snap, self._upperdir)
            else:
                snapshot.drop_redundant_opaque(self._upperdir, self._lowers)
        except OSError as e:
            raise SandboxError(f"cannot record the container's changes: {e.strerror}: "
                               f"{os.fsdecode(e.filename or '')}") from None

    def _messages(self) -> tuple[str | None, list]:
        chunks = []
        while True:
            b = os.read(self._errfd, 65536)
            if not b:
                break
            chunks.append(b)
        os.close(self._errfd)
        error, created = None, []
        for line in b"".join(chunks).decode(errors="replace").splitlines():
            kind, _, rest = line.partition(" ")
            if kind == "E" and error is None:
                error = rest
            elif kind == "C":
                path, at, mt = rest.rsplit(" ", 2)
                created.append((path, int(at), int(mt)))
        return error, created


def _remove_placeholders(upperdir: str, rootdir: str, created: list) -> None:
    """Remove mount points the sandbox had to create, from the upper dir, if still empty.

    Done by fd, refusing symlinks, and only for an empty dir or empty regular file, so a command
    that swapped a parent for a symlink cannot make us delete a host path (CVE-2024-23652).
    """
    if not created:
        return
    ufd = os.open(upperdir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for path, atime, mtime in reversed(created):
            rel = os.path.relpath(path, rootdir)
            if rel.startswith(".."):
                continue
            parent, name = os.path.split(rel)
            try:
                pfd = kernel.openat2(ufd, parent or ".", os.O_PATH | os.O_DIRECTORY,
                                     kernel.RESOLVE_BENEATH | kernel.RESOLVE_NO_SYMLINKS)
            except KernelCallError:
                continue
            try:
                st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    os.rmdir(name, dir_fd=pfd)
                elif stat.S_ISREG(st.st_mode) and st.st_size == 0:
                    os.unlink(name, dir_fd=pfd)
                else:
                    continue
                os.utime(_fd_path(pfd), ns=(atime, mtime))
            except OSError:
                pass
            finally:
                os.close(pfd)
    finally:
        os.close(ufd)


def _fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


# --- host side -------------------------------------------------------------------------------

def _hosts(hostname: str) -> str:
    return (f"127.0.0.1\tlocalhost {hostname}\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\n")


def _resolv_conf(network: str) -> str:
    """The host's resolv.conf; off the host network, loopback resolvers are replaced (as BuildKit)."""
    try:
        with open("/etc/resolv.conf", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        text = ""
    if network == "host":
        return text
    lines = [ln for ln in text.splitlines()
             if not (ln.split()[:1] == ["nameserver"] and len(ln.split()) > 1
                     and (ln.split()[1].startswith("127.") or ln.split()[1] == "::1"))]
    if not any(ln.split()[:1] == ["nameserver"] for ln in lines):
        lines += ["nameserver 8.8.8.8", "nameserver 8.8.4.4"]
    return "\n".join(lines) + "\n"


def _validate(spec: SandboxSpec) -> None:
    require_root()
    if not spec.argv:
        raise SandboxError("no command given to run")
    if spec.network not in ("host", "none"):
        raise SandboxError(f"network mode {spec.network!r} is not supported yet (use host or none)")
    if not spec.cwd.startswith("/"):
        raise SandboxError(f"the working directory must be an absolute path, not {spec.cwd!r}")
    for m in spec.mounts:
        if m.type not in ("bind", "cache", "secret", "tmpfs"):
            raise SandboxError(f"unknown mount type {m.type!r} for {m.target}")
        if not m.target.startswith("/"):
            raise SandboxError(f"mount target must be an absolute path, not {m.target!r}")
        if m.type != "tmpfs" and not os.path.exists(m.source):
            raise SandboxError(f"mount source {m.source} does not exist")
    if (spec.upperdir is None) != (spec.workdir is None) and spec.upperdir is None:
        raise SandboxError("a work dir was given without an upper dir")


def start(spec: SandboxSpec) -> Sandbox:
    """Start the sandbox and return at once; call .wait() for the exit status."""
    from runtime.snapshotter import snapshotter

    _validate(spec)
    base = None
    if spec.upperdir is not None:
        base = os.fspath(Path(spec.upperdir).parent)
    native = snapshotter(base) == "native"
    rundir = tempfile.mkdtemp(prefix="pybuild-run-", dir=base)
    try:
        upper = os.fspath(spec.upperdir) if spec.upperdir is not None else os.path.join(rundir, "upper")
        work = os.fspath(spec.workdir) if spec.workdir is not None else os.path.join(rundir, "work")
        for d in (upper, work):
            os.makedirs(d, exist_ok=True)
        stub = os.path.join(rundir, "stub")
        rootfs.make_stub(stub, spec.mounts)
        etc = os.path.join(rundir, "etc")
        os.mkdir(etc)
        files = {"/etc/hosts": _hosts(spec.hostname), "/etc/resolv.conf": _resolv_conf(spec.network),
                 "/etc/hostname": spec.hostname + "\n"}
        etc_files = {}
        for target, text in files.items():
            p = os.path.join(etc, os.path.basename(target))
            with open(p, "w", encoding="utf-8") as f:
                f.write(text)
            etc_files[target] = p
        rootdir = os.path.join(rundir, "root")
        os.mkdir(rootdir)
        lowers = [os.fspath(d) for d in spec.lowerdirs] + [stub]
        tree, snap = "", None
        if native:
            tree, snap = _native_tree(rundir, lowers, spec.upperdir is not None)
        plan = rootfs.MountPlan(rootdir=rootdir, lowerdirs=lowers, upperdir=upper, workdir=work,
                                etc_files=etc_files, mounts=list(spec.mounts),
                                new_netns=spec.network == "none", tree=tree)
        r, w = os.pipe2(os.O_CLOEXEC)
        psock = csock = None
        if spec.tty:
            import socket
            psock, csock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    except BaseException:
        shutil.rmtree(rundir, ignore_errors=True)
        raise
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        _keeper(spec, plan, w, r, parent, csock)   # never returns
    os.close(w)
    sb = Sandbox(pid, r, rundir, upper, rootdir, lowers, spec.upperdir is not None, tree, snap)
    if psock is not None:
        csock.close()
        with psock:
            _, fds, _, _ = socket.recv_fds(psock, 16, 1)
        sb.tty = fds[0] if fds else None
    return sb


def _native_tree(rundir: str, lowers: list[str], keep: bool):
    """The native snapshotter's rootfs: the layers (stub at the bottom, so mount points never
    reach the diff, as with overlay) copied into rundir/tree, and its snapshot when kept."""
    from runtime import snapshot

    tree = os.path.join(rundir, "tree")
    os.mkdir(tree, 0o755)
    try:
        origins = snapshot.materialise(lowers, tree)
        if not keep:
            return tree, None
        snap = snapshot.Snapshot.take(tree, origins)
        snapshot.settle(snap, rundir)
    except OSError as e:
        raise SandboxError(f"cannot copy the image's layers for the native snapshotter: "
                           f"{e.strerror}: {os.fsdecode(e.filename or '')}") from None
    return tree, snap


def run(spec: SandboxSpec, *, forward_signals: bool = False) -> int:
    """Run spec to completion; return the exit status (128+n when killed by signal n).

    forward_signals: relay SIGINT/TERM/HUP/QUIT/USR1/USR2/WINCH received by this process to the
    command (for `pybuild run`; only possible from the main thread). Without it an exception
    here (Ctrl-C as KeyboardInterrupt) kills the sandbox before it propagates.
    """
    sb = start(spec)
    old = {}
    if forward_signals and threading.current_thread() is threading.main_thread():
        for sig in FORWARDED_SIGNALS:
            old[sig] = signal.signal(sig, lambda n, _f: sb.signal(n))
    try:
        return sb.wait()
    except BaseException:
        if sb.returncode is None:
            sb.kill()
            try:
                sb.wait()
            except SandboxError:
                pass
        raise
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


# --- the children (never return; every path ends in os._exit) ------------------------------
# After pivot_root the host's Python library is out of reach: nothing below may import.

def _report(w: int, e: BaseException) -> None:
    if isinstance(e, SandboxError):
        msg = str(e)
    elif isinstance(e, OSError):
        msg = f"{e.strerror}: {e.filename}" if e.filename else str(e.strerror or e)
    else:
        msg = f"internal error in the sandbox: {type(e).__name__}: {e}"
    try:
        os.write(w, ("E " + msg.replace("\n", " ") + "\n").encode())
    except OSError:
        pass


def _status(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


def _forward_to(pid_holder: list) -> None:
    def handler(sig, _frame):
        if pid_holder:
            try:
                os.kill(pid_holder[0], sig)
            except ProcessLookupError:
                pass
    for sig in FORWARDED_SIGNALS:
        signal.signal(sig, handler)


def _close_fds_except(keep: list[int]) -> None:
    low = 3
    for fd in sorted(k for k in keep if k >= 3):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 20)


def _keeper(spec: SandboxSpec, plan: rootfs.MountPlan, w: int, r: int, parent: int, csock) -> None:
    code = 125
    try:
        signal.set_wakeup_fd(-1)
        target: list[int] = []
        _forward_to(target)
        kernel.prctl(kernel.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(137)
        os.close(r)
        fds = [spec.stdin, spec.stdout, spec.stderr]
        dups = [os.dup(fd) if fd is not None else None for fd in fds]
        for i, fd in enumerate(dups):
            if fd is not None:
                os.dup2(fd, i, inheritable=True)
        if w < 3:
            w = os.dup(w)
        _close_fds_except([w] + ([csock.fileno()] if csock is not None else []))
        os.set_inheritable(w, False)
        os.setsid()
        flags = kernel.CLONE_NEWNS | kernel.CLONE_NEWPID | kernel.CLONE_NEWUTS | kernel.CLONE_NEWIPC
        if spec.network == "none":
            flags |= kernel.CLONE_NEWNET
        kernel.unshare(flags)
        pid1 = os.fork()
        if pid1 == 0:
            _init(spec, plan, w, csock)
        target.append(pid1)
        _, status = os.waitpid(pid1, 0)
        code = _status(status)
    except BaseException as e:  # noqa: BLE001 - reported to the caller as one line
        _report(w, e)
    os._exit(code)


def _set_title(title: str) -> None:
    """Show pid 1 as `title` in the container's ps and /proc/1/cmdline, not the host python."""
    kernel.prctl(kernel.PR_SET_NAME, kernel.c_string(title[:15]))
    with open("/proc/self/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    start, end = int(fields[45]), int(fields[46])   # arg_start, arg_end (stat fields 48, 49)
    if end > start:
        # a non-NUL last byte makes the kernel read only up to the first NUL (setproctitle style)
        n = end - start
        kernel.overwrite(start, title.encode()[:n - 2].ljust(n - 1, b"\0") + b" ")


def _init(spec: SandboxSpec, plan: rootfs.MountPlan, w: int, csock) -> None:
    code = 125
    try:
        kernel.prctl(kernel.PR_SET_PDEATHSIG, signal.SIGKILL)
        kernel.prctl(kernel.PR_SET_DUMPABLE, 0)
        created: list = []
        try:
            rootfs.setup(plan, created)
        finally:
            for path, at, mt in created:
                os.write(w, f"C {path} {at} {mt}\n".encode())
        kernel.sethostname(spec.hostname)
        _set_title(INIT_TITLE)
        if spec.network == "none":
            kernel.loopback_up()
        user = users.resolve(spec.user)
        env = _environ(spec.env, user)
        pts = None
        if csock is not None:    # a pty of the container's own devpts, master sent to the caller
            master, pts = kernel.open_pty()
            csock.sendmsg([b"t"], [(1, 1, master.to_bytes(4, "little"))])   # SCM_RIGHTS
            os.close(master)
            csock.close()
        child: list[int] = []
        _forward_to(child)
        pid = os.fork()
        if pid == 0:
            _exec(spec, user, env, w, pts)
        child.append(pid)
        while True:
            reaped, status = os.waitpid(-1, 0)
            if reaped == pid:
                code = _status(status)
                break
    except BaseException as e:  # noqa: BLE001
        _report(w, e)
    os._exit(code)


def _environ(env: list[str], user: users.ExecUser) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in env:
        k, sep, v = item.partition("=")
        if k and sep:
            out[k] = v
    out.setdefault("PATH", DEFAULT_PATH)
    out.setdefault("HOME", user.home or "/")
    return out


def _look_path(name: str, env: dict[str, str]) -> str:
    """Go's exec.LookPath as runc uses it: PATH search for a regular file with an x bit."""
    if "/" in name:
        try:
            os.stat(name)
        except OSError as e:
            raise _ExecFailure(127, f'exec: "{name}": stat {name}: {e.strerror.lower()}') from None
        return name
    for d in env.get("PATH", "").split(":"):
        p = os.path.join(d or ".", name)
        try:
            st = os.stat(p)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
            return p
    raise _ExecFailure(127, f'exec: "{name}": executable file not found in $PATH')


class _ExecFailure(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def _exec(spec: SandboxSpec, user: users.ExecUser, env: dict[str, str], w: int, pts: str | None) -> None:
    code = 125
    try:
        for sig in FORWARDED_SIGNALS + (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.setsid()
        if pts is not None:
            fd = os.open(pts, os.O_RDWR)
            kernel.ioctl_int(fd, TIOCSCTTY, 0)
            for i in (0, 1, 2):
                os.dup2(fd, i)
            if fd > 2:
                os.close(fd)
        try:
            if spec.make_cwd:
                os.makedirs(spec.cwd, mode=0o755, exist_ok=True)
            os.chdir(spec.cwd)
        except OSError as e:
            raise SandboxError(f"cannot change to working directory {spec.cwd}: "
                               f"{(e.strerror or '').lower()}") from None
        cwd = os.getcwd()
        if not cwd.startswith("/"):
            raise SandboxError(f"working directory {spec.cwd} is outside the container")
        kernel.drop_bounding(DEFAULT_CAP_MASK, kernel.cap_last_cap())
        kernel.prctl(kernel.PR_CAP_AMBIENT, kernel.PR_CAP_AMBIENT_CLEAR_ALL)
        kernel.capset(DEFAULT_CAP_MASK, DEFAULT_CAP_MASK, 0)
        os.setgroups(user.sgids)
        os.setresgid(user.gid, user.gid, user.gid)
        os.setresuid(user.uid, user.uid, user.uid)
        try:
            path = _look_path(spec.argv[0], env)
        except _ExecFailure as f:
            code = f.code
            os.write(2, f"pybuild: error: {f}\n".encode())
            os._exit(code)
        kernel.prctl(kernel.PR_SET_DUMPABLE, 0)
        os.closerange(3, w)
        os.closerange(w + 1, 1 << 20)
        try:
            os.execve(path, spec.argv, env)
        except OSError as e:
            code = 127 if e.errno == errno.ENOENT else 126
            reason = "permission denied" if e.errno == errno.EACCES else (e.strerror or "").lower()
            os.write(2, f'pybuild: error: exec: "{spec.argv[0]}": {reason}\n'.encode())
    except BaseException as e:  # noqa: BLE001
        _report(w, e)
    os._exit(code)
