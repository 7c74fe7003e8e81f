"""The bridge network's parts on their own: docker's -p parsing and error lines, the subnet
choice against host routes, the lease table across processes (a kill -9'd holder's address
comes back), and the userspace proxy relaying real TCP and UDP on loopback."""
from __future__ import annotations

import ipaddress
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from runtime.errors import SandboxError
from runtime.network import bridge, dns, leases, ports, proxy

root_only = pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/sbin/iptables"),
                               reason="leases make the bridge: run as root with iptables installed")


@pytest.mark.parametrize("raw, want", [
    ("80", [("", 0, 80, "tcp")]),
    ("8080:80", [("", 8080, 80, "tcp")]),
    ("127.0.0.1:8080:80/udp", [("127.0.0.1", 8080, 80, "udp")]),
    ("127.0.0.1::80", [("127.0.0.1", 0, 80, "tcp")]),
    ("[::1]:8080:80", [("::1", 8080, 80, "tcp")]),
    ("8000-8001:80-81", [("", 8000, 80, "tcp"), ("", 8001, 81, "tcp")]),
    ("80/TCP", [("", 0, 80, "tcp")]),
])
def test_parse_like_docker(raw, want):
    assert [(b["ip"], b["host"], b["port"], b["proto"]) for b in ports.parse(raw)] == want


def test_parse_host_range_for_one_port_and_errors():
    [b] = ports.parse("8000-8010:80")
    assert (b["host"], b["host_end"], b["port"]) == (8000, 8010, 80)
    for raw, msg in (("abc", "invalid containerPort: abc"), ("x:80", "invalid hostPort: x"),
                     ("1.2.3.4.5:1:80", "invalid IP address: 1.2.3.4.5"),
                     ("80/icmp", "invalid proto: icmp"), ("8080:", "no port specified: 8080:<empty>"),
                     ("70000", "invalid containerPort: 70000"),
                     ("1-3:1-2", "invalid ranges specified for container and host Ports: 1-2 and 1-3")):
        with pytest.raises(SandboxError) as e:
            ports.parse(raw)
        assert str(e.value) == msg


def test_exposed_and_the_spellings_ps_and_inspect_show():
    keys = ports.exposed({"80/tcp": {}, "0/tcp": {}, "90/foo": {}, "x": {}}, ["81-82", "53/UDP"])
    assert keys == ["80/tcp", "81/tcp", "82/tcp", "53/udp"]     # the image's bad ones left out
    for bad, msg in (("80/foo", "invalid proto: foo"), ("0", "invalid port: 0"),
                     ("0-2/udp", "invalid port: 0-2"), ("1:80", "invalid port format for --expose: 1:80"),
                     ("80/sctp", "sctp ports are not supported"),
                     ("8x", "invalid range format for --expose: 8x, error: strconv.ParseUint: "
                            "parsing '8x': invalid syntax")):
        with pytest.raises(SandboxError) as e:
            ports.exposed({}, [bad])
        assert str(e.value) == msg
    pub = [{"ip": "127.0.0.1", "host": 8800, "host_end": 0, "port": 80, "proto": "tcp"}]
    assert ports.ps_text(pub, keys) == "127.0.0.1:8800->80/tcp, 81/tcp, 82/tcp, 53/udp"
    assert ports.inspect_ports(pub, ["80/tcp", "53/udp"]) == {
        "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8800"}], "53/udp": None}


def test_subnet_avoids_host_routes():
    net = ipaddress.IPv4Network
    assert bridge.choose_subnet([net("192.0.2.0/24")]) == "172.17.0.0/16"
    assert bridge.choose_subnet([net("172.17.0.0/16"), net("172.18.5.0/24")]) == "172.19.0.0/16"
    assert bridge.choose_subnet([net("172.16.0.0/12")]) == "10.0.0.0/16"
    with pytest.raises(SandboxError, match="no free private /16"):
        bridge.choose_subnet([net("0.0.0.0/1"), net("128.0.0.0/1")])
    assert bridge.choose_subnet(bridge.host_routes()) not in [str(r) for r in bridge.host_routes()]


def test_bind_reports_a_taken_port_as_docker_does():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SandboxError) as e:
            ports.bind(ports.parse(f"127.0.0.1:{port}:80"))
        assert str(e.value) == f"Bind for 127.0.0.1:{port} failed: port is already allocated"
        [(b, s)] = ports.bind(ports.parse(f"127.0.0.1:{port}-{port + 20}:80"))   # a range: next free
        assert port < b["host"] <= port + 20
        s.close()


def test_proxy_relays_tcp_and_udp_and_stop_closes_the_ports():
    tcp = socket.create_server(("127.0.0.1", 0))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))

    def serve_tcp():
        c, _ = tcp.accept()
        c.sendall(b"got " + c.recv(100))
        c.close()

    def serve_udp():
        data, addr = udp.recvfrom(100)
        udp.sendto(b"got " + data, addr)
    for f in (serve_tcp, serve_udp):
        threading.Thread(target=f, daemon=True).start()
    bound = ports.bind(ports.parse("127.0.0.1::1/tcp") + ports.parse("127.0.0.1::1/udp"))
    targets = (tcp.getsockname()[1], udp.getsockname()[1])
    relays = [(s, b["proto"], "127.0.0.1", t) for (b, s), t in zip(bound, targets, strict=True)]
    proxy.Proxy("t", relays).start()
    (bt, _), (bu, _) = bound
    with socket.create_connection(("127.0.0.1", bt["host"]), timeout=5) as c:
        c.sendall(b"tcp")
        assert c.recv(100) == b"got tcp"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.settimeout(5)
        c.sendto(b"udp", ("127.0.0.1", bu["host"]))
        assert c.recvfrom(100)[0] == b"got udp"
    proxy.stop("t")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", bt["host"]), timeout=2)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", bu["host"]))          # free again
    tcp.close()
    udp.close()


@root_only
def test_a_killed_holders_lease_is_reclaimed(monkeypatch):
    monkeypatch.setenv("PYBUILD_BRIDGE_LINGER", "0")    # no linger after an earlier release
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = (f"import sys, time; sys.path.insert(0, {repo!r}); from runtime.network import leases; "
            "l = leases.acquire(); print(l.ip, flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    ip = p.stdout.readline().strip()
    assert leases.held().get(ip, "").startswith(f"{p.pid}.")
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert ip not in leases.held()
    leases.sweep()
    assert not os.path.exists(f"/sys/class/net/{bridge.BRIDGE}") or leases.held()


def _echo_server() -> socket.socket:
    """A TCP server on loopback echoing every connection until its client closes."""
    srv = socket.create_server(("127.0.0.1", 0), backlog=256)

    def one(c):
        with c:
            while data := c.recv(4096):
                c.sendall(data)

    def serve():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=one, args=(c,), daemon=True).start()
    threading.Thread(target=serve, daemon=True).start()
    return srv


def _echoes(port: int, text: bytes = b"ping", timeout: float = 2) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
            c.sendall(text)
            return c.recv(100) == text
    except OSError:
        return False


def _until(what, deadline: float = 5) -> bool:
    end = time.monotonic() + deadline
    while not what():
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def test_tcp_proxy_over_its_cap_refuses_the_extra_and_serves_again(monkeypatch):
    srv = _echo_server()
    monkeypatch.setattr(proxy, "MAX_TCP", 8)
    [(b, s)] = ports.bind(ports.parse("127.0.0.1::1/tcp"))
    proxy.Proxy("cap", [(s, "tcp", "127.0.0.1", srv.getsockname()[1])]).start()
    try:
        held = [socket.create_connection(("127.0.0.1", b["host"]), timeout=2) for _ in range(20)]
        served = 0
        for c in held:
            try:
                c.sendall(b"x")
                served += c.recv(10) == b"x"
            except OSError:             # closed by the proxy: over the cap
                pass
        assert served == 8
        for c in held:
            c.close()
        assert _until(lambda: _echoes(b["host"]))
    finally:
        proxy.stop("cap")
        srv.close()


def test_tcp_proxy_survives_running_out_of_fds():
    """EMFILE in accept (the holder's fd limit reached by relayed connections) is waited out:
    once the clients go, the published port serves again."""
    srv = _echo_server()
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = (f"import os, resource, sys, time; sys.path.insert(0, {repo!r})\n"
            "from runtime.network import ports, proxy\n"
            "[(b, s)] = ports.bind(ports.parse('127.0.0.1::1/tcp'))\n"
            f"proxy.Proxy('k', [(s, 'tcp', '127.0.0.1', {srv.getsockname()[1]})]).start()\n"
            "n = len(os.listdir('/proc/self/fd'))\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (n + 10, resource.getrlimit("
            "resource.RLIMIT_NOFILE)[1]))\n"
            "print(b['host'], flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        port = int(p.stdout.readline())
        held = [socket.create_connection(("127.0.0.1", port), timeout=2) for _ in range(30)]
        time.sleep(0.5)                 # the holder accepts ~5 and then meets EMFILE
        assert not _echoes(port, timeout=0.5)
        for c in held:
            c.close()
        assert _until(lambda: _echoes(port))
        assert p.poll() is None
    finally:
        p.kill()
        p.wait()
        srv.close()


def test_udp_proxy_from_many_source_ports_keeps_a_bounded_peer_table(monkeypatch):
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))

    def echo():
        while True:
            try:
                data, addr = udp.recvfrom(100)
            except OSError:
                return
            udp.sendto(data, addr)
    threading.Thread(target=echo, daemon=True).start()
    monkeypatch.setattr(proxy, "MAX_UDP", 4)
    [(b, s)] = ports.bind(ports.parse("127.0.0.1::1/udp"))
    p = proxy.Proxy("udp", [(s, "udp", "127.0.0.1", udp.getsockname()[1])]).start()
    try:
        for i in range(40):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
                c.settimeout(2)
                c.sendto(b"u%d" % i, ("127.0.0.1", b["host"]))
                assert c.recvfrom(100)[0] == b"u%d" % i
        assert _until(lambda: len(p.open) <= 4, 2), len(p.open)     # the older ones let go
    finally:
        proxy.stop("udp")
        udp.close()


@root_only
def test_a_release_that_cannot_start_its_sweep_removes_the_unused_bridge(monkeypatch):
    """posix_spawn refused (a process limit): no detached sweep can wait out the linger, so
    the last release removes the bridge itself, with no error for the run that ends."""
    import errno

    lease = leases.acquire()
    assert os.path.exists(f"/sys/class/net/{bridge.BRIDGE}")
    assert _until(lambda: not leases._waiter_busy())   # an earlier run's sweep sees the lease, ends

    def refused(*_a, **_k):
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
    monkeypatch.setattr(os, "posix_spawn", refused)
    leases.release(lease)
    assert not os.path.exists(f"/sys/class/net/{bridge.BRIDGE}") or leases.held()


def test_rules_isolate_bridges_and_internal_has_no_way_out():
    """Docker's two isolation stages for every bridge; --internal: no NAT, stage 1 drops what
    crosses its bridge's edge."""
    out = bridge._rules("br-aaaaaaaaaaaa", "172.18.0.0/16")
    assert out["*nat"] == ["-A POSTROUTING -s 172.18.0.0/16 ! -o br-aaaaaaaaaaaa -j MASQUERADE"]
    assert (f"-A {bridge.ISOLATION_1} -i br-aaaaaaaaaaaa ! -o br-aaaaaaaaaaaa -j "
            f"{bridge.ISOLATION_2}") in out["*filter"]
    assert f"-A {bridge.ISOLATION_2} -o br-aaaaaaaaaaaa -j DROP" in out["*filter"]
    internal = bridge._rules("br-bbbbbbbbbbbb", "10.1.0.0/24", internal=True)
    assert "*nat" not in internal
    assert f"-A {bridge.ISOLATION_1} -i br-bbbbbbbbbbbb ! -o br-bbbbbbbbbbbb -j DROP" in internal["*filter"]
    assert f"-A {bridge.ISOLATION_1} -o br-bbbbbbbbbbbb ! -i br-bbbbbbbbbbbb -j DROP" in internal["*filter"]
    assert all(bridge._ours("br-bbbbbbbbbbbb").match(r) for r in internal["*filter"]
               if r.startswith("-A"))


@pytest.mark.parametrize("subnet, gateway, msg", [
    ("", "10.0.0.1", "every ip-range or gateway must have a corresponding subnet"),
    ("10.0.0.0/33", "", "invalid CIDR address: 10.0.0.0/33"),
    ("10.0.0.1/24", "", "invalid subnet 10.0.0.1/24"),
    ("10.0.0.0/24", "10.0.1.1", "no matching subnet for gateway 10.0.1.1"),
])
def test_subnet_and_gateway_errors_like_docker(subnet, gateway, msg):
    from runtime.network import defs

    with pytest.raises(SandboxError, match=msg):
        defs._check(subnet, gateway)


def _query(name: str, qtype: int = 1, ident: int = 0x1234, edns: int = 0) -> bytes:
    q = struct.pack("!6H", ident, 0x0100, 1, 0, 0, 1 if edns else 0) + dns.encode_name(name)
    q += struct.pack("!HH", qtype, 1)
    if edns:
        q += b"\0" + struct.pack("!HHIH", 41, edns, 0, 0)
    return q


def _answers(msg: bytes) -> tuple[int, int, list]:
    """(id, rcode, [(type, data)]) of a reply; TC is rcode | 0x200."""
    ident, flags, qd, an = struct.unpack("!4H", msg[:8])
    _, off = dns._name(msg, 12)
    off += 4
    out = []
    for _ in range(an):
        _, off = dns._name(msg, off)
        rtype, _, _, n = struct.unpack("!HHIH", msg[off:off + 10])
        data = msg[off + 10:off + 10 + n]
        out.append((rtype, socket.inet_ntoa(data) if rtype == 1 else dns._name(msg, off + 10)[0]))
        off += 10 + n
    return ident, flags & 0x20F, out


@pytest.fixture
def resolver(tmp_path):
    """A Resolver of container `me` (short ID aaaaaaaaaaaa) on real loopback sockets, over lease
    files of two networks it is on and one it is not; its upstream a UDP socket of the test."""
    from cache import owner

    me, dead = owner.token(), "1.1"
    nets = {"111111111111": ("app", "0", [("10.1.0.2", "me aaaaaaaaaaaa", me),
                                          ("10.1.0.3", "web www bbbbbbbbbbbb", me),
                                          ("10.1.0.4", "db www cccccccccccc", me),
                                          ("10.1.0.5", "gone dddddddddddd", dead)]),
            "222222222222": ("back", "1", [("10.2.0.2", "me aaaaaaaaaaaa", me),
                                           ("10.2.0.3", "store eeeeeeeeeeee", me)]),
            "333333333333": ("other", "0", [("10.3.0.2", "stranger ffffffffffff", me)])}
    for short, (name, internal, entries) in nets.items():
        d = tmp_path / short / "leases"
        d.mkdir(parents=True)
        for ip, names, tok in entries:
            (d / ip).write_text(f"{tok}\n{names}\n{name}\n{internal}\n")
    upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    upstream.bind(("127.0.0.1", 0))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    r = dns.Resolver("t", [udp, tcp], "aaaaaaaaaaaa", [], str(tmp_path))
    r.forward_to = upstream
    yield r, udp.getsockname(), tcp.getsockname(), tmp_path
    r.close()
    upstream.close()


def _ask(addr, msg: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.settimeout(5)
        c.sendto(msg, addr)
        return c.recv(65535)


def test_resolver_answers_names_of_its_networks_only(resolver, monkeypatch):
    """A for names, aliases (every holder), short IDs, NAME.NETWORK; PTR; AAAA empty; a dead
    holder's and another network's names are not ours: forwarded, their ID kept (the upstream
    here answers nothing: SERVFAIL after TIMEOUT)."""
    r, udp, _, _ = resolver
    r.servers = ["127.0.0.1"]
    monkeypatch.setattr(dns, "TIMEOUT", 0.3)
    r.start()
    assert _answers(_ask(udp, _query("web")))[1:] == (0, [(1, "10.1.0.3")])
    assert _answers(_ask(udp, _query("WWW.")))[2] == [(1, "10.1.0.3"), (1, "10.1.0.4")]
    assert _answers(_ask(udp, _query("bbbbbbbbbbbb")))[2] == [(1, "10.1.0.3")]
    assert _answers(_ask(udp, _query("web.app")))[2] == [(1, "10.1.0.3")]
    assert _answers(_ask(udp, _query("store.back")))[2] == [(1, "10.2.0.3")]
    assert _answers(_ask(udp, _query("web", qtype=28))) == (0x1234, 0, [])
    assert _answers(_ask(udp, _query("3.0.1.10.in-addr.arpa", qtype=12)))[2] == [(12, "web.app")]
    r.port = r.forward_to.getsockname()[1]
    for name in ("gone", "stranger", "web.other"):
        assert _answers(_ask(udp, _query(name, ident=0x4321)))[:2] == (0x4321, 2), name
        msg, _ = r.forward_to.recvfrom(512)
        assert msg == _query(name, ident=0x4321)


def test_resolver_forwards_keeps_the_id_and_truncates_to_tcp(resolver):
    """An upstream's answer comes back as it is; over 512 bytes a UDP answer is TC without
    answers (EDNS0's larger size taken), the whole over TCP."""
    from cache import owner

    r, udp, tcp, tmp_path = resolver
    up = r.forward_to
    r.servers, r.port = ["127.0.0.1"], up.getsockname()[1]
    r.start()

    def serve():
        msg, peer = up.recvfrom(512)
        up.sendto(msg[:2] + struct.pack("!H", 0x8183) + msg[4:], peer)     # NXDOMAIN
    t = threading.Thread(target=serve)
    t.start()
    assert _answers(_ask(udp, _query("example.invalid", ident=0x0BAD)))[:2] == (0x0BAD, 3)
    t.join()
    d = tmp_path / "111111111111" / "leases"
    for i in range(40):
        (d / f"10.1.1.{i}").write_text(f"{owner.token()}\nmany{i} crowd {i:012x}\napp\n0\n")
    os.utime(d, ns=(1, 1))                    # a new mtime: read again
    _, rcode, ans = _answers(_ask(udp, _query("crowd")))
    assert rcode & 0x200 and ans == []
    assert len(_answers(_ask(udp, _query("crowd", edns=4096)))[2]) == 40
    with socket.create_connection(tcp, timeout=5) as c:
        q = _query("crowd")
        c.sendall(struct.pack("!H", len(q)) + q)
        assert len(_answers(dns._read_tcp(c))[2]) == 40


def test_resolver_on_internal_networks_only_forwards_nothing(resolver, monkeypatch):
    """moby's forwarding policy: no network with a way out, no upstream asked: SERVFAIL."""
    import shutil

    r, udp, _, tmp_path = resolver
    shutil.rmtree(tmp_path / "111111111111")
    monkeypatch.setattr(r, "forward", lambda *a: pytest.fail("forwarded"))
    r.start()
    assert _answers(_ask(udp, _query("store")))[2] == [(1, "10.2.0.3")]
    assert _answers(_ask(udp, _query("example.com")))[1] == 2


def test_resolver_never_answers_a_response_nor_itself(resolver):
    """A response (QR set), also one forged from the resolver's own address to itself (a
    container holds CAP_NET_RAW), gets no reply: no loop. It still answers queries after."""
    r, udp, _, _ = resolver
    r.start()
    response = bytes.fromhex("1234") + b"\x81\x80" + b"\x00" * 8
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.settimeout(0.5)
        c.sendto(response, udp)
        with pytest.raises(socket.timeout):
            c.recv(512)
    # one message from the resolver's own socket to itself: it must not answer itself
    sock = next(s for s in r.sockets if s.type == socket.SOCK_DGRAM)
    sock.sendto(_query("web"), udp)
    t0 = time.process_time()
    time.sleep(0.5)
    assert time.process_time() - t0 < 0.2        # no busy loop in this process
    assert _answers(_ask(udp, _query("web")))[1:] == (0, [(1, "10.1.0.3")])
