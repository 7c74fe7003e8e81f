"""The supervisor of one detached container (conmon's role), and `spawn`, which starts it.

`spawn` runs `python -I -S` on `main` as a child in its own session with stdio on /dev/null, so
it outlives the `pybuild run -d` that started it and holds none of its pipes; it waits only for
the one line saying the container runs (or why not). The supervisor then:
- enters a mount namespace of its own (what the snapshotter probes dies with it) and holds the
  image in the store's leases, so prune keeps its layers while it runs;
- starts the container's process tree (runtime.process.start) on the image's layer dirs with
  the upper/work dirs in the container's dir, stdin on /dev/null, stdout and stderr into pipes;
- writes what comes out of them to `<id>-json.log` in docker's json-file format, a line per
  object {"log": "...\\n", "stream": "stdout"|"stderr", "time": RFC3339Nano}, rotated as
  --log-opt max-size/max-file say (_Log); with -t the pty's output is its stdout; clients of
  `attach` and `start -a` get the output live, and type into the pty (-i -t) or the stdin pipe
  (-i), through runtime.containers.attach's socket (imported once a client comes);
- records running (its own cache.owner token, the tree's pid, start time) and re-execs itself as
  the lean `monitor` (same pid and start time; see _become_monitor), which runs the container's
  HEALTHCHECK probes if it has one (runtime.containers.health, imported only then), records
  exited with the exit code (128+N for signal N; 125 when the sandbox could not be set up, its
  error in state.json and on the log's stderr) and the finish time, then either applies the
  --restart policy (status restarting for docker's backoff, then a re-exec into `main` with the
  restart count: the same container dir, upper dir and log; see _restart) or removes the
  container when it was made with --rm, and exits. An end that `stop`/`kill`/`rm -f` asked for
  (state.STOP_REQUEST) is never restarted.
The overlay lives in the container's own mount namespace and goes with it; the run dir goes in
ProcessTree.wait; the upper dir stays for a later `start`/`commit` until `rm`.

Kept small (an idle supervisor is one of these per container): stdlib and the runtime's process
tree only, no site-packages (-S), never rich/lark/zstandard/pyroute2; after the re-exec only
json, select and runtime.containers.state (~11 MB RSS instead of ~15).
"""
from __future__ import annotations

import json
import os
import select
import sys

HERE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_CHUNK = 16 * 1024   # docker's json-file splits a line longer than its 16 KiB buffer


def spawn(root: str, cid: str, timeout: float = 30.0, client: int | None = None,
          winsize: bytes | None = None) -> str | None:
    """Start the supervisor of container `cid`; return None once it runs, else the error line.
    client: an attach connection (`start -a`) the supervisor serves from the start; winsize:
    the size its pty opens at (-t)."""
    import subprocess

    r, w = os.pipe()
    # --- attach: start -a's connection and window size ---
    extra = f", client={client}, winsize={winsize!r}" if client is not None else ""
    code = (f"import sys; sys.path.insert(0, {HERE!r}); "
            f"from runtime.containers.supervisor import main; main({root!r}, {cid!r}, {w}{extra})")
    try:
        subprocess.Popen([sys.executable, "-I", "-S", "-c", code], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/",
                         pass_fds=(w,) + ((client,) if client is not None else ()),
                         start_new_session=True)
    # --- end attach ---
    finally:
        os.close(w)
    try:
        ready, _, _ = select.select([r], [], [], timeout)
        line = os.read(r, 4096).decode(errors="replace").strip() if ready else ""
    finally:
        os.close(r)
    if line == "ok":
        return None
    if not ready:
        return f"the container's supervisor did not start within {timeout:.0f} s"
    return line.removeprefix("E ") or "the container's supervisor exited before it started the container"


class _Log:
    """The json-file log both streams write to, rotated as docker's json-file driver does with
    --log-opt max-size (bytes; 0 = never) and max-file: when the file has reached max-size it
    becomes `<log>.1` (`.1` becomes `.2`, ... up to max-file - 1), or with max-file 1 is
    truncated. A write error (a full disk) loses the line, never the container."""

    def __init__(self, fd: int, path: str, max_size: int = 0, max_file: int = 1):
        self.fd, self.path, self.max_size, self.max_file = fd, path, max_size, max(1, max_file)
        self.size = os.fstat(fd).st_size if max_size else 0

    def write(self, data: bytes) -> None:
        if self.max_size and self.size >= self.max_size:
            self._rotate()
        try:
            os.write(self.fd, data)
            self.size += len(data)
        except OSError:
            pass

    def _rotate(self) -> None:
        try:
            if self.max_file == 1:
                os.ftruncate(self.fd, 0)
            else:
                for i in range(self.max_file - 1, 1, -1):
                    try:
                        os.rename(f"{self.path}.{i - 1}", f"{self.path}.{i}")
                    except FileNotFoundError:
                        pass
                os.rename(self.path, self.path + ".1")
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
                os.close(self.fd)
                self.fd = fd
            self.size = 0
        except OSError:
            pass

    def close(self) -> None:
        os.close(self.fd)


class _LogWriter:
    """docker's json-file lines for one stream; a partial line waits for its newline."""

    def __init__(self, log: _Log, stream: str, now):
        self.log, self.stream, self.now, self.pending = log, stream, now, b""

    def feed(self, data: bytes) -> None:
        self.pending += data
        while True:
            nl = self.pending.find(b"\n")
            if nl < 0:
                if len(self.pending) >= _CHUNK:
                    self._emit(self.pending[:_CHUNK])
                    self.pending = self.pending[_CHUNK:]
                    continue
                return
            self._emit(self.pending[:nl + 1])
            self.pending = self.pending[nl + 1:]

    def close(self) -> None:
        if self.pending:
            self._emit(self.pending)
            self.pending = b""

    def _emit(self, chunk: bytes) -> None:
        line = json.dumps({"log": chunk.decode(errors="replace"), "stream": self.stream,
                           "time": self.now()}, separators=(",", ":")) + "\n"
        self.log.write(line.encode())


def main(root: str, cid: str, ready_fd: int, restarts: int | None = None, lock_fd: int = -1,
         backoff: float = 0.0, client: int = -1, winsize: bytes | None = None) -> None:
    """The supervisor's life; never returns (os._exit). `restarts` is None for a start (`run
    -d`, `start`); the restart policy comes back here with the count so far, the lock it holds
    and the current backoff (ready_fd -1: nobody waits for this start). client, winsize: see
    spawn."""
    code = 125
    try:
        if client >= 0:
            os.set_inheritable(client, False)
        code = _supervise(root, cid, ready_fd, restarts, lock_fd, backoff, client, winsize)
    except BaseException as e:  # noqa: BLE001 - reported through the ready pipe or state.json
        _tell(ready_fd, f"E {e}".replace("\n", " "))
    os._exit(code)


def _tell(fd: int, line: str) -> None:
    try:
        os.write(fd, (line + "\n").encode())
        os.close(fd)
    except OSError:
        pass


def _supervise(root: str, cid: str, ready_fd: int, restarts: int | None, lock_fd: int,
               backoff: float, client: int = -1, winsize: bytes | None = None) -> int:
    from cache.leases import Leases
    from runtime import mountns, process
    from runtime.containers.state import Containers, now
    from runtime.errors import SandboxError
    from runtime.spec import Resources, SandboxSpec

    os.chdir("/")
    mountns.enter_private()
    cs = Containers(root)
    c = cs.load(cid)
    if c is None:
        raise SandboxError(f"No such container: {cid}")
    if restarts is None:        # a start: a stop asked of the last run is forgotten (docker)
        _hold(c)
        c.clear_stop_request()
        restarts = 0
    else:
        c.lock_fd = lock_fd
        os.set_inheritable(lock_fd, False)
        if c.stop_requested:    # asked while this restart was on its way
            c.write_state(status="exited")
            return 0
    cfg = c.config
    Leases(root).hold(cfg["image_id"])
    upper, work = os.path.join(c.path, "upper"), os.path.join(c.path, "work")
    devnull = os.open(os.devnull, os.O_RDWR)
    stdin = devnull
    hold = None     # -i without -t: the write end, kept open, so the command sees no EOF
    if cfg.get("interactive") and not cfg.get("tty"):
        stdin, hold = os.pipe2(os.O_CLOEXEC)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    log = os.open(os.devnull if cfg.get("log_driver") == "none" else c.log_path,   # --log-driver
                  os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
    mounts = []
    if cfg.get("mounts"):
        from runtime.containers.volumes import to_spec
        mounts = to_spec(root, cfg["mounts"])
    network, endpoint, net_error, connected = cfg["network"], None, None, []
    # --- dns: every network of the record (a user network's eth0, `network connect`ed ones) ---
    if cfg.get("network_id") or cfg.get("endpoints"):
        from runtime.network import defs
        try:
            if cfg.get("network_id"):   # a user network: the bridge driver and its Endpoint
                endpoint = defs.endpoint(root, cfg, c.id, c.name)
                network = "bridge" if endpoint is not None else "none"  # disconnected from all
            connected = defs.connected(root, cfg, c.id, c.name) if network != "none" else []
        except SandboxError as e:
            network, net_error = "none", str(e)
    # --- end dns ---
    spec = SandboxSpec(lowerdirs=cfg["lowerdirs"], upperdir=upper, workdir=work, argv=cfg["argv"],
                       env=cfg["env"], cwd=cfg["cwd"], user=cfg["user"], hostname=cfg["hostname"],
                       network=network, ports=cfg.get("ports") or [], endpoint=endpoint,
                       extra_hosts=cfg.get("extra_hosts") or [], stdin=stdin, stdout=out_w, stderr=err_w,
                       tty=bool(cfg.get("tty")), make_cwd=True, mounts=mounts,
                       init=bool(cfg.get("init")), gid_in_groups=True,
                       readonly_rootfs=bool(cfg.get("read_only")),
                       security_opt=cfg.get("security_opt") or [],
                       resources=Resources(**cfg["resources"]) if cfg.get("resources") else None,
                       privileged=bool(cfg.get("privileged")), cap_add=cfg.get("cap_add") or [],
                       cap_drop=cfg.get("cap_drop") or [], devices=cfg.get("devices") or [],
                       # --- dns: --dns/--dns-search/--dns-option, --mac-address ---
                       dns=cfg.get("dns"), mac_address=cfg.get("mac_address") or "",
                       connected=connected, shm_size=cfg.get("shm_size") or 0,
                       ulimits=cfg.get("ulimits") or [],
                       domainname=cfg.get("domainname") or "", group_add=cfg.get("group_add") or [],
                       oom_score_adj=cfg.get("oom_score_adj"), sysctls=cfg.get("sysctls") or {},
                       device_cgroup_rules=cfg.get("device_cgroup_rules") or [],
                       uts_host=cfg.get("uts") == "host")
    if winsize and spec.tty:    # --- attach: start -a -i: the pty at the terminal's size ---
        from runtime import tty
        tty.initial_size = winsize
    try:
        if net_error is not None:
            raise SandboxError(net_error)
        tree = process.start(spec)
        problem = tree.started(timeout=60)      # `run -d` returns once the command is exec'd,
        if problem is not None:                 # and says why it could not be (bad -u, -w, ...)
            tree.abort()
            raise SandboxError(problem)
    except SandboxError as e:
        c.write_state(status="exited", exit_code=125, error=str(e), started=now(), finished=now())
        if cfg.get("auto_remove"):
            _auto_remove(cs, c)
        raise
    finally:
        for fd in {devnull, stdin, out_w, err_w}:
            os.close(fd)
    keep = [hold] if hold is not None else []
    if tree.tty is not None:      # -t: the pty's output is the log's stdout
        from runtime import tty
        peer = tty.hold_peer(tree.tty)      # so the master reads no EIO before the tree ends
        keep += [tree.tty] + ([peer] if peer is not None else [])
    # --- attach: every container's attach socket, -i's pipe and start -a's client ---
    from runtime.containers import attach as attaching
    try:
        listening = attaching.listen(c.path)
    except OSError:     # the container runs all the same, without attach
        listening = None
    attach = (listening, hold, client if client >= 0 else None)
    keep += [fd for fd in attach[:1] + attach[2:] if fd is not None]
    # --- end attach ---
    health = {}
    if cfg.get("healthcheck"):
        from runtime.containers.health import probe_argv
        if probe_argv(cfg["healthcheck"]):
            old = c.state.get("health") or {}
            health = {"health": {"Status": "starting", "FailingStreak": 0,
                                 "Log": old.get("Log") or []}}
    net = getattr(tree, "network", None)     # bridge: address and published ports
    from cache.owner import start_time
    c.write_state(status="running", supervisor=_token(), pid=tree.pid,
                  pid_start=start_time(tree.pid), started=now(),
                  exit_code=0, error=None, restart_count=restarts,
                  network=net.info() if net else None, **health)
    _tell(ready_fd, "ok")
    run = (restarts, backoff)
    # returns only if it cannot
    _become_monitor(root, cid, tree, out_r, err_r, log, c.lock_fd, run, keep, attach)
    return _monitor(cs, c, out_r, err_r, log, lambda: tree, c.lock_fd, run, tree.tty, attach)


def _become_monitor(root: str, cid: str, tree, out_r: int, err_r: int, log: int, lock: int,
                    run: tuple, extra: list[int], attach: tuple | None) -> None:
    """Re-exec this process as a lean monitor (the same pid and start time, so its cache.owner
    token, lease, lock and children stay; PR_SET_PDEATHSIG does not fire on exec): the modules
    that set the tree up (ctypes, the sandbox, the seccomp policy, ...) are not kept in memory
    for the container's whole life. The tree's handle travels pickled in a memfd and is read
    back only when the container has ended. Returns when the handle cannot be passed on."""
    import pickle

    try:
        data = pickle.dumps(tree)
    except Exception:  # noqa: BLE001 - keep supervising in this process
        return
    mem = os.memfd_create("pybuild-tree")
    os.write(mem, data)
    os.lseek(mem, 0, os.SEEK_SET)
    from runtime.network import proxy
    keep = (out_r, err_r, log, lock, tree._errfd, *extra) + proxy.handoff(tree)
    # --- dns: the embedded DNS server's sockets go to the monitor too ---
    if getattr(getattr(tree, "network", None), "dns_key", None):
        from runtime.network import dns
        keep += dns.handoff(tree)
    # --- end dns ---
    keep += (mem,)
    for fd in keep:
        os.set_inheritable(fd, True)
    code = (f"import sys; sys.path.insert(0, {HERE!r}); from runtime.containers.supervisor "
            f"import monitor; monitor({root!r}, {cid!r}, {out_r}, {err_r}, {log}, {mem}, {lock}, "
            f"{run!r}, {tree.tty}, {attach})")
    try:
        os.execv(sys.executable, [sys.executable, "-I", "-S", "-c", code])
    except OSError:
        for fd in keep[:-1]:
            os.set_inheritable(fd, False)
        os.close(mem)


def monitor(root: str, cid: str, out_r: int, err_r: int, log: int, mem: int, lock: int = -1,
            run: tuple = (0, 0.0), master: int | None = None, attach: tuple | None = None) -> None:
    """The lean supervisor after the re-exec: log the container's output, then record its end.
    Never returns."""
    try:
        from runtime.containers.state import Containers

        if os.environ.get("PYBUILD_PROXY"):     # proxy.handoff's: published ports, served here
            from runtime.network import proxy
            proxy.resume()
        # --- dns: the embedded DNS server (dns.handoff's), served here ---
        if os.environ.get("PYBUILD_DNS"):
            from runtime.network import dns
            dns.resume()
        # --- end dns ---
        cs = Containers(root)
        c = cs.load(cid)

        def tree():
            import pickle
            with os.fdopen(mem, "rb") as f:
                t = pickle.load(f)
            return t
        _monitor(cs, c, out_r, err_r, log, tree, lock, run, master, attach)
    finally:
        os._exit(0)


def _monitor(cs, c, out_r: int, err_r: int, log: int, get_tree, lock: int, run: tuple,
             master: int | None = None, attach: tuple | None = None) -> int:
    """Log the tree's output (its pty's with -t; attached clients served; health probed) until
    it ends; record the end, then apply the restart policy (see _restart) or remove a --rm
    container."""
    from runtime.containers.state import now, parse_time
    from runtime.errors import SandboxError

    checker = None
    if c is not None and (c.state.get("health") or {}).get("Status") == "starting":
        from runtime.containers.health import Checker
        checker = Checker(c, now, parse_time)
    cfg = c.config if c is not None else {}
    log = _Log(log, c.log_path if c is not None else "", cfg.get("log_max_size") or 0,
               cfg.get("log_max_file") or 1)
    err = _LogWriter(log, "stderr", now)
    out = _LogWriter(log, "stdout", now)
    clients = _pump({out_r: out, err_r: err}, master and (master, out), attach, checker,
                    bool(cfg.get("stdin_once")), bool(cfg.get("interactive")))
    if checker is not None:
        checker.close()
    error = None
    tree = get_tree()
    try:
        code = tree.wait()
    except SandboxError as e:
        code, error = tree.returncode or 125, str(e)
        err.feed(f"pybuild: error: {error}\n".encode())
    log.close()
    if clients is not None:     # --- attach: the clients learn the exit code ---
        clients.finish(code)
    if c is None:
        return 0
    try:
        health = c.state.get("health")
        ended = {"health": {**health, "Status": "unhealthy"}} if health else {}   # docker's SetStopped
        restarts, backoff = run
        again, backoff = _should_restart(c, code, restarts, backoff, parse_time)
        c.write_state(status="restarting" if again else "exited", exit_code=code, error=error,
                      finished=now(), **ended)
        if again:
            _restart(cs.root, c, restarts + 1, backoff, lock)
        elif c.config.get("auto_remove"):      # run -d --rm
            _auto_remove(cs, c)
    except (FileNotFoundError, SandboxError):
        pass    # removed while it ran (`rm -f` of a supervisor that did not stop)
    return 0


_BACKOFF_MAX = 60.0     # docker's restartmanager: 100 ms doubling up to a minute, reset after 10 s


def _should_restart(c, code: int, restarts: int, backoff: float, parse_time) -> tuple:
    """docker's RestartManager.ShouldRestart: (restart?, the wait before it)."""
    import time

    try:                # read again: `update --restart` may have changed it since the start
        with open(os.path.join(c.path, "config.json"), "rb") as f:
            c.config = json.load(f)
    except (OSError, ValueError):
        pass
    policy = c.config.get("restart") or {}
    name, most = policy.get("Name") or "no", policy.get("MaximumRetryCount") or 0
    try:
        ran = time.time() - parse_time(c.state["started"])
    except (KeyError, ValueError):
        ran = 0.0
    backoff = 0.0 if ran >= 10 else backoff
    backoff = 0.1 if backoff == 0 else min(backoff * 2, _BACKOFF_MAX)
    if c.stop_requested or name == "no":
        return False, backoff
    if name in ("always", "unless-stopped"):
        return True, backoff
    return name == "on-failure" and code != 0 and (most == 0 or restarts < most), backoff


def _restart(root: str, c, restarts: int, backoff: float, lock: int) -> None:
    """Wait `backoff` seconds (status restarting; a `stop` meanwhile ends it), then run the
    command again in the same container: re-exec into `main` with the lock still held."""
    import time

    end = time.monotonic() + backoff
    while time.monotonic() < end:
        if c.stop_requested:
            c.write_state(status="exited")
            return
        time.sleep(min(0.05, max(0.0, end - time.monotonic())))
    if c.stop_requested or not os.path.isdir(c.path):
        if os.path.isdir(c.path):
            c.write_state(status="exited")
        return
    os.set_inheritable(lock, True)
    code = (f"import sys; sys.path.insert(0, {HERE!r}); from runtime.containers.supervisor "
            f"import main; main({root!r}, {c.id!r}, -1, {restarts}, {lock}, {backoff!r})")
    # the last run's fds made inheritable for the monitor (-i's hold, the pty master and its
    # peer, the attach socket, proxy listeners) stay behind: `main` gets stdio and the lock
    os.closerange(3, lock)
    os.closerange(lock + 1, 1 << 20)
    try:
        os.execv(sys.executable, [sys.executable, "-I", "-S", "-c", code])
    except OSError as e:
        c.write_state(status="exited", error=f"cannot restart: {e.strerror}")


def _auto_remove(cs, c) -> None:
    """run --rm: the container goes, and its anonymous volumes with it (docker's rule)."""
    cs.remove(c)
    if any(m.get("anonymous") for m in c.config.get("mounts") or []):
        from runtime.containers.volumes import Volumes
        Volumes(cs.root).remove_anonymous(c.config["mounts"])


def _hold(c) -> None:
    """Hold the container's lock for the supervisor's life (inherited by nothing: close-on-exec
    and the tree keeps only its stdio), so two `start`s at once cannot run it twice."""
    import fcntl

    from runtime.errors import ContainerError

    fd = os.open(os.path.join(c.path, "supervisor.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ContainerError(f"container {c.id} is already running") from None
    c.lock_fd = fd


def _token() -> str:
    from cache import owner
    return owner.token()


# --- attach: _pump and _relay_pty serve the attached clients ---
def _pump(writers: dict, tty=None, attach: tuple | None = None, checker=None,
          stdin_once: bool = False, interactive: bool = False):
    """Copy each pipe into its log writer until every writer of every pipe has closed it (the
    container's pid namespace is gone by then: the keeper holds them to its end). tty: (pty
    master, its writer), read alongside (a peer held, so it reads no early EIO) and drained
    without blocking once the pipes are done; attach: (the listening socket, -i's pipe, start
    -a's connection): runtime.containers.attach.Clients is made once a client comes, and
    returned (None if none came) for the exit code; checker: the health checker, whose probes
    run meanwhile."""
    poll = select.poll()
    for fd in writers:
        poll.register(fd, select.POLLIN)
    master, tty_writer = tty or (None, None)
    if master is not None:
        poll.register(master, select.POLLIN)
    listen, stdin_w, client = attach or (None, None, None)
    clients = None

    def attached():
        from runtime.containers.attach import Clients
        return Clients(poll, listen, master, stdin_w, stdin_once, interactive)
    if listen is not None:
        poll.register(listen, select.POLLIN)
    if client is not None:
        clients = attached()
        clients.adopt(client)
    probing: tuple = ()
    while writers:
        wait = None if checker is None else int(checker.due() * 1000) + 1
        for fd, events in poll.poll(wait):
            if fd == master:
                if _relay_pty(fd, tty_writer, clients) is False:
                    poll.unregister(fd)
                continue
            if fd == listen and clients is None:
                clients = attached()
            if clients and clients.handle(fd, events):
                continue
            if fd not in writers:
                if checker is not None:
                    checker.on_event(fd)
                continue
            data = os.read(fd, 65536)
            if data:
                writers[fd].feed(data)
                if clients:
                    clients.send(b"2" if writers[fd].stream == "stderr" else b"1", data)
            else:
                writers.pop(fd).close()
                poll.unregister(fd)
                os.close(fd)
        if checker is not None:
            checker.tick()
            now_probing = checker.fds()
            if now_probing != probing:
                for fd in probing:
                    poll.unregister(fd)
                for fd in now_probing:
                    poll.register(fd, select.POLLIN)
                probing = now_probing
    if master is not None:
        os.set_blocking(master, False)
        while _relay_pty(master, tty_writer, clients):
            pass
        tty_writer.close()
    return clients


def _relay_pty(master: int, writer, clients) -> bool | None:
    """One read of the pty master into the log (and the attached clients); False at its end,
    None when it has nothing now (attach made it non-blocking)."""
    try:
        data = os.read(master, 65536)
    except BlockingIOError:
        return None
    except OSError:
        data = b""
    if data:
        writer.feed(data)
        if clients:
            clients.send(b"1", data)
    return bool(data)
# --- end attach ---
