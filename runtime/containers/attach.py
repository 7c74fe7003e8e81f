"""Attach to a detached container (conmon's attach socket), without a daemon.

The supervisor of every container listens on `attach.sock` in the container's dir (`listen`;
mode 0600, and only a client whose SO_PEERCRED uid is root's or the supervisor's is served);
`pybuild attach` connects to it (`connect`); `start -a` hands the supervisor one end of a socket
pair before it starts the container (`Clients.adopt`), so nothing the container writes is missed,
as docker attaches before it starts. Both ends go through /proc/self/fd/<dir fd>/attach.sock, so
a long store path does not hit the 108-byte limit of a unix socket's name.

Both ways the bytes are frames, a kind byte and a 4-byte big-endian length before the payload:
client to supervisor `h` (hello: 1 byte of flags, bit 0 = attach stdin), `i` (stdin bytes), `e`
(the client's stdin ended: the container's stdin is closed when it was made with StdinOnce, as
`create -i` makes it and `run -d -i` does not; never with a tty), `w` (a struct winsize for the
pty: TIOCSWINSZ, so the container gets SIGWINCH); supervisor to client `1` (stdout; a tty's
output), `2` (stderr), `x` (the container ended: its exit code, 4 bytes signed).

The supervisor (`Clients`) never waits for a client: output is queued per client and sent as
its socket takes it, a client with more than _LIMIT unsent is dropped (never the container's
log); typed input is queued for the container's stdin (the pty master, or the -i pipe) and
clients are not read while more than _PAUSE of it waits. Every client gets the same output.
Imported by the lean supervisor only once a client comes; the client's side (`session`) is the
CLI's: raw terminal, detach keys (runtime.tty.Escape), SIGWINCH sent on, other signals handed
to the caller (docker's --sig-proxy). `listen`, which every supervisor calls before its
container is reported running, makes its socket with the C module `_socket`: `socket`'s Python
layer costs ~3 ms to import, and only a client needs it.
"""
from __future__ import annotations

import os
import select

ATTACH_SOCKET = "attach.sock"
_LIMIT = 1 << 20        # a client's unsent output beyond this: it is let go
_PAUSE = 1 << 16        # typed input the container has not taken beyond this: stop reading clients
STDIN = 1               # hello flag


def frame(kind: bytes, data: bytes = b"") -> bytes:
    return kind + len(data).to_bytes(4, "big") + data


MAX_FRAME = 1 << 20     # no frame of either side is larger (the relays send 64 KiB at most)


class Frames:
    """Frames out of a byte stream that comes in pieces. A frame that says it is larger than
    MAX_FRAME is ValueError: the peer is dropped, not buffered without end."""

    def __init__(self):
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        self.buf += data
        out = []
        while len(self.buf) >= 5:
            n = int.from_bytes(self.buf[1:5], "big")
            if n > MAX_FRAME:
                raise ValueError(f"attach frame of {n} bytes")
            if len(self.buf) < 5 + n:
                break
            out.append((bytes(self.buf[:1]), bytes(self.buf[5:5 + n])))
            del self.buf[:5 + n]
        return out


def _in_dir(cpath: str, use) -> None:
    dirfd = os.open(cpath, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        use(f"/proc/self/fd/{dirfd}/{ATTACH_SOCKET}")
    finally:
        os.close(dirfd)


def listen(cpath: str) -> int:
    """The listening socket of the container at cpath (a stale one replaced); its fd."""
    import _socket

    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)

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
    s.listen(8)
    return s.detach()


def connect(cpath: str):
    """A client's connection to the container at cpath (a socket.socket). OSError
    (ECONNREFUSED, ENOENT) when no supervisor listens."""
    import socket

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        _in_dir(cpath, s.connect)
    except BaseException:
        s.close()
        raise
    return s


def hello(stdin: bool, winsize: bytes | None, nudge: bool = False) -> bytes:
    """A client's first frames: what it attaches, then its window size (nudge: first one row and
    column more, so a shell that is already at that size redraws its prompt: docker attach's)."""
    out = frame(b"h", bytes([STDIN if stdin else 0]))
    if winsize is not None:
        if nudge:
            import sys
            rows, cols = (int.from_bytes(winsize[i:i + 2], sys.byteorder) + 1 for i in (0, 2))
            out += frame(b"w", rows.to_bytes(2, sys.byteorder) + cols.to_bytes(2, sys.byteorder)
                         + winsize[4:])
        out += frame(b"w", winsize)
    return out


# --- the supervisor's side --------------------------------------------------------------------

class _Conn:
    __slots__ = ("sock", "fd", "frames", "out", "stdin")

    def __init__(self, sock):
        sock.setblocking(False)
        self.sock, self.fd, self.frames, self.out, self.stdin = sock, sock.fileno(), Frames(), \
            bytearray(), False


class Clients:
    """The attached clients of one container, watched in the supervisor's poll: listen_fd (the
    socket, already registered by the caller), master (the pty with -t), stdin_w (the -i pipe's
    write end without -t), stdin_once (close that pipe when a client's stdin ends)."""

    def __init__(self, poll, listen_fd: int | None, master: int | None = None,
                 stdin_w: int | None = None, stdin_once: bool = False, interactive: bool = False):
        import socket

        self.poll, self.conns, self.master = poll, {}, master
        self.listen = None
        self.listen_fd = listen_fd
        if listen_fd is not None:
            self.listen = socket.socket(fileno=listen_fd)
            self.listen.setblocking(False)
        self.sink = None                 # where typed input goes (a dup of the master: its own
        if master is not None and interactive:          # fd number in the poll, for POLLOUT)
            self.sink = os.dup(master)
        elif stdin_w is not None:
            self.sink = stdin_w
        if self.sink is not None:
            os.set_blocking(self.sink, False)
        self.stdin_w, self.once = stdin_w, stdin_once and master is None
        self.pending, self.closing, self.paused = bytearray(), False, False

    def adopt(self, fd: int) -> None:
        """A connection handed over by the starter (`start -a`)."""
        import socket

        self._add(socket.socket(fileno=fd))

    def handle(self, fd: int, events: int) -> bool:
        """Serve fd if it is ours (the listener, a client, the input sink); False if not."""
        if fd == self.listen_fd:
            self._accept()
        elif fd == self.sink and self.sink is not None:
            self._write_input()
        elif fd in self.conns:
            conn = self.conns[fd]
            if events & select.POLLOUT:
                self._flush(conn)
            if fd in self.conns and events & (select.POLLIN | select.POLLHUP | select.POLLERR):
                self._read(conn)
        else:
            return False
        return True

    def send(self, kind: bytes, data: bytes) -> None:
        """Output for every client: queued, sent as far as its socket takes it now."""
        f = frame(kind, data)
        for conn in list(self.conns.values()):
            conn.out += f
            if len(conn.out) > _LIMIT:
                self._drop(conn)     # stalled: the log must not wait for it
            else:
                self._flush(conn)

    def finish(self, code: int) -> None:
        """The container ended: each client gets what is queued and the exit code (a second
        for all of them at most), then EOF; the listener closes."""
        import time

        end = time.monotonic() + 1
        for conn in list(self.conns.values()):
            conn.out += frame(b"x", code.to_bytes(4, "big", signed=True))
            try:
                conn.sock.settimeout(max(0.01, end - time.monotonic()))
                conn.sock.sendall(conn.out)
            except OSError:
                pass
            self._drop(conn)
        if self.listen is not None:
            self.poll.unregister(self.listen_fd)
            self.listen.close()
            self.listen = self.listen_fd = None
        if self.sink is not None and self.sink != self.stdin_w:
            self._close_sink()      # the master's dup (the master and the -i pipe: the caller's)

    def _unwatch_sink(self) -> None:
        try:
            self.poll.unregister(self.sink)
        except KeyError:
            pass

    def _close_sink(self) -> None:
        self._unwatch_sink()
        os.close(self.sink)
        self.sink = None

    def _accept(self) -> None:
        import socket

        try:
            conn, _ = self.listen.accept()
        except OSError:
            return
        try:
            cred = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        except OSError:
            conn.close()
            return
        if int.from_bytes(cred[4:8], "little") not in (0, os.getuid()):   # struct ucred's uid
            conn.close()
            return
        self._add(conn)

    def _add(self, sock) -> None:
        conn = _Conn(sock)
        self.conns[conn.fd] = conn
        self.poll.register(conn.fd, select.POLLIN)

    def _events(self, conn: _Conn) -> None:
        ev = (0 if self.paused else select.POLLIN) | (select.POLLOUT if conn.out else 0)
        self.poll.modify(conn.fd, ev)

    def _flush(self, conn: _Conn) -> None:
        try:
            n = conn.sock.send(conn.out)
        except BlockingIOError:
            n = 0
        except OSError:
            self._drop(conn)
            return
        del conn.out[:n]
        self._events(conn)

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        try:
            frames = conn.frames.feed(data)
        except ValueError:      # a client that announces a huge frame: gone
            self._drop(conn)
            return
        for kind, payload in frames:
            if kind == b"h":
                conn.stdin = bool(payload[:1] and payload[0] & STDIN) and self.sink is not None
            elif kind == b"i" and conn.stdin and not self.closing:
                self.pending += payload
            elif kind == b"e" and conn.stdin and self.once:
                self.closing = True
            elif kind == b"w" and self.master is not None and len(payload) == 8:
                import fcntl
                import termios
                try:
                    fcntl.ioctl(self.master, termios.TIOCSWINSZ, payload)
                except OSError:
                    pass
        self._write_input()

    def _write_input(self) -> None:
        if self.sink is None:
            return
        if self.pending:
            try:
                n = os.write(self.sink, self.pending)
            except BlockingIOError:
                n = 0
            except OSError:          # the container closed its stdin: what is typed is lost
                n = len(self.pending)
            del self.pending[:n]
        if self.closing and not self.pending:     # StdinOnce: the container's stdin ends
            self._close_sink()
            return
        if self.pending:
            self.poll.register(self.sink, select.POLLOUT)
        else:
            self._unwatch_sink()
        paused = len(self.pending) > _PAUSE
        if paused != self.paused:
            self.paused = paused
            for conn in self.conns.values():
                self._events(conn)

    def _drop(self, conn: _Conn) -> None:
        self.poll.unregister(conn.fd)
        del self.conns[conn.fd]
        conn.sock.close()


# --- the client's side ------------------------------------------------------------------------

def session(sock, *, stdin: bool, tty: bool, keys: bytes | None = None,
            on_signal=None) -> int | None:
    """Relay this process's stdio over an attach connection (its hello already sent) until the
    container ends; its exit code, or None when the supervisor let go of us first (stalled, or
    gone). With tty and stdin our terminal is raw; stdin is watched for `keys`
    (runtime.tty.Detached when typed); SIGWINCH sends our window size; with on_signal, the
    signals a container is sent (runtime.process.FORWARDED_SIGNALS) go to it (--sig-proxy)."""
    import _signal as signal

    from runtime import tty as term

    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    sigs = [signal.SIGWINCH] if tty else []
    if on_signal is not None and not tty:
        from runtime.process import FORWARDED_SIGNALS
        sigs += [s for s in FORWARDED_SIGNALS if s != signal.SIGWINCH]
    old = {s: signal.signal(s, lambda *_: None) for s in sigs}   # the wakeup fd says which
    old_wake = signal.set_wakeup_fd(wake_w)
    saved = term.raw(0) if tty and stdin else None
    escape = term.Escape(keys) if stdin and keys else None
    out, frames, reading = bytearray(), Frames(), stdin
    sock.setblocking(False)
    try:
        while True:
            rl = [sock, wake_r] + ([0] if reading and len(out) < _PAUSE else [])
            ready_r, ready_w, _ = select.select(rl, [sock] if out else [], [])
            if wake_r in ready_r:
                for sig in os.read(wake_r, 64):
                    if sig == signal.SIGWINCH:
                        out += frame(b"w", term.stdio_size())
                    elif on_signal is not None:
                        on_signal(sig)
            if 0 in ready_r:
                data = os.read(0, 65536)
                if not data:
                    reading = False
                if escape is not None:
                    data = escape.feed(data) if data else escape.flush()
                if data:
                    out += frame(b"i", data)
                if not reading:
                    out += frame(b"e")
            if sock in ready_r:
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    data = None
                except OSError:
                    data = b""
                if data == b"":
                    return None
                try:
                    got = frames.feed(data or b"")
                except ValueError:
                    return None         # not the supervisor's protocol: let go
                for kind, payload in got:
                    if kind == b"x":
                        return int.from_bytes(payload, "big", signed=True)
                    term.write_all(2 if kind == b"2" else 1, payload)
            if sock in ready_w:
                try:
                    del out[:sock.send(out)]
                except BlockingIOError:
                    pass
                except OSError:
                    return None
    finally:
        term.restore(0, saved)
        signal.set_wakeup_fd(old_wake)
        for s, h in old.items():
            signal.signal(s, h)
        os.close(wake_r)
        os.close(wake_w)
