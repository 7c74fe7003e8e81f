"""docker -t: a pty of the container's own devpts, its master handed to whoever started the tree.

The pty is opened by pid 1 after pivot_root (so the slave is the container's /dev/pts/0, not a
host pty), its master sent back over a unix socket pair (SCM_RIGHTS) made before the fork, and the
command makes the slave its controlling terminal. What the caller does with the master is its
business: `relay` copies it to and from this process's stdio for a foreground `pybuild run` or
`exec -t`; a detached container's supervisor keeps it for its log.

A reader of the master must not stop at its first EIO: the kernel says EIO once the last slave fd
is closed, and can say it before the last bytes written to the slave have reached the master
(seen: "ok" arriving after an EIO, its writer already a zombie). So a reader holds a slave fd of
its own (`hold_peer`, TIOCGPTPEER: the master then never reads EIO), reads until the process has
exited (a pidfd), then drains what is left without blocking (`drain`).

Detach keys (docker's `--detach-keys`, ctrl-p ctrl-q by default) are watched for in what is typed
(`Escape`); `relay` raises `Detached` when they come, and `runtime.containers.attach`'s client
does the same over an attach socket.
"""
from __future__ import annotations

import fcntl
import os

from runtime import kernel

TIOCSCTTY = 0x540E
TIOCGPTPEER = 0x5441
TIOCGWINSZ, TIOCSWINSZ = 0x5413, 0x5414
DEFAULT_SIZE = (24, 80)      # rows, cols when no terminal is at hand (run -d -t; docker's)
# the size the pty of a tree forked from here gets instead of the terminal's (a supervisor
# started by `start -a -i` opens it at the attaching terminal's size)
initial_size: bytes | None = None
DEFAULT_DETACH_KEYS = b"\x10\x11"     # ctrl-p ctrl-q


# --- the caller's side ------------------------------------------------------------------------

def channel():
    """(caller's end, container's end): a socket pair over which the master comes back."""
    import socket

    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


def receive_master(sock) -> int | None:
    """The master fd sent by pid 1, or None when it failed before sending one (its error
    comes on the error pipe). Closes sock."""
    import socket

    with sock:
        _, fds, _, _ = socket.recv_fds(sock, 16, 1)
    return fds[0] if fds else None


# --- inside the container (after pivot_root: no imports below) --------------------------------

def send_new_pty(sock) -> str:
    """Open a pty in this mount namespace's devpts, sized as the terminal on our stdio (the
    caller's: `run -it`, `exec -it`) or 80x24, send its master over sock; the slave's path.
    Sized here, before the command exists, so it never reads a 0x0 terminal."""
    master, pts = kernel.open_pty()
    try:
        fcntl.ioctl(master, TIOCSWINSZ, stdio_size())
        sock.sendmsg([b"t"], [(1, 1, master.to_bytes(4, "little"))])   # SOL_SOCKET, SCM_RIGHTS
    finally:
        os.close(master)
        sock.close()
    return pts


def stdio_size() -> bytes:
    """struct winsize of the terminal on fd 1, 0 or 2 (initial_size when set), else
    DEFAULT_SIZE's."""
    if initial_size is not None:
        return initial_size
    for fd in (1, 0, 2):
        try:
            ws = fcntl.ioctl(fd, TIOCGWINSZ, b"\0" * 8)
        except OSError:
            continue
        if ws[:4] != b"\0" * 4:
            return ws
    rows, cols = DEFAULT_SIZE
    return rows.to_bytes(2, "little") + cols.to_bytes(2, "little") + b"\0" * 4


def become_controlling(pts: str) -> None:
    """Make pts this (new session's) controlling terminal and its stdin, stdout and stderr."""
    fd = os.open(pts, os.O_RDWR)
    kernel.ioctl_int(fd, TIOCSCTTY, 0)
    for i in (0, 1, 2):
        os.dup2(fd, i)
    if fd > 2:
        os.close(fd)


# --- a foreground caller ----------------------------------------------------------------------

def hold_peer(master: int) -> int | None:
    """A slave fd opened through the master (no path needed), held by the reader so the master
    never reads EIO before the reader is done; None where the kernel lacks TIOCGPTPEER (< 4.13)."""
    try:
        return fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None


def drain(master: int, write) -> None:
    """Read what is left in master without blocking (the writers are gone) and pass it on."""
    os.set_blocking(master, False)
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:      # EAGAIN: empty; EIO: no slave left and empty
                return
            if not data:
                return
            write(data)
    finally:
        os.set_blocking(master, True)


def copy_winsize(src: int, master: int) -> None:
    try:
        ws = fcntl.ioctl(src, TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(master, TIOCSWINSZ, ws)
    except OSError:
        pass


def relay(master: int, pid: int, stdin: bool, keys: bytes | None = None) -> None:
    """Copy master to our stdout (and our stdin to master) until process pid has exited, with our
    terminal in raw mode and its window size following ours; then drain what was written last.
    keys: detach keys; Detached is raised when they are typed (the process runs on)."""
    import _signal as signal  # the C module `signal` wraps: same calls, int constants, no enum
    import select

    pidfd = os.pidfd_open(pid)
    peer = hold_peer(master)
    old = signal.getsignal(signal.SIGWINCH)
    saved = None
    escape = Escape(keys) if keys and stdin else None
    try:
        copy_winsize(1, master)
        signal.signal(signal.SIGWINCH, lambda *_: copy_winsize(1, master))
        if stdin:
            saved = raw(0)
        watch = [master, pidfd] + ([0] if stdin else [])
        while pidfd in watch:
            ready, _, _ = select.select(watch, [], [])
            if master in ready and not _pump(master):
                watch.remove(master)     # EIO without a peer: wait for the exit all the same
            if 0 in ready:
                data = os.read(0, 65536)
                if not data:
                    watch.remove(0)
                if escape is not None:      # Detached: the finally restores the terminal
                    data = escape.feed(data) if data else escape.flush()
                if data:
                    write_all(master, data)
            if pidfd in ready:
                watch.remove(pidfd)
        drain(master, _write_out)   # what the command wrote just before it exited
    finally:
        os.close(pidfd)
        if peer is not None:
            os.close(peer)
        signal.signal(signal.SIGWINCH, old)
        restore(0, saved)


def raw(fd: int):
    """Put the terminal on fd in raw mode (docker's MakeRaw: what was typed ahead is kept); its
    old attributes for restore(), None when fd is no terminal."""
    import termios
    import tty as _tty

    if not os.isatty(fd):
        return None
    saved = termios.tcgetattr(fd)
    _tty.setraw(fd, termios.TCSANOW)
    return saved


def restore(fd: int, saved) -> None:
    if saved is not None:
        import termios
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


class Detached(Exception):
    """The detach keys were typed: the container (or exec'd command) runs on without us."""

    def __str__(self) -> str:
        return "read escape sequence"      # docker's words (moby/term's EscapeError)


def chosen_detach_keys(text: str | None) -> bytes:
    """The keys a client watches for: --detach-keys `text`, else docker's config.json
    `detachKeys`, else ctrl-p,ctrl-q (docker's order). ValueError for a bad one."""
    if text is None:
        import json

        from cache.registry.auth import docker_config_path
        try:
            text = json.loads(docker_config_path().read_bytes()).get("detachKeys")
        except (OSError, ValueError, AttributeError):
            text = None
    return detach_keys(text)


def detach_keys(text: str | None) -> bytes:
    """docker's --detach-keys (moby/term ToBytes): comma-separated `ctrl-<a-z@[\\]^_>`, `DEL`
    or single characters; None or "" is ctrl-p,ctrl-q. ValueError in docker's words."""
    if not text:
        return DEFAULT_DETACH_KEYS
    out = bytearray()
    for key in text.split(","):
        raw_key = key.encode()
        if len(raw_key) == 1:
            out += raw_key
        elif len(key) == 6 and key.startswith("ctrl-") and (key[5] in "@[\\]^_"
                                                            or "a" <= key[5] <= "z"):
            out.append(ord(key[5].upper()) - 64)      # ctrl-@ 0, ctrl-a 1, ... ctrl-_ 31
        elif key == "DEL":
            out.append(127)
        else:
            raise ValueError(f"Invalid detach keys ({text}) provided")
    return bytes(out)


class Escape:
    """Watch typed bytes for the detach keys: what is not part of them passes (a partial match
    is held until the next byte decides, as docker's escape proxy does); Detached at a match."""

    def __init__(self, keys: bytes):
        self.keys, self.held = keys, 0

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        for b in data:
            if b == self.keys[self.held]:
                self.held += 1
                if self.held == len(self.keys):
                    raise Detached()
                continue
            if self.held:
                out += self.keys[:self.held]
                self.held = 0
                if b == self.keys[0]:
                    self.held = 1
                    continue
            out.append(b)
        return bytes(out)

    def flush(self) -> bytes:
        """What is held (the input ended in the middle of the keys)."""
        held, self.held = self.keys[:self.held], 0
        return held


def write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _write_out(data: bytes) -> None:
    write_all(1, data)


def _pump(master: int) -> bool:
    try:
        data = os.read(master, 65536)
    except OSError:
        return False
    if data:
        _write_out(data)
    return bool(data)
