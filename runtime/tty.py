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
"""
from __future__ import annotations

import fcntl
import os

from runtime import kernel

TIOCSCTTY = 0x540E
TIOCGPTPEER = 0x5441
TIOCGWINSZ, TIOCSWINSZ = 0x5413, 0x5414
DEFAULT_SIZE = (24, 80)      # rows, cols when no terminal is at hand (run -d -t; docker's)


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
    """struct winsize of the terminal on fd 1, 0 or 2, else DEFAULT_SIZE's."""
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


def relay(master: int, pid: int, stdin: bool) -> None:
    """Copy master to our stdout (and our stdin to master) until process pid has exited, with our
    terminal in raw mode and its window size following ours; then drain what was written last."""
    import _signal as signal  # the C module `signal` wraps: same calls, int constants, no enum
    import select
    import termios
    import tty

    pidfd = os.pidfd_open(pid)
    peer = hold_peer(master)
    old = signal.getsignal(signal.SIGWINCH)
    saved = None
    try:
        copy_winsize(1, master)
        signal.signal(signal.SIGWINCH, lambda *_: copy_winsize(1, master))
        if stdin and os.isatty(0):
            saved = termios.tcgetattr(0)
            tty.setraw(0, termios.TCSANOW)    # keep what was typed ahead (docker's MakeRaw)
        watch = [master, pidfd] + ([0] if stdin else [])
        while pidfd in watch:
            ready, _, _ = select.select(watch, [], [])
            if master in ready and not _pump(master):
                watch.remove(master)     # EIO without a peer: wait for the exit all the same
            if 0 in ready:
                data = os.read(0, 65536)
                if data:
                    os.write(master, data)
                else:
                    watch.remove(0)
            if pidfd in ready:
                watch.remove(pidfd)
        drain(master, _write_out)   # what the command wrote just before it exited
    finally:
        os.close(pidfd)
        if peer is not None:
            os.close(peer)
        signal.signal(signal.SIGWINCH, old)
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)


def _write_out(data: bytes) -> None:
    while data:
        data = data[os.write(1, data):]


def _pump(master: int) -> bool:
    try:
        data = os.read(master, 65536)
    except OSError:
        return False
    if data:
        _write_out(data)
    return bool(data)
