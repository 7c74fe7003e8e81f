"""docker's embedded DNS server (libnetwork's resolver at 127.0.0.11) without a daemon.

Each container on a user-defined network gets its own: `open_sockets`, called on the short
thread that has setns()ed into the container's netns (runtime.network.attach), binds a UDP
socket and a TCP listener to 127.0.0.11:53 there (127/8 is on lo: no iptables rule, no port
juggling); a socket keeps the netns it was made in, so the `Resolver` serving them runs on
threads of the process that already lives as long as the container (the foreground `pybuild
run`, or the detached container's supervisor, whose lean monitor takes the sockets over
through its re-exec: `handoff` / `resume`, as runtime.network.proxy does). Nothing is shared
between containers and nothing is left listening once that process ends, however it ends; a
restart policy's next run makes a new netns, and with it new sockets.

Answers come from the live endpoint registry (runtime.network.leases' lease files, read again
when a network's lease dir changes): A for a container name, --network-alias, short ID or
`NAME.NETWORK` of a container on a network this one is on (every address an alias shared by
several has), PTR for their addresses (`name.network.`), an empty NOERROR for other types of a
known name (AAAA: no IPv6 here). Anything else is forwarded as is (its ID kept) over UDP, or
TCP for a TCP query, from the host's netns (so a loopback server of the host works) to --dns, or
the host's resolv.conf servers, each tried for 2 s; none answering is SERVFAIL. A container on
--internal networks only forwards nothing (moby's SetForwardingPolicy(hasExternalAccess)):
SERVFAIL. Stdlib only, imported only for a user network.
"""
from __future__ import annotations

import os
import socket
import struct
import threading
import time

from runtime.network import adopt, hand_over, taken_over

ADDRESS = "127.0.0.11"          # docker's resolverIPSandbox
TTL = 600                       # docker's respTTL
TIMEOUT = 2.0                   # s per upstream server (docker's extIOTimeout is 4 s)
MAX_SERVERS = 3                 # docker's maxExtDNS
MAX_CONCURRENT = 100            # docker's maxConcurrent forwarded queries
A, PTR, AAAA, OPT = 1, 12, 28, 41
NOERROR, FORMERR, SERVFAIL = 0, 1, 2
_RACY_NS = 50_000_000           # 50 ms: above a coarse clock tick
_ENV = "PYBUILD_DNS"
_running: dict[str, Resolver] = {}


def open_sockets() -> list[socket.socket]:
    """In the container's netns (lo up): the UDP socket and the TCP listener on 127.0.0.11:53."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        udp.bind((ADDRESS, 53))
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((ADDRESS, 53))
        tcp.listen(64)
    except BaseException:
        udp.close()
        tcp.close()
        raise
    return [udp, tcp]


def upstreams(given: list[str], host_file: str = "/etc/resolv.conf") -> list[str]:
    """docker's rule: --dns if given, else the host's nameservers (loopback ones too: queries
    leave from the host's netns), else Google's, as docker's defaults."""
    if given:
        return list(given)[:MAX_SERVERS]
    from runtime.etcfiles import nameservers

    return (nameservers(host_file) or ["8.8.8.8", "8.8.4.4"])[:MAX_SERVERS]


# --- wire format (RFC 1035): just what a stub resolver's questions need ---

def _name(msg: bytes, off: int) -> tuple[str, int]:
    """The name at off (compression pointers followed, bounded) and the offset after it."""
    labels, end, hops = [], None, 0
    while True:
        n = msg[off]
        if n & 0xC0 == 0xC0:
            if hops > 16:
                raise ValueError("pointer loop")
            hops += 1
            if end is None:
                end = off + 2
            off = (n & 0x3F) << 8 | msg[off + 1]
            continue
        off += 1
        if n == 0:
            break
        labels.append(msg[off:off + n].decode("ascii", "replace"))
        off += n
    return ".".join(labels), off if end is None else end


def encode_name(name: str) -> bytes:
    out = b""
    for label in name.strip(".").split("."):
        if label:
            b = label.encode()[:63]
            out += bytes([len(b)]) + b
    return out + b"\0"


class Query:
    """One parsed question: id, flags, name (lower case, no trailing dot), type, where the
    question ends, and the largest UDP answer the asker takes (EDNS0's, at least 512)."""

    def __init__(self, msg: bytes):
        if len(msg) < 12:
            raise ValueError("short message")
        self.msg = msg
        self.id, self.flags, qd, _an, _ns, ar = struct.unpack("!6H", msg[:12])
        if self.flags & 0x8000 or qd != 1:
            raise ValueError("not one question")
        name, off = _name(msg, 12)
        self.qtype, self.qclass = struct.unpack("!HH", msg[off:off + 4])
        self.end = off + 4
        self.name = name.lower().rstrip(".")
        self.udp_size = 512
        if ar:
            try:
                _, o = _name(msg, self.end)
                rtype, size = struct.unpack("!HH", msg[o:o + 4])
                if rtype == OPT:
                    self.udp_size = max(512, size)
            except (IndexError, ValueError, struct.error):
                pass

    @property
    def opcode(self) -> int:
        return self.flags >> 11 & 0xF


def reply(q: Query, rcode: int = NOERROR, answers: list[bytes] = (), limit: int = 0) -> bytes:
    """The answer to q: its id and question, RD copied, RA set; over `limit` bytes (UDP) the
    answers are left out and TC set, so the asker retries over TCP."""
    flags = 0x8000 | (q.flags & 0x7900) | 0x0080 | rcode
    question = q.msg[12:q.end]
    body = b"".join(answers)
    if limit and 12 + len(question) + len(body) > limit:
        flags |= 0x0200
        answers, body = [], b""
    return struct.pack("!6H", q.id, flags, 1, len(answers), 0, 0) + question + body


def _rr(rtype: int, data: bytes) -> bytes:
    return b"\xc0\x0c" + struct.pack("!HHIH", rtype, 1, TTL, len(data)) + data


def servfail(msg: bytes) -> bytes | None:
    """SERVFAIL for a message parsed no further than its header (None: not even that, or a
    response: one is never answered, or a forged one from 127.0.0.11:53 to itself would make
    the server answer itself for ever, as miekg/dns's MsgIgnore drops it)."""
    if len(msg) < 12 or msg[2] & 0x80:
        return None
    try:
        return reply(Query(msg), SERVFAIL)
    except (IndexError, ValueError, struct.error):
        ident, flags = struct.unpack("!HH", msg[:4])
        return struct.pack("!6H", ident, 0x8000 | (flags & 0x7900) | 0x0080 | FORMERR, 0, 0, 0, 0)


# --- the names: the lease files of every user network this container is on ---

class Names:
    """What the container `cid12` may resolve, read from runtime.network.leases' lease files of
    each user network's state dir, again only when that dir's mtime changes (a join or leave
    renames a file there) or is too recent to trust; an endpoint whose holder is dead is not
    answered."""

    def __init__(self, cid12: str, state_dir: str = ""):
        from runtime.network import STATE_DIR

        self.cid12, self.state_dir = cid12, state_dir or STATE_DIR
        self.cache: dict[str, tuple[int, dict]] = {}

    def _read(self, d: str) -> dict:
        """ip -> endpoint of one network's lease dir (cached on its mtime)."""
        from runtime.network import Net, leases

        path = os.path.join(d, "leases")
        try:
            mtime = os.stat(path).st_mtime_ns
        except OSError:
            self.cache.pop(d, None)
            return {}
        hit = self.cache.get(d)
        if hit is not None and hit[0] == mtime:
            return hit[1]
        try:
            ips = [n for n in os.listdir(path) if not n.endswith(".tmp")]
        except OSError:
            ips = []
        eps = {ip: e for ip, e in leases.endpoints(Net(d), ips).items() if e and e["names"]}
        # a dir changed within the clock's coarse tick (tmpfs: a jiffy) may change again with
        # the same mtime: such a read is not kept (git's "racily clean" rule)
        if time.time_ns() - mtime > _RACY_NS:
            self.cache[d] = (mtime, eps)
        return eps

    def networks(self) -> list[tuple[str, bool, dict]]:
        """(network name, internal, {ip: endpoint}) of each user network the container is on."""
        try:
            dirs = sorted(n for n in os.listdir(self.state_dir) if len(n) == 12)
        except OSError:
            return []
        out = []
        for n in dirs:
            eps = self._read(os.path.join(self.state_dir, n))
            mine = [e for e in eps.values() if e["names"][-1] == self.cid12]
            if mine:
                out.append((mine[0]["network"], mine[0]["internal"], eps))
        return out

    def lookup(self, name: str, nets=None) -> list[str] | None:
        """The addresses of `name` (None: not a name of ours); `name.network` looks on that
        network only."""
        from cache import owner

        nets = self.networks() if nets is None else nets

        def on(eps: dict, want: str) -> list[str]:
            return sorted((ip for ip, e in eps.items()
                           if want in (n.lower() for n in e["names"]) and owner.alive(e["token"])),
                          key=lambda ip: tuple(int(x) for x in ip.split(".")))

        for netname, _, eps in nets:
            suffix = "." + netname.lower()
            ips = on(eps, name[:-len(suffix)]) if name.endswith(suffix) else []
            ips = ips or on(eps, name)
            if ips:
                return ips
        return None

    def reverse(self, ip: str, nets) -> str | None:
        from cache import owner

        for netname, _, eps in nets:
            e = eps.get(ip)
            if e is not None and owner.alive(e["token"]):
                return f"{e['names'][0]}.{netname}"
        return None


def _ptr_ip(name: str) -> str | None:
    parts = name.split(".")
    if len(parts) != 6 or parts[4:] != ["in-addr", "arpa"]:
        return None
    if not all(p.isdigit() and int(p) < 256 for p in parts[:4]):
        return None
    return ".".join(reversed(parts[:4]))


class Resolver:
    """Serves the sockets of open_sockets: local answers at once, forwarded UDP ones on a
    thread each (at most MAX_CONCURRENT; more are SERVFAIL at once), a thread per TCP
    connection (at most MAX_CONCURRENT, each closed after 10 s idle)."""

    def __init__(self, key: str, sockets: list[socket.socket], cid12: str, servers: list[str],
                 state_dir: str = ""):
        self.key, self.sockets, self.servers = key, sockets, servers
        self.names = Names(cid12, state_dir)
        self.port = 53                       # the upstreams' (a test's server has its own)
        self.closed = False
        self.slots = threading.BoundedSemaphore(MAX_CONCURRENT)     # forwarded UDP queries
        self.conns = threading.BoundedSemaphore(MAX_CONCURRENT)     # TCP connections
        self.lock = threading.Lock()         # Names' cache is shared by the threads

    def start(self) -> Resolver:
        _running[self.key] = self
        udp, tcp = self.sockets
        self.threads = [threading.Thread(target=self._udp, args=(udp,), daemon=True),
                        threading.Thread(target=self._tcp, args=(tcp,), daemon=True)]
        for t in self.threads:
            t.start()
        return self

    def close(self) -> None:
        self.closed = True
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)        # wakes a thread in recvfrom/accept
            except OSError:
                pass
        for t in getattr(self, "threads", []):
            if t is not threading.current_thread():
                t.join(1)
        for s in self.sockets:
            s.close()

    def answer(self, msg: bytes, limit: int = 0) -> tuple[bytes | None, Query | None]:
        """(the reply, None) when it is ours to give, else (None, the query to forward);
        (None, None): nothing to say (not a query)."""
        try:
            q = Query(msg)
        except (IndexError, ValueError, struct.error):
            return servfail(msg), None
        if q.opcode != 0 or q.qclass != 1:
            return None, q
        with self.lock:
            nets = self.names.networks()
            if q.qtype == PTR:
                ip = _ptr_ip(q.name)
                target = self.names.reverse(ip, nets) if ip else None
                if target is not None:
                    return reply(q, answers=[_rr(PTR, encode_name(target))], limit=limit), None
            else:
                ips = self.names.lookup(q.name, nets)
                if ips is not None:
                    rrs = [_rr(A, socket.inet_aton(ip)) for ip in ips] if q.qtype == A else []
                    return reply(q, answers=rrs, limit=limit), None
        if not any(not internal for _, internal, _ in nets):
            return reply(q, SERVFAIL), None          # only --internal networks: nothing leaves
        return None, q

    def forward(self, q: Query, tcp: bool) -> bytes:
        """q's answer from the first upstream server that gives one in TIMEOUT, else SERVFAIL."""
        for server in self.servers:
            try:
                if tcp:
                    with socket.create_connection((server, self.port), timeout=TIMEOUT) as s:
                        s.sendall(struct.pack("!H", len(q.msg)) + q.msg)
                        data = _read_tcp(s)
                else:
                    with socket.socket(socket.AF_INET6 if ":" in server else socket.AF_INET,
                                       socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                        s.settimeout(TIMEOUT)
                        s.connect((server, self.port))
                        s.send(q.msg)
                        while True:
                            data = s.recv(65535)
                            if data[:2] == q.msg[:2]:
                                break
            except (OSError, ValueError):
                continue
            if data and len(data) >= 12:
                return data
        return reply(q, SERVFAIL)

    def _udp(self, sock: socket.socket) -> None:
        while not self.closed:
            try:
                msg, peer = sock.recvfrom(65535)
            except OSError:
                if self.closed:
                    return
                continue
            if not msg:
                if self.closed:
                    return
                continue
            if len(msg) < 3 or msg[2] & 0x80 or peer == sock.getsockname():
                continue        # a response, or from ourselves: never answered (no loop)
            try:
                limit = Query(msg).udp_size
            except (IndexError, ValueError, struct.error):
                limit = 512
            out, q = self.answer(msg, limit)
            if out is not None:
                _send(sock, out, peer)
            elif q is not None:
                if not self.slots.acquire(blocking=False):
                    _send(sock, reply(q, SERVFAIL), peer)
                    continue
                threading.Thread(target=self._forward_udp, args=(sock, q, peer),
                                 daemon=True).start()

    def _forward_udp(self, sock, q: Query, peer) -> None:
        try:
            _send(sock, self.forward(q, tcp=False), peer)
        finally:
            self.slots.release()

    def _tcp(self, lsock: socket.socket) -> None:
        while not self.closed:
            try:
                conn, _ = lsock.accept()
            except OSError:
                if self.closed:
                    return
                time.sleep(0.05)        # EMFILE and the like: waited out
                continue
            if not self.conns.acquire(blocking=False):
                conn.close()
                continue
            threading.Thread(target=self._serve_tcp, args=(conn,), daemon=True).start()

    def _serve_tcp(self, conn: socket.socket) -> None:
        """Queries on one connection until it closes or idles 10 s."""
        try:
            conn.settimeout(10)
            while not self.closed:
                msg = _read_tcp(conn)
                if not msg:
                    return
                out, q = self.answer(msg)
                if out is None and q is not None:
                    out = self.forward(q, tcp=True)
                if out is None:
                    return
                conn.sendall(struct.pack("!H", len(out)) + out)
        except OSError:
            pass
        finally:
            conn.close()
            self.conns.release()


def _read_tcp(s: socket.socket) -> bytes:
    """One length-prefixed DNS message (b"" at the end of the stream)."""
    head = _read_n(s, 2)
    if len(head) < 2:
        return b""
    return _read_n(s, struct.unpack("!H", head)[0])


def _read_n(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _send(sock: socket.socket, data: bytes | None, peer) -> None:
    if data is None:
        return
    try:
        sock.sendto(data, peer)
    except OSError:
        pass


def stop(key: str | None) -> None:
    r = _running.pop(key or "", None)
    if r is not None:
        r.close()


def handoff(tree) -> tuple[int, ...]:
    """Before a supervisor re-execs into its monitor: the resolver's fds to keep (made
    inheritable) and, in the environment, what they are."""
    r = _running.get(getattr(getattr(tree, "network", None), "dns_key", None) or "")
    if r is None:
        return ()
    fds = [s.fileno() for s in r.sockets]
    return hand_over(_ENV, [r.key, r.names.cid12, ",".join(map(str, fds)), *r.servers], fds)


def resume() -> None:
    """In the monitor: serve the sockets the supervisor handed over."""
    got = taken_over(_ENV)
    if got is None:
        return
    key, cid12, fds, *servers = got
    Resolver(key, [adopt(int(fd)) for fd in fds.split(",")], cid12, servers).start()
