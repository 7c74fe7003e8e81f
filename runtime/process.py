"""The sandbox's process tree: start it, get a handle, wait for it, signal it.

    caller ── A "keeper"   host pid ns; own session; unshare(mnt,pid,uts,ipc[,net]); moves B
               │           into the container's cgroups (staying out itself), forwards signals
               │           to B, waits for it, exits with its status
               └─ B        pid 1 of the new pid ns: mounts the rootfs, pivot_root, hostname, pty,
                           cwd, waits until A has moved it into its cgroups, then loads its
                           seccomp filter (runtime.seccomp.policy: runc's order), drops to
                           its capabilities (Docker's 14, or --cap-add/--cap-drop/--privileged's:
                           runtime.caps), uid/gid/groups, closes every fd but 0-2,
                           becomes non-dumpable and execs argv itself
                           (docker's, runc's and BuildKit's RUN: the command is pid 1)

With spec.init (`run --init`, docker's tini) B stays a small init instead: it forwards signals,
reaps zombies and exits with its child C's status, C being the command set up as above.

All plain os.fork, no re-exec (measured fastest, bench/). A and B die with their parent
(PR_SET_PDEATHSIG, set again after a change of uid), and when B (pid 1) exits the kernel kills
everything left in the namespace, so nothing outlives the process that called `start`. As pid 1
the command gets the kernel's pid-1 rules: a signal it has no handler for is not delivered
(SIGTERM to `sleep` is ignored; `stop` falls back to SIGKILL), as under docker. Nothing here
assumes the caller is in the foreground: it installs no signal handler and touches no terminal
(that is `runtime.sandbox`'s job for `pybuild run`), so a detached container's supervisor starts
the same tree.

Errors in A/B/C travel back over a close-on-exec pipe as one line and surface as SandboxError
from `wait`; a command that cannot be executed exits 127/126 with docker's message on the
container's stderr, as docker does.
"""
from __future__ import annotations

import _signal as signal  # the C module `signal` wraps: same calls, int constants, no enum
import errno
import os
import stat

from runtime import caps, cgroups, kernel, rootfs, tty, users
from runtime import spec as specs
from runtime.errors import SandboxError
from runtime.privileges import require_root
from runtime.rundir import RunDir
from runtime.seccomp import policy as seccomp
from runtime.spec import SandboxSpec

INIT_TITLE = "pybuild-init"
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                     signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH)


class ProcessTree:
    """A started sandbox: `pid` is the keeper (A) in the caller's pid namespace; `tty` the pty
    master when spec.tty (the caller closes it)."""

    def __init__(self, pid: int, errfd: int, rundir: RunDir, cgroup: list[str] | None = None,
                 started: int | None = None):
        self.pid = pid
        self._errfd = errfd
        self._rundir = rundir
        self.cgroup = cgroup or []       # its cgroup dirs (devices; spec.resources), removed in wait
        self.returncode: int | None = None
        self.tty: int | None = None
        self._started = started     # EOF once the command is exec'd (or its set-up failed)
        self._early = b""                    # what `started` read off the error pipe

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

    def abort(self) -> None:
        """Kill and reap the tree on a failure path: what it set up is undone, and its own
        set-up error (if any) gives way to the failure being raised."""
        self.kill()
        try:
            self.wait()
        except SandboxError:
            pass

    def wait(self) -> int:
        """Wait for the command; return its exit status (128+n when killed by signal n)."""
        if self.returncode is not None:
            return self.returncode
        _, status = os.waitpid(self.pid, 0)
        self.returncode = _status(status)
        self._close_started()
        cgroups.remove(self.cgroup)
        error, created, refused = self._messages()
        self._rundir.finish(created, collect=not error)
        if refused:     # the kernel refused the rootfs's overlay: the next run probes again
            from runtime.snapshotter import forget
            forget(self._rundir.base)
        if error:
            raise SandboxError(error)
        return self.returncode

    def started(self, timeout: float | None = None) -> str | None:
        """Block until the command has been exec'd (docker run -d's "started"), or the set-up
        failed, or timeout passed; the set-up's error line, else None (an exec failure,
        127/126, is the command's own exit, on its stderr)."""
        if self._started is None:
            return None
        # run -d's supervisor waits here; a foreground run never does
        import select

        select.select([self._started], [], [], timeout)
        self._close_started()
        os.set_blocking(self._errfd, False)
        try:
            while True:
                b = os.read(self._errfd, 65536)
                if not b:
                    break
                self._early += b
        except BlockingIOError:
            pass
        finally:
            os.set_blocking(self._errfd, True)
        return _parse(self._early)[0]

    def _close_started(self) -> None:
        if self._started is not None:
            os.close(self._started)
            self._started = None

    def _messages(self) -> tuple[str | None, list, bool]:
        chunks = [self._early]
        while True:
            b = os.read(self._errfd, 65536)
            if not b:
                break
            chunks.append(b)
        os.close(self._errfd)
        return _parse(b"".join(chunks))


def _parse(data: bytes) -> tuple[str | None, list, bool]:
    """The error pipe's lines: the first `E message`, the `C path atime mtime` entries, and
    whether an `O` said the kernel refused the rootfs's overlay mount."""
    error, created, refused = None, [], False
    for line in data.decode(errors="replace").splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "E" and error is None:
            error = rest
        elif kind == "C":
            path, at, mt = rest.rsplit(" ", 2)
            created.append((path, int(at), int(mt)))
        elif kind == "O":
            refused = True
    return error, created, refused


def start(spec: SandboxSpec) -> ProcessTree:
    """Start the sandbox and return at once; call .wait() for the exit status.

    On the bridge network the keeper stops after its unshare until the host side has
    connected its netns (runtime.network.attach): the command never runs without its network,
    and a failed setup kills the tree and undoes what was made. `tree.network` is then the
    Attachment (its address and published ports: `.info()`)."""
    require_root()
    specs.validate(spec)
    secure = _policy(spec)
    if spec.ulimits:    # imported here: after pivot_root the host's modules cannot be found
        from runtime import ulimits
        ulimits.load()
    net = None
    if spec.network == "bridge":
        from runtime.network.attach import Attachment
        net = Attachment(spec.ports, spec.endpoint)
    fds: list[int] = []
    psock = csock = None
    cgroup: list[str] = []
    procs: list[tuple[str, int]] = []
    sync = None
    rundir = None
    try:
        capmask, rules, devices = _privileges(spec)
        cgroup = cgroups.create(spec.resources, rules)  # devices: every sandbox; the rest: containers
        if cgroup:
            # the keeper's handles to move pid 1 in with, opened before `prime` holds the
            # kernel's cgroup locks, and before pid 1's pivot_root hides the hierarchies
            procs = cgroups.opened(cgroup)
            fds += [fd for _, fd in procs]
            cgroups.prime(cgroup[0])    # its grace period runs while the run dir is made
        rundir = RunDir(spec, net)      # from here on, rundir.remove() releases the network
        rundir.plan.devices, rundir.plan.privileged = devices, spec.privileged
        r, w = os.pipe2(os.O_CLOEXEC)
        started_r, started_w = os.pipe2(os.O_CLOEXEC)
        fds += [r, w, started_r, started_w]
        if net is not None:
            ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
            go_r, go_w = os.pipe2(os.O_CLOEXEC)
            fds += [ready_r, ready_w, go_r, go_w]
            sync = (ready_w, go_r)
        if spec.tty:
            psock, csock = tty.channel()
        parent = os.getpid()
        pid = os.fork()
    except BaseException:
        for fd in fds:
            os.close(fd)
        for sock in (psock, csock):
            if sock is not None:
                sock.close()
        cgroups.remove(cgroup)
        if rundir is not None:
            rundir.remove()
        elif net is not None:
            net.release()
        raise
    if pid == 0:
        _keeper(spec, rundir.plan, w, r, parent, csock, procs, sync, started_w, secure,
                capmask)  # never returns
    os.close(w)
    os.close(started_w)
    for _, fd in procs:
        os.close(fd)
    tree = ProcessTree(pid, r, rundir, cgroup, started_r)
    if net is not None:
        tree.network = net
        os.close(ready_w)
        os.close(go_r)
        try:
            if os.read(ready_r, 1) == b"1":     # else the keeper failed: wait() says why
                net.connect(pid)
                os.write(go_w, b"1")
        except BaseException:
            tree.abort()
            raise
        finally:
            os.close(ready_r)
            os.close(go_w)
    if psock is not None:
        csock.close()
        tree.tty = tty.receive_master(psock)
    return tree


def _privileges(spec: SandboxSpec) -> tuple[int, list[str] | None, list[dict]]:
    """(capability mask, device cgroup rules: None = all, the --device nodes pid 1 makes) of
    spec, checked before anything is made."""
    capmask = caps.mask(spec.cap_add, spec.cap_drop, spec.privileged)
    if not spec.devices and not spec.privileged:
        return capmask, [*cgroups.DEVICE_RULES, *spec.device_cgroup_rules], []
    devices = rootfs.device_nodes(spec.devices, spec.privileged)
    if spec.privileged:
        return capmask, None, devices
    extra = [cgroups.device_rule(n) for n in devices]
    return (capmask, list(cgroups.DEVICE_RULES) + [r for r in extra if r]
            + list(spec.device_cgroup_rules), devices)


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


def _policy(spec: SandboxSpec) -> seccomp.Policy:
    """The seccomp filter and no_new_privs the command gets (runtime.seccomp), prepared before
    the fork: its profile's conditional rules see the capabilities the command keeps, and
    --privileged (a `privileged` spec field) runs unconfined, as in docker."""
    return seccomp.policy(spec.security_opt, caps.mask(spec.cap_add, spec.cap_drop, spec.privileged),
                          spec.privileged)


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
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 20)


def _keeper(spec: SandboxSpec, plan: rootfs.MountPlan, w: int, r: int, parent: int, csock,
            procs: list[tuple[str, int]], sync: tuple[int, int] | None, started: int,
            secure: seccomp.Policy, capmask: int) -> None:
    code = 125
    try:
        signal.set_wakeup_fd(-1)
        target: list[int] = []
        _forward_to(target)
        kernel.prctl(kernel.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(137)
        os.close(r)
        if started < 3:
            started = os.dup(started)
        procs = [(p, fd if fd >= 3 else os.dup(fd)) for p, fd in procs]
        fds = [spec.stdin, spec.stdout, spec.stderr]
        dups = [os.dup(fd) if fd is not None else None for fd in fds]
        for i, fd in enumerate(dups):
            if fd is not None:
                os.dup2(fd, i, inheritable=True)
        if w < 3:
            w = os.dup(w)
        _close_fds_except([w, started] + ([csock.fileno()] if csock is not None else [])
                          + list(sync or ()) + [fd for _, fd in procs])
        os.set_inheritable(w, False)
        os.setsid()
        flags = kernel.CLONE_NEWNS | kernel.CLONE_NEWPID | kernel.CLONE_NEWIPC
        if not spec.uts_host:
            flags |= kernel.CLONE_NEWUTS
        if spec.network != "host":
            flags |= kernel.CLONE_NEWNET
        kernel.unshare(flags)
        if sync is not None:            # bridge: the caller connects our netns, then says go
            os.write(sync[0], b"1")
            if os.read(sync[1], 1) != b"1":
                os._exit(125)
            os.close(sync[0])
            os.close(sync[1])
        alive_r, alive_w = os.pipe2(os.O_CLOEXEC)   # pid 1 sees EOF once the keeper is gone
        joined_r, joined_w = os.pipe2(os.O_CLOEXEC) if procs else (None, None)
        pid1 = os.fork()
        if pid1 == 0:
            os.close(alive_w)
            for _, fd in procs:
                os.close(fd)
            if joined_w is not None:
                os.close(joined_w)
            _init(spec, plan, w, csock, alive_r, started, joined_r, secure, capmask)
        os.close(alive_r)
        os.close(started)       # pid 1 holds it until the command is exec'd
        target.append(pid1)
        moved = _move_in(pid1, procs, joined_r, joined_w, w) if procs else True
        _, status = os.waitpid(pid1, 0)
        code = _status(status) if moved else 125
    except BaseException as e:  # noqa: BLE001 - reported to the caller as one line
        _report(w, e)
    os._exit(code)


def _move_in(pid1: int, procs: list[tuple[str, int]], joined_r: int, joined_w: int, w: int) -> bool:
    """Move pid 1 into the container's cgroups while it sets up its rootfs (the first write to a
    v1 cgroup.procs waits out an RCU grace period, ~8 ms: off the critical path here), then
    tell it "joined"; it waits for that before the command exists. The keeper itself stays
    out. False when the kernel refused: that is the sandbox's error, and pid 1, seeing EOF,
    ends (125). A pid 1 that ended first (its set-up failed) keeps its own error and status."""
    os.close(joined_r)
    try:
        try:
            cgroups.move(procs, pid1)
        except SandboxError as e:
            if os.waitid(os.P_PID, pid1, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
            _report(w, e)
            return False
        try:
            os.write(joined_w, b"1")
        except BrokenPipeError:     # pid 1 already ended: wait says why
            pass
        return True
    finally:
        os.close(joined_w)


def _joined(fd: int | None) -> None:
    """Pid 1: wait until the keeper has moved it into its cgroups (`_move_in`); end quietly
    (125; the keeper reported why) when it could not."""
    if fd is None:
        return
    ok = os.read(fd, 1) == b"1"
    os.close(fd)
    if not ok:
        os._exit(125)


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


def _init(spec: SandboxSpec, plan: rootfs.MountPlan, w: int, csock, alive: int, started: int,
          joined: int | None, secure: seccomp.Policy,
          capmask: int) -> None:
    code = 125
    try:
        kernel.prctl(kernel.PR_SET_PDEATHSIG, signal.SIGKILL)
        if spec.oom_score_adj is not None:      # docker --oom-score-adj (the init's guard after)
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write(str(spec.oom_score_adj))
        oom_adj = _oom_guard(spec.init and joined is not None)
        kernel.prctl(kernel.PR_SET_DUMPABLE, 0)
        created: list = []
        try:
            rootfs.setup(plan, created)
        except SandboxError as e:
            if getattr(e, "overlay_refused", False):
                os.write(w, b"O\n")    # the overlay: wait() has its cached answer probed again
            raise
        finally:
            for path, at, mt in created:
                os.write(w, f"C {path} {at} {mt}\n".encode())
        if not spec.uts_host:           # --uts host: the host's names stay
            kernel.sethostname(spec.hostname)
            if spec.domainname:
                kernel.setdomainname(spec.domainname)
        if spec.network == "none":
            kernel.loopback_up()
        user = users.resolve(spec.user, with_gid=spec.gid_in_groups)
        if spec.group_add:
            user.sgids = user.sgids + [g for g in users.additional_groups(spec.group_add)
                                       if g not in user.sgids]
        env = _environ(spec.env, user)
        pts = tty.send_new_pty(csock) if csock is not None else None
        if not spec.init:
            _exec(spec, user, env, w, pts, None, alive, joined, secure, capmask)     # the command is pid 1
        _set_title(INIT_TITLE)
        child: list[int] = []
        _forward_to(child)
        _joined(joined)         # in its cgroups before the command is forked
        pid = os.fork()
        if pid == 0:
            _exec(spec, user, env, w, pts, oom_adj, alive, None, secure, capmask)
        child.append(pid)
        os.close(started)       # the command's copy closes as it execs
        secure.before_drop()    # the init is filtered as the command is (docker's tini is)
        secure.before_exec()
        while True:
            reaped, status = os.waitpid(-1, 0)
            if reaped == pid:
                code = _status(status)
                break
    except BaseException as e:  # noqa: BLE001
        _report(w, e)
    os._exit(code)


def _oom_guard(init: bool) -> str | None:
    """An init (spec.init) in a cgroup keeps out of the OOM killer's way (docker's shim is -999)
    so a memory limit kills the command. Return the score the command gets back (the caller's),
    or None when nothing changed."""
    if not init:
        return None
    with open("/proc/self/oom_score_adj") as f:
        old = f.read().strip()
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("-999")
    except PermissionError:     # no CAP_SYS_RESOURCE: the killer may pick pid 1; still 137
        return None
    return old


def _environ(env: list[str], user: users.ExecUser) -> dict[str, str]:
    """The command's environment: later entries win; PATH defaults to docker's and HOME to
    the user's home dir (as runc sets it)."""
    out: dict[str, str] = {}
    for item in env:
        k, sep, v = item.partition("=")
        if k and sep:
            out[k] = v
    out.setdefault("PATH", specs.DEFAULT_PATH)
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


def _still_parented(alive: int) -> None:
    """A change of uid clears PR_SET_PDEATHSIG: set it again, then make sure the keeper did not
    die in between (its end of the `alive` pipe closed), so the command never outlives it."""
    kernel.prctl(kernel.PR_SET_PDEATHSIG, signal.SIGKILL)
    os.set_blocking(alive, False)       # nobody writes: EOF (b"") once the keeper is gone
    try:
        gone = os.read(alive, 1) == b""
    except BlockingIOError:
        gone = False
    if gone:
        os._exit(137)


class _ExecFailure(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def _exec(spec: SandboxSpec, user: users.ExecUser, env: dict[str, str], w: int, pts: str | None,
          oom_adj: str | None, alive: int, joined: int | None, secure: seccomp.Policy,
          capmask: int) -> None:
    code = 125
    try:
        if oom_adj is not None:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write(oom_adj)
        for sig in FORWARDED_SIGNALS + (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.setsid()
        os.umask(0o022)     # runc's default: the caller's umask never reaches the container
        if pts is not None:
            tty.become_controlling(pts)
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
        _joined(joined)         # the command never runs outside its cgroups
        if spec.ulimits:        # --ulimit: while CAP_SYS_RESOURCE may still be held (runc's order)
            from runtime import ulimits  # loaded by start(), before the pivot

            ulimits.apply(spec.ulimits)
        secure.before_drop()
        caps.drop_to(capmask, user)
        _still_parented(alive)
        try:
            path = _look_path(spec.argv[0], env)
        except _ExecFailure as f:
            code = f.code
            os.write(2, f"pybuild: error: {f}\n".encode())
            os._exit(code)
        kernel.prctl(kernel.PR_SET_DUMPABLE, 0)
        os.closerange(3, w)
        os.closerange(w + 1, 1 << 20)
        secure.before_exec()
        try:
            os.execve(path, spec.argv, env)
        except OSError as e:
            code = 127 if e.errno == errno.ENOENT else 126
            reason = "permission denied" if e.errno == errno.EACCES else (e.strerror or "").lower()
            os.write(2, f'pybuild: error: exec: "{spec.argv[0]}": {reason}\n'.encode())
    except BaseException as e:  # noqa: BLE001
        _report(w, e)
    os._exit(code)
