"""The supervisor of one detached container (conmon's role), and `spawn`, which starts it.

`spawn` runs `python -I -S` on `main` as a child in its own session with stdio on /dev/null, so
it outlives the `pybuild run -d` that started it and holds none of its pipes; it waits only for
the one line saying the container runs (or why not). The supervisor then:
- enters a mount namespace of its own (what the snapshotter probes dies with it) and holds the
  image in the store's leases, so prune keeps its layers while it runs;
- starts the container's process tree (runtime.process.start) on the image's layer dirs with
  the upper/work dirs in the container's dir, stdin on /dev/null, stdout and stderr into pipes;
- writes what comes out of them to `<id>-json.log` in docker's json-file format, a line per
  object {"log": "...\\n", "stream": "stdout"|"stderr", "time": RFC3339Nano};
- records running (its own cache.owner token, the tree's pid, start time) and re-execs itself as
  the lean `monitor` (same pid and start time; see _become_monitor), which records exited with the
  exit code (128+N for signal N; 125 when the sandbox could not be set up, its error in
  state.json and on the log's stderr) and the finish time, removes the container when it was
  made with --rm, and exits.
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


def spawn(root: str, cid: str, timeout: float = 30.0) -> str | None:
    """Start the supervisor of container `cid`; return None once it runs, else the error line."""
    import subprocess

    r, w = os.pipe()
    code = (f"import sys; sys.path.insert(0, {HERE!r}); "
            f"from runtime.containers.supervisor import main; main({root!r}, {cid!r}, {w})")
    try:
        subprocess.Popen([sys.executable, "-I", "-S", "-c", code], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/",
                         pass_fds=(w,), start_new_session=True)
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


class _LogWriter:
    """docker's json-file lines for one stream; a partial line waits for its newline."""

    def __init__(self, fd: int, stream: str, now):
        self.fd, self.stream, self.now, self.pending = fd, stream, now, b""

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
        try:
            os.write(self.fd, line.encode())
        except OSError:
            pass   # a full disk loses log lines, never the container


def main(root: str, cid: str, ready_fd: int) -> None:
    """The supervisor's life; never returns (os._exit)."""
    code = 125
    try:
        code = _supervise(root, cid, ready_fd)
    except BaseException as e:  # noqa: BLE001 - reported through the ready pipe or state.json
        _tell(ready_fd, f"E {e}".replace("\n", " "))
    os._exit(code)


def _tell(fd: int, line: str) -> None:
    try:
        os.write(fd, (line + "\n").encode())
        os.close(fd)
    except OSError:
        pass


def _supervise(root: str, cid: str, ready_fd: int) -> int:
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
    _hold(c)
    cfg = c.config
    Leases(root).hold(cfg["image_id"])
    upper, work = os.path.join(c.path, "upper"), os.path.join(c.path, "work")
    devnull = os.open(os.devnull, os.O_RDWR)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    log = os.open(c.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
    mounts = []
    if cfg.get("mounts"):
        from runtime.containers.volumes import to_spec
        mounts = to_spec(root, cfg["mounts"])
    spec = SandboxSpec(lowerdirs=cfg["lowerdirs"], upperdir=upper, workdir=work, argv=cfg["argv"],
                       env=cfg["env"], cwd=cfg["cwd"], user=cfg["user"], hostname=cfg["hostname"],
                       network=cfg["network"], ports=cfg.get("ports") or [],
                       extra_hosts=cfg.get("extra_hosts") or [], stdin=devnull, stdout=out_w,
                       stderr=err_w,
                       make_cwd=True, mounts=mounts,
                       resources=Resources(**cfg["resources"]) if cfg.get("resources") else None)
    try:
        tree = process.start(spec)
    except SandboxError as e:
        c.write_state(status="exited", exit_code=125, error=str(e), started=now(), finished=now())
        if cfg.get("auto_remove"):
            _auto_remove(cs, c)
        raise
    finally:
        for fd in (devnull, out_w, err_w):
            os.close(fd)
    net = getattr(tree, "network", None)     # bridge: address and published ports
    c.write_state(status="running", supervisor=_token(), pid=tree.pid, started=now(),
                  exit_code=0, error=None, network=net.info() if net else None)
    _tell(ready_fd, "ok")
    _become_monitor(root, cid, tree, out_r, err_r, log, c.lock_fd)   # returns only if it cannot
    return _monitor(cs, c, out_r, err_r, log, lambda: tree)


def _become_monitor(root: str, cid: str, tree, out_r: int, err_r: int, log: int, lock: int) -> None:
    """Re-exec this process as a lean monitor (the same pid and start time, so its cache.owner
    token, lease, lock and children stay; PR_SET_PDEATHSIG does not fire on exec): the modules
    that set the tree up (dataclasses, tempfile, shutil, ctypes, ...) are not kept in memory
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
    keep = (out_r, err_r, log, lock, tree._errfd) + proxy.handoff(tree) + (mem,)
    for fd in keep:
        os.set_inheritable(fd, True)
    code = (f"import sys; sys.path.insert(0, {HERE!r}); from runtime.containers.supervisor "
            f"import monitor; monitor({root!r}, {cid!r}, {out_r}, {err_r}, {log}, {mem})")
    try:
        os.execv(sys.executable, [sys.executable, "-I", "-S", "-c", code])
    except OSError:
        for fd in keep[:-1]:
            os.set_inheritable(fd, False)
        os.close(mem)


def monitor(root: str, cid: str, out_r: int, err_r: int, log: int, mem: int) -> None:
    """The lean supervisor after the re-exec: log the container's output, then record its end.
    Never returns."""
    try:
        from runtime.containers.state import Containers

        if os.environ.get("PYBUILD_PROXY"):     # proxy.handoff's: published ports, served here
            from runtime.network import proxy
            proxy.resume()
        cs = Containers(root)
        c = cs.load(cid)

        def tree():
            import pickle
            with os.fdopen(mem, "rb") as f:
                t = pickle.load(f)
            return t
        _monitor(cs, c, out_r, err_r, log, tree)
    finally:
        os._exit(0)


def _monitor(cs, c, out_r: int, err_r: int, log: int, get_tree) -> int:
    from runtime.containers.state import now
    from runtime.errors import SandboxError

    err = _LogWriter(log, "stderr", now)
    _pump({out_r: _LogWriter(log, "stdout", now), err_r: err})
    error = None
    tree = get_tree()
    try:
        code = tree.wait()
    except SandboxError as e:
        code, error = tree.returncode or 125, str(e)
        err.feed(f"pybuild: error: {error}\n".encode())
    os.close(log)
    if c is None:
        return 0
    try:
        c.write_state(status="exited", exit_code=code, error=error, finished=now())
        if c.config.get("auto_remove"):      # run -d --rm
            _auto_remove(cs, c)
    except (FileNotFoundError, SandboxError):
        pass    # removed while it ran (`rm -f` of a supervisor that did not stop)
    return 0


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


def _pump(writers: dict) -> None:
    """Copy each pipe into its log writer until every writer of every pipe has closed it (the
    container's pid namespace is gone by then)."""
    poll = select.poll()
    for fd in writers:
        poll.register(fd, select.POLLIN)
    while writers:
        for fd, _ in poll.poll():
            data = os.read(fd, 65536)
            if data:
                writers[fd].feed(data)
            else:
                writers.pop(fd).close()
                poll.unregister(fd)
                os.close(fd)
