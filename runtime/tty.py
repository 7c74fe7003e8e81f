"""docker -t: a pty of the container's own devpts, its master handed to whoever started the tree.

The pty is opened by pid 1 after pivot_root (so the slave is the container's /dev/pts/0, not a
host pty), its master sent back over a unix socket pair (SCM_RIGHTS) made before the fork, and the
command makes the slave its controlling terminal. What the caller does with the master is its
business: `relay` copies it to and from this process's stdio for a foreground `pybuild run`; a
detached container's supervisor keeps it for its log and attach.
"""
from __future__ import annotations

import os

from runtime import kernel

TIOCSCTTY = 0x540E


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
    """Open a pty in this mount namespace's devpts, send its master over sock; the slave's path."""
    master, pts = kernel.open_pty()
    try:
        sock.sendmsg([b"t"], [(1, 1, master.to_bytes(4, "little"))])   # SOL_SOCKET, SCM_RIGHTS
    finally:
        os.close(master)
        sock.close()
    return pts


def become_controlling(pts: str) -> None:
    """Make pts this (new session's) controlling terminal and its stdin, stdout and stderr."""
    fd = os.open(pts, os.O_RDWR)
    kernel.ioctl_int(fd, TIOCSCTTY, 0)
    for i in (0, 1, 2):
        os.dup2(fd, i)
    if fd > 2:
        os.close(fd)


# --- a foreground caller ----------------------------------------------------------------------

def copy_winsize(src: int, master: int) -> None:
    import fcntl
    import termios

    try:
        ws = fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(master, termios.TIOCSWINSZ, ws)
    except OSError:
        pass


def relay(master: int, pid: int, stdin: bool) -> None:
    """Copy master to our stdout (and our stdin to master) until process pid has exited, with our
    terminal in raw mode and its window size following ours; drain what was written last."""
    import select
    import signal
    import termios
    import tty

    pidfd = os.pidfd_open(pid)
    old = signal.getsignal(signal.SIGWINCH)
    saved = None
    try:
        copy_winsize(1, master)
        signal.signal(signal.SIGWINCH, lambda *_: copy_winsize(1, master))
        if stdin and os.isatty(0):
            saved = termios.tcgetattr(0)
            tty.setraw(0)
        watch = [master, pidfd] + ([0] if stdin else [])
        while pidfd in watch:
            ready, _, _ = select.select(watch, [], [])
            if master in ready and not _pump(master):
                watch.remove(master)
            if 0 in ready:
                data = os.read(0, 65536)
                if data:
                    os.write(master, data)
                else:
                    watch.remove(0)
            if pidfd in ready:
                watch.remove(pidfd)
        os.set_blocking(master, False)
        while _pump(master):     # what the command wrote just before it exited
            pass
    finally:
        os.close(pidfd)
        signal.signal(signal.SIGWINCH, old)
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)


def _pump(master: int) -> bool:
    try:
        data = os.read(master, 65536)
    except OSError:
        return False
    if data:
        os.write(1, data)
    return bool(data)
