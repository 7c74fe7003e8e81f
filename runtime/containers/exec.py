"""`exec`: run a command inside a running container, as runc exec does, without a daemon.

    caller ── A   joins the container's ipc, uts, net, pid and mount namespaces (setns on
               │  /proc/<its pid 1>/ns/*), chroots into its root, with -t opens a pty of the
               │  container's devpts (its master goes back to the caller, as pid 1's does for
               │  `run -t`), waits for B, exits with B's status
               └─ B  pid N of the container's pid namespace: joins the container's cgroups (the
                     cgroup.procs files of pid 1's, opened on the host before any setns), so
                     `top`, stats and limits cover it; cwd, the container's seccomp filter
                     and no_new_privs (runtime.seccomp.policy), the container's capability set
                     (runtime.caps), uid/gid/groups from the container's passwd/group, only fds
                     0-2 (the pty's slave as its controlling terminal with -t), non-dumpable,
                     execs argv with runc's PATH lookup

The namespace files are opened before any setns (the host's /proc is out of sight after the
mount namespace changes), and A is a fresh fork, single-threaded as setns(CLONE_NEWNS) needs.
With `detach` A first forks itself away (the caller reaps the short-lived fork at once) and
stays B's parent outside the container, as docker's shim is: B's ppid inside is 0 and it is never
left as a zombie to a pid 1 that reaps nothing (the command is pid 1 now, e.g. `sleep`).
The command's own rules (environment, PATH lookup, docker's 126/127 messages) are
runtime.process's, called from here so `run` and `exec` cannot disagree.
"""
from __future__ import annotations

import os
import signal

from runtime import caps, cgroups, kernel, process, tty, users
from runtime.errors import ContainerError, SandboxError
from runtime.seccomp import policy as seccomp

NAMESPACES = (("ipc", kernel.CLONE_NEWIPC), ("uts", kernel.CLONE_NEWUTS),
              ("net", kernel.CLONE_NEWNET), ("pid", kernel.CLONE_NEWPID),
              ("mnt", kernel.CLONE_NEWNS))


def run(pid1: int, argv: list[str], env: list[str], cwd: str, user: str, *,
        detach: bool = False, stdin: int | None = None, terminal: bool = False,
        security_opt: list[str] | None = None, privileged: bool = False,
        capmask: int = caps.DEFAULT_CAP_MASK, detach_keys: bytes | None = None,
        ulimits: list[dict] | None = None, group_add: list[str] | None = None,
        oom_score_adj: int | None = None) -> int:
    """Run argv in the namespaces, root and cgroups of the process `pid1` (a container's pid 1,
    host pid); return its exit status (128+n for signal n; 0 at once with `detach`).
    terminal: a pty in the container, relayed to this process's stdout (and stdin when given).
    capmask: the command's capabilities (runtime.caps.mask of the container's flags).
    ContainerError when the container is gone; SandboxError (one line) when the command cannot
    be set up. security_opt, privileged: the container's (its record's): the same seccomp
    filter (none when privileged, as docker) and no_new_privs as its pid 1 got. detach_keys:
    typed on the terminal, they raise tty.Detached and the command runs on (_let_run).
    ulimits: the container's --ulimit (its record's), set as on its pid 1 (runc exec); so are
    group_add (--group-add: after the user's groups) and oom_score_adj (--oom-score-adj)."""
    secure = seccomp.policy(security_opt, capmask, privileged)
    if ulimits:         # imported on the host: after the mount setns nothing more can be
        from runtime import ulimits as _ulimits
        _ulimits.load()
    fds: list[int] = []
    try:
        for name, _ in NAMESPACES:
            fds.append(os.open(f"/proc/{pid1}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC))
        root = os.open(f"/proc/{pid1}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fds.append(root)
        joins = [os.open(os.path.join(d, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
                 for d in cgroups.of_process(pid1)]
    except OSError:
        for fd in fds:
            os.close(fd)
        raise ContainerError("the container is not running (its pid 1 is gone)") from None
    terminal = terminal and not detach
    psock, csock = tty.channel() if terminal else (None, None)
    r, w = os.pipe2(os.O_CLOEXEC)
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    stdio = [devnull, devnull, devnull] if detach else [stdin if stdin is not None else devnull, 1, 2]
    pid = os.fork()
    if pid == 0:
        _joiner(fds[:-1], root, joins, stdio, argv, env, cwd, user, w, detach, csock,
                ulimits or [],
                secure, capmask, (group_add or [], oom_score_adj))  # never returns
    for fd in fds + joins + [w, devnull]:
        os.close(fd)
    master = None
    if csock is not None:
        csock.close()
        master = tty.receive_master(psock)
    forward = {}
    for sig in process.FORWARDED_SIGNALS:
        if not (sig == signal.SIGWINCH and master is not None):     # the relay follows it
            forward[sig] = signal.signal(sig, lambda s, _f: _kill(pid, s))
    try:
        if master is not None:
            try:
                tty.relay(master, pid, stdin is not None, detach_keys)
            except tty.Detached:    # --- attach: exec -it's detach keys ---
                _let_run(master, pid)
                os.close(r)
                raise
            finally:
                os.close(master)
        _, status = os.waitpid(pid, 0)
    finally:
        for sig, old in forward.items():
            signal.signal(sig, old)
    with os.fdopen(r, "rb") as f:
        error = f.read().decode(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    code = code if code >= 0 else 128 - code
    if error.startswith("E "):
        raise SandboxError(error[2:].strip())
    return code


def _let_run(master: int, joiner: int) -> None:
    """After a detach: a process of its own (out of our session, holding nothing else) reads
    the pty master until the command has closed it, so the command runs on, its output
    dropped, as docker exec's does once detached; the joiner leaves our process group, so the
    SIGHUP of our terminal going away is not relayed to the command."""
    try:
        os.setpgid(joiner, joiner)
    except OSError:
        pass
    pid = os.fork()
    if pid == 0:
        try:
            if os.fork() == 0:
                os.setsid()
                devnull = os.open(os.devnull, os.O_RDWR)
                for i in (0, 1, 2):
                    os.dup2(devnull, i)
                close_except([master])
                try:
                    while os.read(master, 65536):
                        pass
                except OSError:     # EIO: the last slave fd is closed
                    pass
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
# --- end attach ---


def close_except(keep) -> None:
    """Close every fd of this process but 0-2 and `keep`."""
    lo = 3
    for fd in sorted({fd for fd in keep if fd >= 3}):
        os.closerange(lo, fd)
        lo = fd + 1
    os.closerange(lo, 1 << 20)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _report(w: int, e: BaseException) -> None:
    msg = str(e) if isinstance(e, SandboxError) else (
        f"{e.strerror}: {e.filename}" if isinstance(e, OSError) and e.filename else
        str(getattr(e, "strerror", None) or e))
    try:
        os.write(w, ("E " + msg.replace("\n", " ") + "\n").encode())
    except OSError:
        pass


# --- the children (never return). After the chroot nothing may be imported. ----------------

def _joiner(nsfds, root, joins, stdio, argv, env, cwd, user, w, detach, csock, limits, secure,
            capmask, extra) -> None:
    code = 126
    try:
        if extra[1] is not None:        # the container's --oom-score-adj, inherited by B
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write(str(extra[1]))
        if detach and os.fork() != 0:
            os._exit(0)             # the caller returns; this orphan waits for B on the host
        for i, fd in enumerate(stdio):
            os.dup2(fd, i, inheritable=True)
        # before the first setns: nothing of the host may be reached from inside through this
        # process (runc CVE-2016-9962): not ptrace-able nor its /proc/<pid>/fd open-able, and
        # holding only stdio and what joining needs (never the caller's or a supervisor's fds)
        kernel.prctl(kernel.PR_SET_DUMPABLE, 0)
        close_except([w, root, *nsfds, *joins] + ([csock.fileno()] if csock is not None else []))
        for fd, (_, kind) in zip(nsfds, NAMESPACES, strict=True):
            kernel.setns(fd, kind)
        os.fchdir(root)
        os.chroot(".")
        pts = tty.send_new_pty(csock) if csock is not None else None
        child = os.fork()           # the first process that is inside the pid namespace
        if child == 0:
            _command(argv, env, cwd, user, w, detach, joins, pts, secure, capmask, limits,
                     extra[0])
        if detach:
            os.close(w)             # the caller reads it to its end: B's exec or error
            for sig in process.FORWARDED_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            os.waitpid(child, 0)
            os._exit(0)
        for sig in process.FORWARDED_SIGNALS:
            signal.signal(sig, lambda s, _f: _kill(child, s))
        _, status = os.waitpid(child, 0)
        code = os.waitstatus_to_exitcode(status)
        code = code if code >= 0 else 128 - code
    except BaseException as e:  # noqa: BLE001 - reported to the caller as one line
        _report(w, e)
    os._exit(code)


def _command(argv, env, cwd, user, w, detach, joins, pts, secure, capmask, limits,
             group_add) -> None:
    code = 126
    try:
        for fd in joins:            # "0": this process, into the container's cgroups
            os.write(fd, b"0")
        for sig in process.FORWARDED_SIGNALS + (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        if detach or pts is not None:
            os.setsid()
        if pts is not None:
            tty.become_controlling(pts)
        os.umask(0o022)         # runc exec's default, as the container's pid 1 got
        if limits:
            from runtime import ulimits

            ulimits.apply(limits)
        who = users.resolve(user, with_gid=True)
        if group_add:
            who.sgids = who.sgids + [g for g in users.additional_groups(group_add)
                                     if g not in who.sgids]
        environ = process._environ(env, who)
        try:
            os.chdir(cwd)
        except OSError as e:
            raise SandboxError(f"cannot change to working directory {cwd}: "
                               f"{(e.strerror or '').lower()}") from None
        secure.before_drop()
        caps.drop_to(capmask, who)
        try:
            path = process._look_path(argv[0], environ)
        except process._ExecFailure as f:
            os.write(2, f"pybuild: error: {f}\n".encode())
            os._exit(f.code)
        kernel.prctl(kernel.PR_SET_DUMPABLE, 0)
        close_except([w])
        secure.before_exec()
        try:
            os.execve(path, argv, environ)
        except OSError as e:
            code = 127 if e.errno == 2 else 126
            reason = "permission denied" if e.errno == 13 else (e.strerror or "").lower()
            os.write(2, f'pybuild: error: exec: "{argv[0]}": {reason}\n'.encode())
    except BaseException as e:  # noqa: BLE001
        _report(w, e)
    os._exit(code)
