"""`build --ssh ID[=SOCKET|KEY[,KEY...]]`: the SSH agents RUN --mount=type=ssh forwards.

As docker's: `--ssh default` is the caller's agent ($SSH_AUTH_SOCK); `--ssh ID=SOCKET` another
agent's socket; `--ssh ID=KEY,...` private key files, served by an ssh-agent of the build's own
(openssh-client's, started in the foreground on a socket in an owner-named dir under the
store's tmp/, killed when the build ends and by the kernel if the build is killed: it dies
with its parent). A RUN never sees an agent's own socket: `relay` serves a socket of the
step's own (the mount's uid, gid and mode, BuildKit's 0600 root by default) and copies each
connection to the agent, so a step cannot chmod, chown or replace the caller's socket; the
relay is bind-mounted read-only (builder.mounts), and nothing of a key reaches a layer or the
cache key.
"""
from __future__ import annotations

import os
import stat
import subprocess
import time

from builder.errors import BuildError


def forward(specs: list[str], tmp_dir, cleanup) -> dict[str, str]:
    """{id: agent socket} for the --ssh values; agents it starts go with `cleanup` (an
    ExitStack)."""
    out: dict[str, str] = {}
    for spec in specs:
        sid, eq, rest = spec.partition("=")
        if not sid or sid in out:
            raise BuildError(f"--ssh {spec!r}: expected ID[=SOCKET|KEY[,KEY...]] with a new ID")
        paths = [p for p in rest.split(",") if p] if eq else []
        if not paths:
            sock = os.environ.get("SSH_AUTH_SOCK")
            if not sock:
                raise BuildError(f"--ssh {spec}: SSH_AUTH_SOCK is not set (start an ssh-agent, "
                                 f"or give --ssh {sid}=KEYFILE)")
            paths = [sock]
        kinds = []
        for p in paths:
            try:
                kinds.append(stat.S_IFMT(os.stat(p).st_mode))
            except OSError as e:
                raise BuildError(f"--ssh {spec}: {p}: {e.strerror}") from None
        if kinds == [stat.S_IFSOCK]:
            out[sid] = os.path.abspath(paths[0])
        elif all(k == stat.S_IFREG for k in kinds):
            out[sid] = _agent(spec, [os.path.abspath(p) for p in paths], tmp_dir, cleanup)
        else:
            raise BuildError(f"--ssh {spec}: each path must be an agent socket (alone) or a "
                             "private key file")
    return out


def relay(upstream: str, tmp_dir, uid: int, gid: int, mode: int, cleanup) -> str:
    """A socket (owned uid:gid, `mode`) whose every connection is copied to and from the agent
    at `upstream`, served by daemon threads until `cleanup` (an ExitStack) closes it."""
    import socket
    import threading

    from cache import owner

    d = owner.temp_dir(tmp_dir, "ssh")
    cleanup.callback(_remove, d)
    path = os.path.join(d, "agent.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chown(path, uid, gid)
    os.chmod(path, mode)
    listener.listen(16)

    def pump(src, dst) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return              # closed: the step is over
            try:
                up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                up.connect(upstream)
            except OSError:
                conn.close()
                continue
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=pump, args=(a, b), daemon=True).start()

    def close() -> None:
        try:
            listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        listener.close()
    threading.Thread(target=serve, daemon=True, name="ssh-relay").start()
    cleanup.callback(close)
    return path


def _agent(spec: str, keys: list[str], tmp_dir, cleanup) -> str:
    from cache import owner
    from runtime import kernel

    d = owner.temp_dir(tmp_dir, "ssh")
    cleanup.callback(_remove, d)
    sock = os.path.join(d, "agent.sock")

    parent = os.getpid()

    def die_with_us() -> None:
        import signal

        kernel.prctl(kernel.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:      # the build died before the prctl took
            os._exit(1)
    try:
        agent = subprocess.Popen(["ssh-agent", "-D", "-a", sock], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 preexec_fn=die_with_us)
    except FileNotFoundError:
        raise BuildError(f"--ssh {spec}: key files need ssh-agent (apt-get install "
                         "openssh-client), or forward an agent: --ssh default") from None
    cleanup.callback(_stop, agent)
    for _ in range(500):
        if os.path.exists(sock) or agent.poll() is not None:
            break
        time.sleep(0.01)
    if not os.path.exists(sock):
        raise BuildError(f"--ssh {spec}: ssh-agent did not start")
    r = subprocess.run(["ssh-add", "-q", *keys], env={**os.environ, "SSH_AUTH_SOCK": sock,
                       "SSH_ASKPASS_REQUIRE": "never", "DISPLAY": ""},
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    if r.returncode:
        detail = (r.stderr.strip().splitlines() or ["ssh-add failed"])[-1]
        raise BuildError(f"--ssh {spec}: {detail} (a key with a passphrase needs an agent: "
                         "--ssh default)")
    return sock


def _stop(agent: subprocess.Popen) -> None:
    agent.kill()
    agent.wait()


def _remove(d: str) -> None:
    from cache.fspath import remove_tree

    remove_tree(d)
