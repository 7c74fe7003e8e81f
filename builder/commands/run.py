"""CLI: `pybuild run` — a foreground container from an image in the store, like `docker run`.

It runs on the same sandbox as a build's RUN (runtime.sandbox) over the image's layer dirs with a
throw-away upper dir, honouring the image's Entrypoint, Cmd, Env, WorkingDir and User the way
docker does. Exit status follows docker: the command's own status; 125 when pybuild itself fails
(unknown image, bad flag value, sandbox set-up); 126/127 when the command cannot be run.
Imports of the store and the runtime happen only when the command runs.
"""
from __future__ import annotations

import os
import sys

NETWORKS = ("host", "none")


def register(sub) -> None:
    p = sub.add_parser(
        "run", help="run a command in a new container",
        description="Run a command in a new container from IMAGE, in the foreground. The network "
                    "defaults to `host` (the host's network, as a build's RUN has); docker's "
                    "bridge network comes with the full runtime.")
    p.add_argument("--rm", action="store_true",
                   help="remove the container when it exits (always so for now: nothing is kept)")
    p.add_argument("-e", "--env", action="append", default=[], metavar="K=V",
                   help="set an environment variable (K alone: take it from this environment)")
    p.add_argument("--env-file", action="append", default=[], metavar="FILE",
                   help="read K=V lines from FILE")
    p.add_argument("-w", "--workdir", metavar="DIR", help="working directory inside the container")
    p.add_argument("-u", "--user", metavar="USER", help="name|uid[:group|gid]")
    p.add_argument("--entrypoint", metavar="CMD", help="override the image's ENTRYPOINT (clears CMD)")
    p.add_argument("--network", "--net", default="host", metavar="MODE",
                   help="host (default) or none")
    p.add_argument("--hostname", dest="hostname", metavar="NAME",
                   help="container host name (default: a random container ID)")
    p.add_argument("--name", metavar="NAME",
                   help="container name (accepted; recorded once the container lifecycle lands)")
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-terminal")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("command", nargs="...", metavar="COMMAND [ARG...]")
    p.set_defaults(func=cmd_run, failure_exit=125)  # docker run: its other codes are the command's


def _fail(msg: str) -> int:
    print(f"pybuild: error: {msg}", file=sys.stderr)
    return 125


def _env_file(path: str) -> list[str]:
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise ValueError(f"--env-file {path}: {e.strerror}") from None
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def _user_env(items: list[str]) -> list[str]:
    """docker's -e: `K=V` as given; bare `K` takes this process's value, or is dropped."""
    out = []
    for item in items:
        if "=" in item:
            if item.startswith("="):
                raise ValueError(f"invalid environment variable: {item}")
            out.append(item)
        elif item in os.environ:
            out.append(f"{item}={os.environ[item]}")
    return out


def container_argv(cfg: dict, entrypoint: str | None, command: list[str]) -> list[str]:
    """docker's rule: --entrypoint replaces Entrypoint and drops Cmd; CMD args replace Cmd."""
    if entrypoint is not None:
        ep = [entrypoint] if entrypoint else []
        return ep + list(command)
    ep = list(cfg.get("Entrypoint") or [])
    return ep + (list(command) if command else list(cfg.get("Cmd") or []))


def cmd_run(args) -> int:
    import secrets
    import shutil

    from runtime.privileges import require_root

    require_root()

    from builder.commands.images import open_store
    from cache.errors import StoreError
    from runtime.errors import SandboxError
    from runtime.sandbox import SandboxSpec, run

    if args.network not in NETWORKS:
        return _fail(f'network mode "{args.network}" is not supported yet (use host or none)')
    try:
        extra_env = [e for f in args.env_file for e in _env_file(f)] + _user_env(args.env)
    except ValueError as e:
        return _fail(str(e))
    try:
        store = open_store()
        img = store.image(args.image)
        lowerdirs = [store.layer_dir(d) for d in reversed(img.diff_ids)]
    except StoreError as e:
        return _fail(str(e))
    cfg = img.config.get("config") or {}
    argv = container_argv(cfg, args.entrypoint, args.command)
    if not argv:
        return _fail("no command specified")
    hostname = args.hostname or secrets.token_hex(6)
    env = list(cfg.get("Env") or []) + [f"HOSTNAME={hostname}"]
    if args.tty:
        env.append("TERM=xterm")
    env += extra_env

    scratch = store.new_scratch()
    devnull = os.open(os.devnull, os.O_RDWR)
    pty = None
    try:
        stdin = 0 if args.interactive else devnull
        stdout, stderr = 1, 2
        if args.tty:
            pty = _Pty()
        spec = SandboxSpec(lowerdirs=lowerdirs, upperdir=scratch / "upper", workdir=scratch / "work",
                           argv=argv, env=env, cwd=args.workdir or cfg.get("WorkingDir") or "/",
                           user=args.user if args.user is not None else cfg.get("User") or "",
                           hostname=hostname, network=args.network, stdin=stdin, stdout=stdout,
                           stderr=stderr, tty=args.tty, make_cwd=True)
        if pty is not None:
            return pty.run(spec, relay_stdin=args.interactive)
        return run(spec, forward_signals=True)
    except (SandboxError, StoreError) as e:
        return _fail(str(e))
    finally:
        if pty is not None:
            pty.close()
        os.close(devnull)
        shutil.rmtree(scratch, ignore_errors=True)


class _Pty:
    """docker -t: the command gets a pty of the container's own devpts; we relay its master to our
    stdio, with our terminal in raw mode and its window size copied over."""

    def __init__(self):
        self.master = -1
        self._saved = None

    def _copy_winsize(self) -> None:
        import fcntl
        import termios
        try:
            ws = fcntl.ioctl(1, termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, ws)
        except OSError:
            pass

    def run(self, spec, relay_stdin: bool) -> int:
        import select
        import signal
        import termios
        import tty

        from runtime.sandbox import start

        sb = start(spec)
        pidfd = os.pidfd_open(sb.pid)
        old = signal.getsignal(signal.SIGWINCH)
        try:
            if sb.tty is None:
                return sb.wait()
            self.master = sb.tty
            self._copy_winsize()
            signal.signal(signal.SIGWINCH, lambda *_: self._copy_winsize())
            if relay_stdin and os.isatty(0):
                self._saved = termios.tcgetattr(0)
                tty.setraw(0)
            watch = [self.master, pidfd] + ([0] if relay_stdin else [])
            while pidfd in watch:
                ready, _, _ = select.select(watch, [], [])
                if self.master in ready and not self._pump():
                    watch.remove(self.master)
                if 0 in ready:
                    data = os.read(0, 65536)
                    if data:
                        os.write(self.master, data)
                    else:
                        watch.remove(0)
                if pidfd in ready:
                    watch.remove(pidfd)
            os.set_blocking(self.master, False)
            while self._pump():     # what the command wrote just before it exited
                pass
            return sb.wait()
        except BaseException:
            sb.kill()
            sb.wait()
            raise
        finally:
            os.close(pidfd)
            signal.signal(signal.SIGWINCH, old)

    def _pump(self) -> bool:
        try:
            data = os.read(self.master, 65536)
        except OSError:
            return False
        if data:
            os.write(1, data)
        return bool(data)

    def close(self) -> None:
        if self._saved is not None:
            import termios
            termios.tcsetattr(0, termios.TCSADRAIN, self._saved)
        if self.master >= 0:
            os.close(self.master)
