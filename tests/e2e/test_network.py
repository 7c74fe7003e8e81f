"""docker's default bridge network as a user meets it, each command its own process, on real
veths, a real bridge and real iptables rules: `run -d -p` served to urllib (loopback and the
host's other address), addresses per container, container to container, outbound NAT seen by a
server outside, `--network none`, published ports and leases gone however the container ends,
concurrent creates, docker's error lines."""
from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import test_containers
from busybox_fixture import REPO, run_pybuild
from e2e_helpers import ok, one_error_line
from test_containers import pid_alive, poll, run_d, state

from runtime.network import leases
from runtime.network.bridge import BRIDGE

root = test_containers.root     # the fixture: a busybox store, every container removed after

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/sbin/iptables"),
                                reason="the bridge network needs root and iptables "
                                       "(run as root; apt-get install iptables)")

HTTPD = "mkdir -p /www && echo {text} >/www/index.html && exec httpd -f -p 80 -h /www"
LINGER = 1      # s: $PYBUILD_BRIDGE_LINGER for these tests (the default's own test sets none)
GONE = LINGER + 9   # s to wait for the bridge to go after its last container


@pytest.fixture(autouse=True)
def short_linger(monkeypatch):
    monkeypatch.setenv("PYBUILD_BRIDGE_LINGER", str(LINGER))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch(url: str, deadline: float = 10.0) -> str:
    end = time.monotonic() + deadline
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.read().decode()
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


def refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def inspect(ref: str) -> dict:
    [doc] = json.loads(ok(run_pybuild("inspect", ref)).stdout)
    return doc


def links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout


def nat_rules() -> str:
    return subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True, text=True,
                          check=True).stdout + subprocess.run(
        ["iptables", "-S"], capture_output=True, text=True, check=True).stdout


def host_address() -> str:
    """An address of this host other than loopback (the one of its default route)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.123", 9))       # no packet is sent: picks the outgoing address
        return s.getsockname()[0]


def nothing_left() -> bool:
    """No lease, no bridge, no rule of ours once no container uses the network."""
    return (not leases.held() and f" {BRIDGE}:" not in links() and BRIDGE not in nat_rules())


def test_run_d_publish_serves_a_file_and_leaves_nothing(root):
    port = free_port()
    cid = run_d("-p", f"127.0.0.1:{port}:80", "busybox", "sh", "-c", HTTPD.format(text="hi"))
    assert fetch(f"http://127.0.0.1:{port}/") == "hi\n"
    doc = inspect(cid)
    ns = doc["NetworkSettings"]
    subnet = ipaddress.ip_network(f"{ns['Gateway']}/{ns['IPPrefixLen']}", strict=False)
    assert ipaddress.ip_address(ns["IPAddress"]) in subnet and ns["IPAddress"] != ns["Gateway"]
    assert ns["Networks"]["bridge"]["IPAddress"] == ns["IPAddress"]
    assert ns["MacAddress"] == "02:42:" + ":".join(f"{int(x):02x}" for x in ns["IPAddress"].split("."))
    assert ns["Ports"] == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    assert doc["HostConfig"]["NetworkMode"] == "bridge"
    assert doc["HostConfig"]["PortBindings"] == {"80/tcp": [{"HostIp": "127.0.0.1",
                                                            "HostPort": str(port)}]}
    assert f"127.0.0.1:{port}->80/tcp" in ok(run_pybuild("ps")).stdout
    assert ok(run_pybuild("port", cid)).stdout == f"80/tcp -> 127.0.0.1:{port}\n"
    assert ok(run_pybuild("port", cid, "80")).stdout == f"127.0.0.1:{port}\n"
    one_error_line(run_pybuild("port", cid, "81/udp"), "No public port '81/udp' published for")
    r = ok(run_pybuild("exec", cid, "sh", "-c", "cat /etc/hosts; ip -o -4 addr; ip route"))
    assert r.stdout.splitlines()[6] == f"{ns['IPAddress']}\t{cid[:12]}"
    assert f"default via {ns['Gateway']} dev eth0" in r.stdout
    veth = state(root, cid)["network"]["veth"]
    assert f" {veth}@" in links()

    ok(run_pybuild("rm", "-f", cid))
    assert refused("127.0.0.1", port)
    assert f" {veth}@" not in links() and ns["IPAddress"] not in leases.held()
    poll(nothing_left, GONE)


def test_publish_on_every_address_and_publish_all(root):
    port = free_port()
    cid = run_d("-p", f"{port}:80", "-P", "--expose", "81", "busybox", "sh", "-c",
                HTTPD.format(text="all"))
    assert fetch(f"http://127.0.0.1:{port}/") == "all\n"
    assert fetch(f"http://{host_address()}:{port}/") == "all\n"
    ports = inspect(cid)["NetworkSettings"]["Ports"]
    six = socket.has_ipv6 and os.path.exists("/proc/net/if_inet6")
    assert ports["80/tcp"] == [{"HostIp": "0.0.0.0", "HostPort": str(port)}] + (
        [{"HostIp": "::", "HostPort": str(port)}] if six else [])
    if six:
        assert fetch(f"http://[::1]:{port}/") == "all\n"
    b81 = ports["81/tcp"][0]
    assert b81["HostIp"] == "0.0.0.0" and int(b81["HostPort"]) > 1024
    row = ok(run_pybuild("ps", "--format", "{{.Ports}}")).stdout.strip()
    assert row == (f"0.0.0.0:{port}->80/tcp, :::{port}->80/tcp, 0.0.0.0:{b81['HostPort']}->81/tcp, "
                   f":::{b81['HostPort']}->81/tcp" if six else
                   f"0.0.0.0:{port}->80/tcp, 0.0.0.0:{b81['HostPort']}->81/tcp")
    assert ok(run_pybuild("port", cid, "80")).stdout == f"0.0.0.0:{port}\n" + (
        f"[::]:{port}\n" if six else "")
    ok(run_pybuild("rm", "-f", cid))
    assert refused("127.0.0.1", port) and refused("127.0.0.1", int(b81["HostPort"]))


def test_two_containers_have_their_own_addresses_and_reach_each_other(root):
    a = run_d("busybox", "sh", "-c", HTTPD.format(text="from-a"))
    b = run_d("busybox", "sleep", "30")
    ip_a = inspect(a)["NetworkSettings"]["IPAddress"]
    ip_b = inspect(b)["NetworkSettings"]["IPAddress"]
    assert ip_a != ip_b
    own = ok(run_pybuild("exec", b, "ip", "-o", "-4", "addr", "show", "eth0")).stdout
    assert f"inet {ip_b}/" in own
    got = poll(lambda: run_pybuild("exec", b, "wget", "-qO-", f"http://{ip_a}/").stdout)
    assert got == "from-a\n"
    ok(run_pybuild("rm", "-f", a, b))
    poll(nothing_left, GONE)


@pytest.fixture
def outside():
    """A network namespace "outside" the host, reached through a veth of its own (198.51.100.0/24,
    TEST-NET-2), with a TCP server that answers with the address it sees the client at."""
    tag = os.urandom(3).hex()
    ns, host_if = f"pbnet-out-{tag}", f"pbo{tag}"
    sh = ["sh", "-c", f"ip netns add {ns} && ip link add {host_if} type veth peer name eth0 netns {ns}"
          f" && ip addr add 198.51.100.1/24 dev {host_if} && ip link set {host_if} up"
          f" && ip -n {ns} addr add 198.51.100.2/24 dev eth0 && ip -n {ns} link set eth0 up"
          f" && ip -n {ns} link set lo up"]
    subprocess.run(sh, check=True)
    server = ("import socket; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, "
              "socket.SO_REUSEADDR, 1); s.bind(('198.51.100.2', 8080)); s.listen()\n"
              "while True:\n c, a = s.accept(); c.recv(4096)\n"
              " c.sendall(b'HTTP/1.0 200 OK\\r\\n\\r\\n' + a[0].encode()); c.close()")
    proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", server])
    try:
        yield "198.51.100.2", "198.51.100.1", ns
    finally:
        proc.kill()
        proc.wait()
        subprocess.run(["ip", "link", "del", host_if], check=False)   # its peer goes with it
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert f" {host_if}@" not in links()


def test_outbound_nat_shows_the_hosts_address(root, outside):
    server, host_side, _ = outside
    r = ok(run_pybuild("run", "--rm", "busybox", "sh", "-c",
                       f"for i in 1 2 3 4 5; do wget -qO- http://{server}:8080/ && exit; sleep 0.2; done"))
    assert r.stdout == host_side       # masqueraded: the server never sees 172.x
    poll(nothing_left, GONE)


def test_network_none_has_only_loopback_and_host_keeps_the_hosts(root):
    r = ok(run_pybuild("run", "--rm", "--network", "none", "busybox", "ip", "-o", "link"))
    assert [ln.split(":")[1].strip() for ln in r.stdout.splitlines()] == ["lo"]
    r = ok(run_pybuild("run", "--rm", "busybox", "ip", "-o", "link"))
    assert [ln.split(":")[1].strip().split("@")[0] for ln in r.stdout.splitlines()] == ["lo", "eth0"]


def test_foreground_run_publishes_while_it_runs(root):
    port = free_port()
    # --init: httpd as pid 1 would ignore the forwarded SIGTERM (docker's rule too)
    p = subprocess.Popen([sys.executable, "-m", "builder", "run", "--rm", "--init", "-p",
                          f"127.0.0.1:{port}:80", "busybox", "sh", "-c", HTTPD.format(text="fg")],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert fetch(f"http://127.0.0.1:{port}/") == "fg\n"
    finally:
        p.send_signal(signal.SIGTERM)       # forwarded: httpd ends, so does the run
        try:
            p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()                        # never leave a run (and its lease) behind
            p.communicate()
            raise
    assert refused("127.0.0.1", port)
    poll(nothing_left, GONE)


def test_container_ending_on_its_own_frees_everything(root):
    port = free_port()
    cid = run_d("-p", f"127.0.0.1:{port}:80", "busybox", "sh", "-c", "sleep 0.5")
    ip = inspect(cid)["NetworkSettings"]["IPAddress"]
    assert ok(run_pybuild("wait", cid)).stdout == "0\n"
    poll(lambda: refused("127.0.0.1", port) and ip not in leases.held())
    assert inspect(cid)["NetworkSettings"]["IPAddress"] == ""
    poll(nothing_left, GONE)


def test_kill_9_of_supervisor_and_container_leaves_nothing(root):
    port = free_port()
    cid = run_d("-p", f"127.0.0.1:{port}:80", "busybox", "sh", "-c", HTTPD.format(text="k"))
    assert fetch(f"http://127.0.0.1:{port}/") == "k\n"
    st = state(root, cid)
    veth, ip = st["network"]["veth"], st["network"]["ip"]
    sup = int(str(st["supervisor"]).partition(".")[0])
    os.kill(sup, signal.SIGKILL)
    os.kill(st["pid"], signal.SIGKILL)
    poll(lambda: not pid_alive(sup) and not pid_alive(st["pid"]))
    poll(lambda: refused("127.0.0.1", port), 2)    # the leader shows Z before its threads are gone
    poll(lambda: f" {veth}@" not in links())           # the veth died with the netns
    assert ip not in leases.held()                     # the dead holder's lease is reclaimed
    ok(run_pybuild("rm", "-f", cid))                   # docker's way out of a dead container
    poll(nothing_left, GONE)


def run_d_at_once(n: int, *args: str) -> list[str]:
    """`pybuild run -d ARGS` n times at once, each its own process: the container IDs."""
    cmd = [sys.executable, "-m", "builder", "run", "-d", *args]
    procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(n)]
    ids = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        ids.append(out.strip())
    return ids


def test_containers_created_at_once_never_share_an_address(root):
    ids = run_d_at_once(4, "busybox", "sleep", "30")
    ips = [state(root, c)["network"]["ip"] for c in ids]
    assert len(set(ips)) == 4, ips
    ok(run_pybuild("rm", "-f", *ids))
    poll(nothing_left, GONE)


def test_port_conflict_and_bad_network_flags(root):
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run_pybuild("run", "-d", "-p", f"{port}:80", "busybox", "sleep", "30")
        one_error_line(r, f"Bind for 0.0.0.0:{port} failed: port is already allocated", code=125)
        r = run_pybuild("run", "--rm", "-p", f"127.0.0.1:{port}:80", "busybox", "true")
        one_error_line(r, f"Bind for 127.0.0.1:{port} failed: port is already allocated", code=125)
    assert "running" not in ok(run_pybuild("ps", "-a", "--format", "{{.State}}")).stdout
    for args, words in ((["--network", "foo"], "network foo not found"),
                        (["-p", "abc"], "invalid containerPort: abc"),
                        (["-p", "1.2.3:80:80"], "invalid IP address: 1.2.3"),
                        (["-p", "8000-8002:80-81"], "invalid ranges specified for container and "
                                                    "host Ports: 80-81 and 8000-8002"),
                        (["-p", "80/sctpx"], "invalid proto: sctpx"),
                        (["--expose", "80/foo"], "invalid proto: foo"),
                        (["-P", "--expose", "0"], "invalid port: 0"),
                        (["--add-host", "foo"], 'bad format for add-host: "foo"'),
                        (["--network", "none", "-p", "80"], "conflicting options: port "
                                                             "publishing and the container type")):
        one_error_line(run_pybuild("run", "--rm", *args, "busybox", "true"), words, code=125)
    poll(nothing_left, GONE)


def test_add_host_and_hosts_file(root):
    r = ok(run_pybuild("run", "--rm", "--hostname", "box", "--add-host", "db:10.1.2.3",
                       "--add-host", "gw:host-gateway", "busybox", "sh", "-c",
                       "cat /etc/hosts; ip -o -4 addr show eth0; ip route"))
    lines = r.stdout.splitlines()
    assert lines[:6] == ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
                         "fe00::0\tip6-localnet", "ff00::0\tip6-mcastprefix",
                         "ff02::1\tip6-allnodes", "ff02::2\tip6-allrouters"]
    gateway = next(ln.split()[2] for ln in lines if ln.startswith("default via"))
    own = next(ln.split()[3].split("/")[0] for ln in lines if " inet " in ln)
    assert lines[6:9] == ["10.1.2.3\tdb", f"{gateway}\tgw", f"{own}\tbox"]
    r = ok(run_pybuild("run", "--rm", "--network", "host", "busybox", "cat", "/etc/hosts"))
    assert r.stdout.startswith(f"127.0.0.1\tlocalhost {os.uname().nodename}\n")


def test_the_issues_check_on_a_built_image_and_its_exposed_port(root, tmp_path):
    """`run -d -p 127.0.0.1:PORT:80 IMAGE httpd -f -p 80 -h /www` on an image built here; -P
    publishes the image's EXPOSE."""
    (tmp_path / "index.html").write_text("built\n")
    ok(run_pybuild("build", "-q", "-t", "www", "-f", "-", str(tmp_path), input=(
        "FROM busybox\nCOPY index.html /www/\nEXPOSE 80\nCMD [\"httpd\", \"-f\", \"-p\", \"80\", "
        "\"-h\", \"/www\"]\n")))
    port = free_port()
    a = run_d("-p", f"127.0.0.1:{port}:80", "www", "httpd", "-f", "-p", "80", "-h", "/www")
    assert fetch(f"http://127.0.0.1:{port}/") == "built\n"
    b = run_d("-P", "www")
    binding = inspect(b)["NetworkSettings"]["Ports"]["80/tcp"][0]
    assert fetch(f"http://127.0.0.1:{binding['HostPort']}/") == "built\n"
    assert inspect(b)["Config"]["ExposedPorts"] == {"80/tcp": {}}
    assert inspect(b)["HostConfig"]["PublishAllPorts"] is True
    ok(run_pybuild("rm", "-f", a, b))
    assert refused("127.0.0.1", port) and refused("127.0.0.1", int(binding["HostPort"]))
    poll(nothing_left, GONE)


def connects_from(ns: str, host: str, port: int) -> str:
    """From inside netns `ns`: what a TCP connect to host:port gets (the reply's first line,
    or the error's name)."""
    code = (f"import socket\ntry:\n c = socket.create_connection(({host!r}, {port}), timeout=1.5)\n"
            " c.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); print(c.recv(4096).decode().splitlines()[-1])\n"
            "except OSError as e:\n print(type(e).__name__)")
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_lan_host_routing_the_subnet_reaches_only_published_ports(root, outside):
    """A host on the LAN with a route to the bridge's subnet through this host (ip_forward is
    1): an unpublished port is dropped, the published one (the proxy, on the gateway) answers;
    the containers still reach each other and, NATed, the outside."""
    server, host_side, ns = outside
    port = free_port()
    a = run_d("-p", f"{port}:80", "busybox", "sh", "-c", HTTPD.format(text="from-a"))
    b = run_d("busybox", "sh", "-c", HTTPD.format(text="from-b"))
    ns_a, ns_b = inspect(a)["NetworkSettings"], inspect(b)["NetworkSettings"]
    subnet = ipaddress.ip_network(f"{ns_a['Gateway']}/{ns_a['IPPrefixLen']}", strict=False)
    subprocess.run(["ip", "-n", ns, "route", "add", str(subnet), "via", host_side], check=True)
    poll(lambda: connects_from(ns, ns_a["Gateway"], port) == "from-a")    # routed: published
    assert connects_from(ns, ns_b["IPAddress"], 80) == "TimeoutError"      # dropped
    assert connects_from(ns, ns_a["IPAddress"], 80) == "TimeoutError"
    got = poll(lambda: run_pybuild("exec", b, "wget", "-qO-", f"http://{ns_a['IPAddress']}/").stdout)
    assert got == "from-a\n"
    r = ok(run_pybuild("exec", a, "wget", "-qO-", f"http://{server}:8080/"))
    assert r.stdout == host_side
    rules = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True,
                           check=True).stdout
    assert f"-A FORWARD -o {BRIDGE} -j ACCEPT\n" not in rules
    ok(run_pybuild("rm", "-f", a, b))
    poll(nothing_left, GONE)


def test_a_crash_loop_keeps_its_bridge_and_ends_clean(root):
    """--restart always on a command that fails: the supervisor's backoff (it stays alive) does
    not have the bridge torn down and rebuilt at each restart; rm -f then leaves nothing."""
    cid = run_d("--restart", "always", "busybox", "sh", "-c", "sleep 0.2; exit 3")
    index = Path(f"/sys/class/net/{BRIDGE}/ifindex")
    first = index.read_text()
    poll(lambda: inspect(cid)["RestartCount"] >= 3, 15)
    assert index.read_text() == first       # the same bridge all along
    ok(run_pybuild("rm", "-f", cid))
    poll(nothing_left, GONE)


def test_back_to_back_runs_reuse_the_bridge_which_goes_after_the_linger(root, monkeypatch):
    """A loop of `run --rm` keeps one pybuild0 (rebuilding it costs ~90 ms a run); it goes
    leases.LINGER seconds after the last one, and no process keeps a caller's fd meanwhile."""
    monkeypatch.delenv("PYBUILD_BRIDGE_LINGER")
    index = Path(f"/sys/class/net/{BRIDGE}/ifindex")
    r, w = os.pipe()
    p = subprocess.Popen([sys.executable, "-m", "builder", "run", "--rm", "busybox", "true"],
                         cwd=REPO, pass_fds=(w,), stdout=subprocess.DEVNULL)
    os.close(w)
    assert p.wait(timeout=60) == 0
    start = time.monotonic()
    assert os.read(r, 1) == b""            # EOF: the lingering sweep holds no inherited fd
    assert time.monotonic() - start < 2
    os.close(r)
    first = index.read_text()
    ok(run_pybuild("run", "--rm", "busybox", "true"))
    assert index.read_text() == first          # the same bridge
    ended = time.monotonic()
    assert f" {BRIDGE}:" in links()            # it lingers
    poll(nothing_left, leases.LINGER + 10)
    assert time.monotonic() - ended >= leases.LINGER - 1
