"""The embedded DNS server of a container on a user-defined network (docker's 127.0.0.11), as a
user meets it through busybox's nslookup, each command its own process, on real netns, veths and
bridges: names, aliases, short IDs and NAME.NETWORK of peers, nothing of another network, what
is not ours forwarded to --dns (a UDP server of this test on a loopback address of the host:
no internet needed), nothing forwarded from --internal, resolv.conf and /etc/hosts as the tests'
own dockerd writes them, a foreground and a detached container's server, after a restart, and
nothing left listening once the container is gone, however it went."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import test_containers
import test_user_networks
from busybox_fixture import REPO, run_pybuild
from e2e_helpers import ok, one_error_line
from test_containers import pid_alive, poll, run_d, state
from test_network import GONE, links
from test_user_networks import host_side_gone

root = test_containers.root                 # the fixtures: a busybox store,
network = test_user_networks.network        # user networks made and removed,
short_linger = test_user_networks.short_linger

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/sbin/iptables"),
                                reason="user networks need root and iptables "
                                       "(run as root; apt-get install iptables)")

OUTSIDE = "203.0.113.7"         # what the test's upstream answers for outside.test


@pytest.fixture
def upstream():
    """A DNS server on 127.x.y.z:53 of the host: A OUTSIDE for outside.test (no AAAA), NXDOMAIN for any
    other name; yields (its address, the names it was asked)."""
    addr = f"127.{os.getpid() % 250 + 1}.{os.urandom(1)[0] % 250 + 1}.53"
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((addr, 53))
    sock.settimeout(0.2)
    asked: list[str] = []
    stop = []

    def serve():
        from runtime.network import dns
        while not stop:
            try:
                msg, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            q = dns.Query(msg)
            asked.append(q.name)
            if q.name == "outside.test":
                out = dns.reply(q, answers=[dns._rr(dns.A, socket.inet_aton(OUTSIDE))]
                                if q.qtype == dns.A else [])
            else:
                out = dns.reply(q, 3)        # NXDOMAIN
            sock.sendto(out, peer)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield addr, asked
    stop.append(1)
    t.join()
    sock.close()


def nslookup(*run_args: str, name: str) -> subprocess.CompletedProcess:
    return run_pybuild("run", "--rm", *run_args, "busybox", "nslookup", name)


def addresses(out: str) -> list[str]:
    """The answer's addresses in busybox nslookup's output (the server's own line left out)."""
    return [ln.split()[1] for ln in out.splitlines()
            if ln.startswith("Address:") and "#" not in ln and ":53" not in ln]


def test_names_aliases_fqdn_forwarding_and_another_network(root, network, upstream):
    dns_ip, asked = upstream
    a, b = network(), network()
    web = run_d("--name", "pbt-dweb", "--network", a["Name"], "--network-alias", "www",
                "busybox", "sleep", "60")
    db = run_d("--name", "pbt-ddb", "--network", a["Name"], "--network-alias", "www",
               "busybox", "sleep", "60")
    ip, ip2 = state(root, web)["network"]["ip"], state(root, db)["network"]["ip"]
    # a foreground peer: its server lives in its `pybuild run`
    for name in ("pbt-dweb", web[:12], f"pbt-dweb.{a['Name']}", "PBT-DWEB"):
        r = ok(nslookup("--network", a["Name"], "--dns", dns_ip, name=name))
        assert addresses(r.stdout) == [ip], (name, r.stdout)
    r = ok(nslookup("--network", a["Name"], name="www"))
    assert sorted(addresses(r.stdout)) == sorted([ip, ip2])
    r = ok(run_pybuild("run", "--rm", "--network", a["Name"], "busybox", "nslookup", ip))
    assert f"name = pbt-dweb.{a['Name']}" in r.stdout
    # not a name of the network: forwarded to --dns
    r = ok(nslookup("--network", a["Name"], "--dns", dns_ip, name="outside.test"))
    assert addresses(r.stdout) == [OUTSIDE] and "outside.test" in asked
    # a detached peer's server (the supervisor's monitor), through exec
    cli = run_d("--network", a["Name"], "--dns", dns_ip, "busybox", "sleep", "60")
    r = ok(run_pybuild("exec", cli, "nslookup", "pbt-dweb"))
    assert addresses(r.stdout) == [ip]
    assert addresses(ok(run_pybuild("exec", cli, "nslookup", "outside.test")).stdout) == [OUTSIDE]
    # another network: web is not a name there; asked upstream, which knows it not
    del asked[:]
    r = nslookup("--network", b["Name"], "--dns", dns_ip, name="pbt-dweb")
    assert r.returncode == 1 and "NXDOMAIN" in r.stdout and ip not in r.stdout
    assert "pbt-dweb" in asked
    r = nslookup("--network", b["Name"], "--dns", dns_ip, name=f"pbt-dweb.{a['Name']}")
    assert "NXDOMAIN" in r.stdout and ip not in r.stdout
    # a peer gone is a name no more
    ok(run_pybuild("rm", "-f", db))
    r = ok(run_pybuild("exec", cli, "nslookup", "www"))
    assert addresses(r.stdout) == [ip]


def test_internal_network_forwards_nothing(root, network, upstream):
    dns_ip, asked = upstream
    net = network("--internal")
    web = run_d("--name", "pbt-iweb", "--network", net["Name"], "busybox", "sleep", "60")
    r = ok(nslookup("--network", net["Name"], "--dns", dns_ip, name="pbt-iweb"))
    assert addresses(r.stdout) == [state(root, web)["network"]["ip"]]
    r = nslookup("--network", net["Name"], "--dns", dns_ip, name="outside.test")
    assert r.returncode == 1 and "SERVFAIL" in r.stdout and not asked


def _etc(run, *args: str) -> tuple[str, str, str]:
    """(resolv.conf, /etc/hosts, hostname) of a container run with args."""
    out = run(*args, "busybox", "sh", "-c", "cat /etc/resolv.conf; echo @@; cat /etc/hosts; "
                                             "echo @@; hostname")
    resolv, hosts, hostname = out.split("@@\n")
    return resolv, hosts, hostname.strip()


def test_resolv_conf_and_hosts_as_dockers(root, network, docker_busybox):
    dk = docker_busybox
    net = network("--subnet", "10.125.0.0/24")
    dnet = f"pbt-dk-{os.urandom(3).hex()}"
    subprocess.run([*dk, "network", "create", "--subnet", "10.126.0.0/24", dnet], check=True,
                   capture_output=True)
    try:
        def docker(*args):
            r = subprocess.run([*dk, "run", "--rm", *args], capture_output=True, text=True,
                               check=False)
            assert r.returncode == 0, r.stderr
            return r.stdout

        def pybuild(*args):
            return ok(run_pybuild("run", "--rm", *args)).stdout

        for flags in ((), ("--dns", "192.0.2.53", "--dns-search", "example.org",
                           "--dns-option", "ndots:2", "--dns-option", "timeout:3")):
            theirs = _etc(docker, "--network", dnet, *flags)
            ours = _etc(pybuild, "--network", net["Name"], *flags)
            assert ours[0] == theirs[0], flags
            assert ours[1].replace(ours[2], "HOST").replace("10.125.", "10.126.") == \
                theirs[1].replace(theirs[2], "HOST"), flags
            # off a user network --dns goes into resolv.conf itself
            assert _etc(pybuild, "--network", "none", *flags)[0] == \
                _etc(docker, "--network", "none", *flags)[0], flags
    finally:
        subprocess.run([*dk, "network", "rm", dnet], capture_output=True, check=False)
    for flags, line in ((("--mac-address", "zz"), "zz is not a valid mac address"),
                        (("--dns", "zz"), 'invalid argument "zz" for "--dns" flag: zz is not an '
                                          "ip address"),
                        (("--dns-search", "a..b"), 'invalid argument "a..b" for "--dns-search" '
                                                   "flag: a..b is not a valid domain")):
        one_error_line(run_pybuild("run", "--rm", *flags, "busybox", "true"), line, code=125)
        assert subprocess.run([*dk, "run", "--rm", "--network", "none", *flags, "busybox", "true"],
                              capture_output=True, text=True).stderr.count(line) == 1


def test_flags_recorded_for_start_and_inspect(root, network, upstream):
    dns_ip, _ = upstream
    net = network()
    cid = ok(run_pybuild("create", "--network", net["Name"], "--dns", dns_ip, "--dns-search",
                         "example.org", "--dns-option", "ndots:1", "--mac-address",
                         "92:d0:c6:0a:29:33", "busybox", "sleep", "60")).stdout.strip()
    ok(run_pybuild("start", cid))
    r = ok(run_pybuild("exec", cid, "sh", "-c", "cat /etc/resolv.conf; ip link show eth0; "
                                                "nslookup outside.test."))
    assert r.stdout.startswith("search example.org\nnameserver 127.0.0.11\noptions ndots:1\n")
    assert "link/ether 92:d0:c6:0a:29:33" in r.stdout and addresses(r.stdout) == [OUTSIDE]
    [doc] = json.loads(ok(run_pybuild("inspect", cid)).stdout)
    hc = doc["HostConfig"]
    assert (hc["Dns"], hc["DnsSearch"], hc["DnsOptions"]) == ([dns_ip], ["example.org"],
                                                              ["ndots:1"])
    assert doc["Config"]["MacAddress"] == "92:d0:c6:0a:29:33"
    assert doc["NetworkSettings"]["Networks"][net["Name"]]["MacAddress"] == "92:d0:c6:0a:29:33"
    [doc] = json.loads(ok(run_pybuild("inspect", run_d("busybox", "true"))).stdout)
    assert (doc["HostConfig"]["Dns"], doc["HostConfig"]["DnsSearch"]) == ([], [])


def test_restart_makes_the_server_again(root, network):
    """A restart policy's next run has a new netns: its server is made there again."""
    net = network()
    web = run_d("--name", "pbt-rweb", "--network", net["Name"], "busybox", "sleep", "60")
    ip = state(root, web)["network"]["ip"]
    cid = run_d("--network", net["Name"], "--restart", "on-failure:2", "busybox", "sh", "-c",
                "nslookup pbt-rweb | grep -q 'Address: " + ip + "' && echo found; exit 3")
    poll(lambda: state(root, cid)["status"] == "exited" and
         state(root, cid).get("restart_count") == 2, 20)
    assert ok(run_pybuild("logs", cid)).stdout == "found\n" * 3


def _server_gone(root, cid: str, veth: str, supervisor: int) -> bool:
    """No process of the container's left and its netns (which the server's sockets would
    keep, and with it the veth) gone."""
    return not pid_alive(supervisor) and f" {veth}@" not in links()


@pytest.mark.parametrize("how", ["rm -f", "kill -9"])
def test_nothing_listens_after_the_container(root, network, how):
    net = network()
    cid = run_d("--network", net["Name"], "busybox", "sleep", "60")
    st = state(root, cid)
    sup = int(st["supervisor"].split(".")[0])
    assert "127.0.0.11:53" in ok(run_pybuild("exec", cid, "netstat", "-lnu")).stdout
    if how == "rm -f":
        ok(run_pybuild("rm", "-f", cid))
    else:
        os.kill(sup, signal.SIGKILL)
        os.kill(st["pid"], signal.SIGKILL)
        time.sleep(0.2)
        ok(run_pybuild("rm", "-f", cid))
    poll(lambda: _server_gone(root, cid, st["network"]["veth"], sup), GONE)
    poll(lambda: host_side_gone(net), GONE)


def test_foreground_run_killed_leaves_nothing(root, network):
    """The foreground `pybuild run` serves its container's DNS: killed with -9, its sockets go
    with it, and the next run sweeps the bridge."""
    net = network()
    p = subprocess.Popen([sys.executable, "-m", "builder", "run", "--rm", "--network",
                          net["Name"], "busybox", "sh", "-c", "netstat -lnu; sleep 60"],
                         cwd=REPO, stdout=subprocess.PIPE, text=True)
    seen = "".join(p.stdout.readline() for _ in range(3))
    assert "127.0.0.11:53" in seen, seen
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    p.stdout.close()
    subprocess.run(["pkill", "-9", "-s", str(p.pid)], check=False)
    ok(run_pybuild("run", "--rm", "--network", "none", "busybox", "true"))
    poll(lambda: host_side_gone(net), GONE)
