"""The userspace relay of published ports (docker-proxy's job), stdlib only and small: it runs
on threads in the process that holds the container (the foreground `pybuild run`, or the
detached container's supervisor, whose lean monitor takes the listening sockets over through
its re-exec: `handoff` / `resume`). A port is bound exactly as long as that process lives or
until `stop` (the container's end): nothing stays listening after a kill -9.

TCP: each accepted connection gets a connection to container-ip:port and two copying threads.
UDP: each client address gets its own connected socket to the container (90 s idle, as
docker-proxy's UDP conntrack timeout), replies go back from the published socket.
"""
from __future__ import annotations

import os
import socket
import struct
import threading

_ENV = "PYBUILD_PROXY"
_running: dict[str, Proxy] = {}


class Proxy:
    """listeners: (socket, proto, container ip, container port) tuples."""

    def __init__(self, key: str, listeners: list[tuple]):
        self.key, self.listeners, self.closed = key, listeners, False
        self.open: set[socket.socket] = set()      # relayed connections, shut down by close()

    def start(self) -> Proxy:
        _running[self.key] = self
        for s, proto, ip, port in self.listeners:
            run = self._tcp if proto == "tcp" else self._udp
            threading.Thread(target=run, args=(s, (ip, port)), daemon=True).start()
        return self

    def close(self) -> None:
        self.closed = True
        for s in [s for s, *_ in self.listeners] + list(self.open):
            try:
                s.shutdown(socket.SHUT_RDWR)   # wakes a thread blocked in accept/recv
            except OSError:
                pass
            if s not in self.open:
                s.close()

    def _tcp(self, lsock: socket.socket, target) -> None:
        while not self.closed:
            try:
                c, _ = lsock.accept()
            except OSError:
                return
            threading.Thread(target=_relay, args=(c, target, self.open), daemon=True).start()

    def _udp(self, lsock: socket.socket, target) -> None:
        peers: dict = {}
        while True:
            try:
                data, addr = lsock.recvfrom(65536)
            except OSError:
                return
            if self.closed:
                return
            u = peers.get(addr)
            if u is None:
                u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                u.connect(target)
                peers[addr] = u
                self.open.add(u)
                threading.Thread(target=_udp_back, args=(u, lsock, addr, peers, self.open),
                                 daemon=True).start()
            try:
                u.send(data)
            except OSError:
                pass


def _relay(c: socket.socket, target, live: set) -> None:
    try:
        u = socket.create_connection(target, timeout=5)
    except OSError:
        c.close()
        return
    u.settimeout(None)
    live.update((c, u))
    t = threading.Thread(target=_copy, args=(u, c), daemon=True)
    t.start()
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
    u.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 90, 0))
    try:
        while data := u.recv(65536):
            lsock.sendto(data, addr)
    except OSError:
        pass
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
    items = []
    for s, proto, ip, port in p.listeners:
        os.set_inheritable(s.fileno(), True)
        items.append(f"{s.fileno()},{proto},{ip},{port}")
    os.environ[_ENV] = p.key + ";" + ";".join(items)
    return tuple(s.fileno() for s, *_ in p.listeners)


def resume() -> None:
    """In the monitor: serve the sockets the supervisor handed over."""
    text = os.environ.pop(_ENV, "")
    if not text:
        return
    key, *items = text.split(";")
    listeners = []
    for item in items:
        fd, proto, ip, port = item.split(",")
        os.set_inheritable(int(fd), False)
        listeners.append((socket.socket(fileno=int(fd)), proto, ip, int(port)))
    Proxy(key, listeners).start()
