"""Attach to a -it container's terminal (conmon's attach socket), without a daemon.

The supervisor of a container made with -i and -t listens on `attach.sock` in the container's
dir (`listen`; mode 0600, and only a client whose SO_PEERCRED uid is root's or the supervisor's
is served); `start -a -i` connects (`connect`), sends its window size (8 bytes, struct
winsize) and then relays its terminal (runtime.tty.relay on the socket). The supervisor types
what a client sends into the pty and sends each client the pty's output (`Clients`); a client
that stalls for a second is dropped, never the container's log. Both ends go through
/proc/self/fd/<dir fd>/attach.sock, so a long store path does not hit the 108-byte limit of a
unix socket's name. Imported by the lean supervisor only when the container has a terminal.
"""
from __future__ import annotations

import os
import select
import socket

ATTACH_SOCKET = "attach.sock"


def _in_dir(cpath: str, use) -> None:
    dirfd = os.open(cpath, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        use(f"/proc/self/fd/{dirfd}/{ATTACH_SOCKET}")
    finally:
        os.close(dirfd)


def listen(cpath: str) -> int:
    """The listening socket of the container at cpath (a stale one replaced); its fd."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)

    def bind(path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        old = os.umask(0o077)       # 0600 from the start: the terminal is root's (the owner's)
        try:
            s.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
    _in_dir(cpath, bind)
    s.listen(4)
    return s.detach()


def connect(cpath: str, winsize: bytes) -> socket.socket:
    """A client's connection to the container at cpath, its window size sent. OSError
    (ECONNREFUSED, ENOENT) when no supervisor listens."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        _in_dir(cpath, s.connect)
        s.sendall(winsize)
    except BaseException:
        s.close()
        raise
    return s


class Clients:
    """The supervisor's side: the attached clients of one pty master, watched in its poll."""

    def __init__(self, listen_fd: int, master: int, poll):
        self.sock = socket.socket(fileno=listen_fd)
        self.listen_fd, self.master, self.poll, self.conns = listen_fd, master, poll, {}
        poll.register(listen_fd, select.POLLIN)

    def handle(self, fd: int) -> bool:
        """Serve fd if it is the listener or a client; False when it is neither."""
        if fd == self.listen_fd:
            self._accept()
        elif fd in self.conns:
            self._typed(fd)
        else:
            return False
        return True

    def _accept(self) -> None:
        import fcntl
        import termios

        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        try:
            cred = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
            if int.from_bytes(cred[4:8], "little") not in (0, os.getuid()):   # struct ucred
                conn.close()
                return
            conn.settimeout(1)
            ws = conn.recv(8)
            if len(ws) == 8:
                fcntl.ioctl(self.master, termios.TIOCSWINSZ, ws)
        except OSError:
            conn.close()
            return
        self.conns[conn.fileno()] = conn
        self.poll.register(conn.fileno(), select.POLLIN)

    def _typed(self, fd: int) -> None:
        try:
            data = self.conns[fd].recv(65536)
        except OSError:
            data = b""
        if not data:
            self._drop(fd)
            return
        try:
            os.write(self.master, data)
        except OSError:
            pass

    def send(self, data: bytes) -> None:
        for fd, conn in list(self.conns.items()):
            try:
                conn.sendall(data)
            except OSError:
                self._drop(fd)

    def _drop(self, fd: int) -> None:
        self.poll.unregister(fd)
        self.conns.pop(fd).close()

    def close(self) -> None:
        """The container ended: every client gets EOF."""
        for fd in list(self.conns):
            self._drop(fd)
        self.sock.close()
