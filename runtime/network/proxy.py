"""The userspace relay of published ports (docker-proxy's job), stdlib only and small: it runs
on threads in the process that holds the container (the foreground `pybuild run`, or the
detached container's supervisor, whose lean monitor takes the listening sockets over through
its re-exec: `handoff` / `resume`). A port is bound exactly as long as that process lives or
until `stop` (the container's end): nothing stays listening after a kill -9.

TCP: each accepted connection gets a connection to container-ip:port and two copying threads,
at most MAX_TCP at once (more are accepted and closed); an accept error is waited out, never the
listener's end. UDP: each client address gets its own connected socket to the container (90 s
idle, as docker-proxy's UDP conntrack timeout; at most MAX_UDP, least recent first out),
replies go back from the published socket.
"""
from __future__ import annotations

import errno
import os
import socket
import struct
import threading
import time
from collections import OrderedDict

from runtime.network import adopt, hand_over, taken_over

_ENV = "PYBUILD_PROXY"
# bounds, so a flood costs the holder at most ~2 x MAX_TCP threads and fds (read at import, so a
# test can lower them for the process it starts)
MAX_TCP = int(os.environ.get("PYBUILD_PROXY_MAX_TCP") or 1024)
MAX_UDP = int(os.environ.get("PYBUILD_PROXY_MAX_UDP") or 256)
UDP_IDLE = 90           # s, docker-proxy's UDP conntrack timeout
_running: dict[str, Proxy] = {}


class Proxy:
    """listeners: (socket, proto, container ip, container port) tuples."""

    def __init__(self, key: str, listeners: list[tuple]):
        self.key, self.listeners, self.closed = key, listeners, False
        self.open: set[socket.socket] = set()      # relayed connections, shut down by close()

    def start(self) -> Proxy:
        _running[self.key] = self
        self.threads = []
        for s, proto, ip, port in self.listeners:
            run = self._tcp if proto == "tcp" else self._udp
            t = threading.Thread(target=run, args=(s, (ip, port)), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def close(self) -> None:
        """Stop relaying; on return the published ports are free (a listener thread still in
        accept/recvfrom would keep its socket, and so the port, a moment after close)."""
        self.closed = True
        for s in [s for s, *_ in self.listeners] + list(self.open):
            try:
                s.shutdown(socket.SHUT_RDWR)   # wakes a thread blocked in accept/recv
            except OSError:
                pass
        for t in getattr(self, "threads", []):
            if t is not threading.current_thread():
                t.join(1)
        for s, *_ in self.listeners:
            s.close()

    def _tcp(self, lsock: socket.socket, target) -> None:
        """Accept until closed: an accept error (EMFILE, ECONNABORTED, EPROTO...) is waited out,
        never the listener's end; over MAX_TCP relayed connections a new one is closed at once."""
        slots = threading.BoundedSemaphore(MAX_TCP)
        while not self.closed:
            try:
                c, _ = lsock.accept()
            except OSError as e:
                if not self._waited_out(e):
                    return
                continue
            if not slots.acquire(blocking=False):
                c.close()
                continue
            try:
                threading.Thread(target=_relay, args=(c, target, self.open, slots),
                                 daemon=True).start()
            except RuntimeError:        # no thread to be had: this one is refused
                c.close()
                slots.release()

    def _waited_out(self, e: OSError) -> bool:
        """After a listener's error: False when the proxy is closed (the loop ends), else True
        once a short pause has let a shortage of fds or memory pass (the loop goes on)."""
        if self.closed or e.errno == errno.EBADF:
            return False
        time.sleep(0.05 if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
                   else 0)
        return True

    def _udp(self, lsock: socket.socket, target) -> None:
        """One connected socket per client address, at most MAX_UDP (the least recently heard
        goes first; an idle one ends by itself after UDP_IDLE s)."""
        peers: OrderedDict = OrderedDict()
        while True:
            try:
                data, addr = lsock.recvfrom(65536)
            except OSError as e:
                if not self._waited_out(e):
                    return
                continue
            if self.closed:
                return
            u = peers.get(addr)
            if u is None:
                while len(peers) >= MAX_UDP:
                    _, old = peers.popitem(last=False)
                    try:
                        old.shutdown(socket.SHUT_RDWR)      # its _udp_back ends and closes it
                    except OSError:
                        pass
                try:
                    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                except OSError:
                    time.sleep(0.05)                        # EMFILE: this datagram is lost
                    continue
                try:
                    u.connect(target)
                    peers[addr] = u
                    self.open.add(u)
                    threading.Thread(target=_udp_back, args=(u, lsock, addr, peers, self.open),
                                     daemon=True).start()
                except (OSError, RuntimeError):
                    peers.pop(addr, None)
                    self.open.discard(u)
                    u.close()
                    continue
            else:
                peers.move_to_end(addr)
            try:
                u.send(data)
            except OSError:
                pass


def _relay(c: socket.socket, target, live: set, slots: threading.BoundedSemaphore) -> None:
    try:
        _relay_one(c, target, live)
    finally:
        slots.release()


def _relay_one(c: socket.socket, target, live: set) -> None:
    try:        # no create_connection: its getaddrinfo may import the idna codec (EMFILE)
        u = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    except OSError:
        c.close()
        return
    try:
        u.settimeout(5)
        u.connect(target)
    except OSError:
        u.close()
        c.close()
        return
    u.settimeout(None)
    live.update((c, u))
    t = threading.Thread(target=_copy, args=(u, c), daemon=True)
    try:
        t.start()
    except RuntimeError:
        t = None
    if t is not None:
        _copy(c, u)
        t.join()
    live.difference_update((c, u))
    c.close()
    u.close()


def _copy(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _udp_back(u: socket.socket, lsock: socket.socket, addr, peers: dict, live: set) -> None:
    # SO_RCVTIMEO, not settimeout: a poll() wait would not wake on close()'s shutdown
    u.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", UDP_IDLE, 0))
    try:
        while data := u.recv(65536):
            lsock.sendto(data, addr)
    except OSError:
        pass
    if peers.get(addr) is u:
        peers.pop(addr, None)
    live.discard(u)
    u.close()


def stop(key: str | None) -> None:
    p = _running.pop(key, None) if key else None
    if p is not None:
        p.close()


def handoff(tree) -> tuple[int, ...]:
    """Before a supervisor re-execs into its monitor: the listening fds to keep (made
    inheritable) and, in the environment, what they are."""
    p = _running.get(getattr(getattr(tree, "network", None), "proxy_key", None) or "")
    if p is None:
        return ()
    return hand_over(_ENV, [p.key, *(f"{s.fileno()},{proto},{ip},{port}"
                                     for s, proto, ip, port in p.listeners)],
                     [s.fileno() for s, *_ in p.listeners])


def resume() -> None:
    """In the monitor: serve the sockets the supervisor handed over."""
    got = taken_over(_ENV)
    if got is None:
        return
    key, *items = got
    listeners = []
    for item in items:
        fd, proto, ip, port = item.split(",")
        listeners.append((adopt(int(fd)), proto, ip, int(port)))
    Proxy(key, listeners).start()
