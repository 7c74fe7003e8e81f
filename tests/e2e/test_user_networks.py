"""User-defined networks as a docker user meets them, each command its own process, on real
veths, bridges and iptables rules: `network create|ls|inspect|rm|prune` and docker's lines,
containers finding each other by name, alias and short ID (busybox wget to busybox httpd, through
their embedded DNS servers: tests/e2e/test_network_dns.py has the server's own tests),
isolation from another network, --internal without a way out, --ip, and nothing of a network
left on the host once its last container ends, however it ends."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import test_containers
import test_network
from busybox_fixture import REPO, run_pybuild
from e2e_helpers import ok, one_error_line
from test_containers import poll, run_d, state
from test_network import GONE, HTTPD, links, nat_rules, run_d_at_once

from runtime.network import leases, user_net

root = test_containers.root
outside = test_network.outside     # the fixture: a server outside the host

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/sbin/iptables"),
                                reason="user networks need root and iptables "
                                       "(run as root; apt-get install iptables)")

# busybox's wget -T crashes (SIGSEGV) in this image: timeout(1) bounds a fetch instead, never
# as sh's last command (sh would exec it as pid 1, which ignores timeout's SIGTERM)
FETCH = ("for i in 1 2 3 4 5 6 7 8 9 10; do timeout 2 wget -qO- http://{host}/ && exit; sleep 0.2; "
         "done; exit 1")


@pytest.fixture(autouse=True)
def short_linger(monkeypatch):
    monkeypatch.setenv("PYBUILD_BRIDGE_LINGER", "1")


@pytest.fixture
def network(root):
    """A factory of networks (`network create` with the given flags), each removed after its
    containers, and then nothing of it left on the host."""
    made = []

    def create(*flags: str) -> dict:
        name = f"pbt-{os.urandom(3).hex()}"
        nid = ok(run_pybuild("network", "create", *flags, name)).stdout.strip()
        [doc] = json.loads(ok(run_pybuild("network", "inspect", name)).stdout)
        assert doc["Id"] == nid
        made.append(doc)
        return doc

    yield create
    ids = ok(run_pybuild("ps", "-aq")).stdout.split()
    if ids:
        ok(run_pybuild("rm", "-f", *ids))
    for doc in made:
        ok(run_pybuild("network", "rm", "-f", doc["Name"]))
    for doc in made:
        poll(lambda d=doc: host_side_gone(d) and not os.path.isdir(user_net(d).state_dir), GONE)


def host_side_gone(doc: dict) -> bool:
    """No bridge, lease or rule of this network on the host."""
    net = user_net(doc)
    held = leases.held(net) if os.path.isdir(net.state_dir) else {}
    return (not held and f" {net.bridge}:" not in links() and net.bridge not in nat_rules()
            and doc["IPAM"]["Config"][0]["Subnet"] not in nat_rules())


def resolve(cid: str, name: str) -> str:
    """busybox nslookup of name in container cid, asking its embedded DNS server (127.0.0.11)."""
    return run_pybuild("exec", cid, "nslookup", name).stdout


def test_create_ls_inspect_rm_and_dockers_lines(network):
    doc = network("--label", "team=a")
    name, nid = doc["Name"], doc["Id"]
    assert list(doc)[:5] == ["Name", "Id", "Created", "Scope", "Driver"]
    assert (doc["Scope"], doc["Driver"], doc["Internal"], doc["Labels"]) == ("local", "bridge",
                                                                          False, {"team": "a"})
    [cfg] = doc["IPAM"]["Config"]
    assert cfg["Subnet"].endswith(".0.0/16") and cfg["Gateway"] == cfg["Subnet"][:-6] + "0.1"
    rows = [ln.split() for ln in ok(run_pybuild("network", "ls")).stdout.splitlines()]
    assert rows[0] == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    assert [nid[:12], name, "bridge", "local"] in rows
    assert {r[1] for r in rows[1:]} >= {"bridge", "host", "none", name}
    assert ok(run_pybuild("network", "ls", "-q", "--filter", f"name={name}")).stdout == nid[:12] + "\n"
    other = network("--subnet", "10.123.0.0/24", "--gateway", "10.123.0.254", "--internal")
    assert other["IPAM"]["Config"] == [{"Subnet": "10.123.0.0/24", "Gateway": "10.123.0.254"}]
    assert other["Internal"] is True
    one_error_line(run_pybuild("network", "create", name),
                   f"network with name {name} already exists")
    one_error_line(run_pybuild("network", "create", "bridge"),
                   "bridge is a pre-defined network and cannot be created")
    one_error_line(run_pybuild("network", "create", "--subnet", "10.123.0.0/25", "x-overlap"),
                   "Pool overlaps with other one")
    one_error_line(run_pybuild("network", "create", "--subnet", "nonsense", "x-bad"),
                   "invalid CIDR address: nonsense")
    one_error_line(run_pybuild("network", "rm", "nosuchnet"), "network nosuchnet not found")
    one_error_line(run_pybuild("network", "inspect", "nosuchnet"), "No such network: nosuchnet")
    one_error_line(run_pybuild("run", "--rm", "--network", "nosuchnet", "busybox", "true"),
                   "network nosuchnet not found", code=125)
    one_error_line(run_pybuild("run", "--rm", "--network", name, "--ip", "172.30.9.9", "busybox",
                               "true"),
                   "user specified IP address is supported only when connecting to networks "
                   "with user configured subnets", code=125)
    one_error_line(run_pybuild("run", "--rm", "--ip", "172.17.9.9", "busybox", "true"),
                   "user specified IP address is supported on user defined networks only",
                   code=125)
    assert ok(run_pybuild("network", "rm", name, other["Id"][:12])).stdout == \
        f"{name}\n{other['Id'][:12]}\n"
    assert name not in ok(run_pybuild("network", "ls")).stdout


def test_peers_by_name_alias_and_id_not_from_another_network(root, network):
    a, b = network(), network()
    web = run_d("--name", "pbt-web", "--network", a["Name"], "--network-alias", "www",
                "busybox", "sh", "-c", HTTPD.format(text="from-web"))
    for host in ("pbt-web", "www", web[:12]):
        r = ok(run_pybuild("run", "--rm", "--network", a["Name"], "busybox", "sh", "-c",
                           FETCH.format(host=host)))
        assert r.stdout == "from-web\n", host
    ip = state(root, web)["network"]["ip"]
    assert ok(run_pybuild("run", "--rm", "--network", a["Name"], "busybox", "ping", "-c1", "-W2",
                          "pbt-web")).returncode == 0
    # another network: neither the name nor the address
    r = run_pybuild("run", "--rm", "--network", b["Name"], "busybox", "sh", "-c",
                    f"nslookup pbt-web | grep -c {ip}; timeout 3 wget -qO- http://{ip}/; echo rc=$?")
    assert r.stdout.startswith("0\n") and r.stdout.endswith("rc=143\n"), r.stdout
    # a second container on a is a name in every peer's DNS at once, and none at its end
    cli = run_d("--name", "pbt-cli", "--network", a["Name"], "busybox", "sleep", "60")
    cli_ip = state(root, cli)["network"]["ip"]
    assert f"Address: {cli_ip}" in resolve(web, "pbt-cli")
    assert ok(run_pybuild("exec", cli, "sh", "-c", FETCH.format(host="www"))).stdout == "from-web\n"
    doc = json.loads(ok(run_pybuild("inspect", web)).stdout)[0]
    ep = doc["NetworkSettings"]["Networks"][a["Name"]]
    assert ep["IPAddress"] == ip and ep["Aliases"] == ["www"] and ep["NetworkID"] == a["Id"]
    assert ep["Gateway"] == a["IPAM"]["Config"][0]["Gateway"]
    assert doc["HostConfig"]["NetworkMode"] == a["Name"]
    [nd] = json.loads(ok(run_pybuild("network", "inspect", a["Name"])).stdout)
    assert nd["Containers"][web]["Name"] == "pbt-web"
    assert nd["Containers"][web]["IPv4Address"].startswith(ip + "/")
    one_error_line(run_pybuild("network", "rm", a["Name"]),
                   f"error while removing network: network {a['Name']} id {a['Id']} has "
                   "active endpoints")
    ok(run_pybuild("rm", "-f", cli))
    assert cli_ip not in resolve(web, "pbt-cli")
    ok(run_pybuild("rm", "-f", web))
    poll(lambda: host_side_gone(a) and host_side_gone(b), GONE)


def test_internal_reaches_peers_not_the_outside(root, network, outside):
    server, _, _ = outside
    net = network("--internal")
    run_d("--name", "pbt-iweb", "--network", net["Name"], "busybox", "sh", "-c",
          HTTPD.format(text="inside"))
    r = ok(run_pybuild("run", "--rm", "--network", net["Name"], "busybox", "sh", "-c",
                       FETCH.format(host="pbt-iweb") + "; ip route"))
    assert r.stdout.startswith("inside\n") and "default" not in r.stdout
    r = run_pybuild("run", "--rm", "--network", net["Name"], "busybox", "sh", "-c",
                    f"timeout 3 wget -qO- http://{server}:8080/; echo rc=$?")
    assert r.stdout == "rc=1\n", r.stdout         # no route: refused at once
    # the same server is reached from a network that is not internal
    other = network()
    r = ok(run_pybuild("run", "--rm", "--network", other["Name"], "busybox", "sh", "-c",
                       FETCH.format(host=f"{server}:8080")))
    assert r.stdout.startswith("198.51.100.1")


def test_ip_and_concurrent_runs_get_distinct_addresses(root, network):
    net = network("--subnet", "10.124.7.0/24")
    cid = run_d("--network", net["Name"], "--ip", "10.124.7.50", "busybox", "sleep", "60")
    assert state(root, cid)["network"]["ip"] == "10.124.7.50"
    one_error_line(run_pybuild("run", "--rm", "--network", net["Name"], "--ip", "10.124.7.50",
                               "busybox", "true"), "Address already in use", code=125)
    ids = run_d_at_once(4, "--network", net["Name"], "busybox", "sleep", "60")
    ips = {state(root, i)["network"]["ip"] for i in ids}
    assert len(ips) == 4 and "10.124.7.50" not in ips
    ok(run_pybuild("rm", "-f", cid, *ids))
    poll(lambda: host_side_gone(net), GONE)


def test_kill_9_of_everything_leaves_nothing(root, network):
    net = network()
    ids = [run_d("--network", net["Name"], "busybox", "sleep", "60") for _ in range(2)]
    assert f" {user_net(net).bridge}:" in links()
    for cid in ids:
        st = state(root, cid)
        os.kill(int(st["supervisor"].split(".")[0]), signal.SIGKILL)
        os.kill(st["pid"], signal.SIGKILL)
    time.sleep(0.2)
    ok(run_pybuild("rm", "-f", *ids))
    poll(lambda: host_side_gone(net), GONE)
    # a foreground run killed with -9 (and its container): the next run sweeps its bridge
    p = subprocess.Popen([sys.executable, "-m", "builder", "run", "--rm", "--network",
                          net["Name"], "busybox", "sleep", "60"], cwd=REPO)
    poll(lambda: f" {user_net(net).bridge}:" in links() and leases.held(user_net(net)))
    for tok in leases.held(user_net(net)).values():
        os.kill(int(tok.partition(".")[0]), signal.SIGKILL)
    p.wait()
    subprocess.run(["pkill", "-9", "-s", str(p.pid)], check=False)
    ok(run_pybuild("run", "--rm", "--network", "none", "busybox", "true"))
    poll(lambda: host_side_gone(net), GONE)
    assert ok(run_pybuild("network", "prune", "-f")).stdout == f"Deleted Networks:\n{net['Name']}\n"
    assert not os.path.isdir(user_net(net).state_dir)


def test_connect_and_disconnect_a_running_container(root, network):
    a, b = network(), network()
    web = run_d("--name", "pbt-cweb", "--network", a["Name"], "busybox", "sh", "-c",
                HTTPD.format(text="via-connect"))
    cli = run_d("--name", "pbt-ccli", "--network", b["Name"], "busybox", "sleep", "60")
    probe = "timeout 2 wget -qO- http://pbt-cweb/; echo rc=$?"
    assert ok(run_pybuild("exec", cli, "sh", "-c", probe)).stdout.endswith("rc=1\n")
    ok(run_pybuild("network", "connect", "--alias", "pbt-extra", a["Name"], "pbt-ccli"))
    r = ok(run_pybuild("exec", cli, "sh", "-c", "ip -o -4 addr show eth1; " + FETCH.format(host="pbt-cweb")))
    assert r.stdout.endswith("via-connect\n") and "eth1" in r.stdout
    assert ok(run_pybuild("exec", web, "ping", "-c1", "-W2", "pbt-extra")).returncode == 0
    nets = json.loads(ok(run_pybuild("inspect", cli)).stdout)[0]["NetworkSettings"]["Networks"]
    extra_ip = nets[a["Name"]]["IPAddress"]
    assert f"Address: {extra_ip}" in resolve(web, "pbt-extra")
    assert set(nets) == {a["Name"], b["Name"]} and nets[a["Name"]]["Aliases"] == ["pbt-extra"]
    [nd] = json.loads(ok(run_pybuild("network", "inspect", a["Name"])).stdout)
    assert set(nd["Containers"]) == {web, cli}
    ps = ok(run_pybuild("ps", "--filter", "name=pbt-ccli", "--format", "{{.Networks}}")).stdout
    assert ps == f"{b['Name']},{a['Name']}\n"
    one_error_line(run_pybuild("network", "connect", a["Name"], cli),
                   f"endpoint with name pbt-ccli already exists in network {a['Name']}")
    ok(run_pybuild("network", "disconnect", a["Name"], cli))
    r = ok(run_pybuild("exec", cli, "sh", "-c", "ip -o link; " + probe))
    assert "eth1" not in r.stdout and r.stdout.endswith("rc=1\n")
    assert extra_ip not in resolve(web, "pbt-extra")
    one_error_line(run_pybuild("network", "disconnect", a["Name"], cli), "is not connected")
    # connected again, then the container ends: its endpoint goes with it (the fixture checks)
    ok(run_pybuild("network", "connect", a["Name"], cli))
    again = json.loads(ok(run_pybuild("inspect", cli)).stdout)[0]["NetworkSettings"]["Networks"]
    ok(run_pybuild("rm", "-f", cli))
    assert again[a["Name"]]["IPAddress"] not in resolve(web, "pbt-ccli")


def addrs(cid: str) -> dict[str, str]:
    """interface -> IPv4 address in container cid, and "default" -> the default route's via."""
    r = ok(run_pybuild("exec", cid, "sh", "-c", "ip -o -4 addr; echo @; ip route"))
    a, _, routes = r.stdout.partition("@\n")
    out = {ln.split()[1]: ln.split()[3].split("/")[0] for ln in a.splitlines()}
    for ln in routes.splitlines():
        if ln.startswith("default"):
            out["default"] = ln.split()[2] + " " + ln.split()[4]
    return out


def gateway(doc: dict) -> str:
    return doc["IPAM"]["Config"][0]["Gateway"]


def prefix(doc: dict) -> str:
    return doc["IPAM"]["Config"][0]["Subnet"].rsplit(".", 2)[0] + "."


def networks_of(cid: str) -> dict:
    return json.loads(ok(run_pybuild("inspect", cid)).stdout)[0]["NetworkSettings"]["Networks"]


def test_connect_a_stopped_container_then_start_attaches_every_network(root, network):
    a, b = network(), network()
    peer = run_d("--name", "pbt-speer", "--network", b["Name"], "busybox", "sleep", "60")
    cid = ok(run_pybuild("create", "--name", "pbt-sc", "--network", a["Name"], "busybox",
                         "sleep", "60")).stdout.strip()
    ok(run_pybuild("network", "connect", "--alias", "pbt-sx", b["Name"], "pbt-sc"))
    nets = networks_of(cid)
    assert list(nets) == [a["Name"], b["Name"]] and nets[b["Name"]]["Aliases"] == ["pbt-sx"]
    assert nets[b["Name"]]["IPAddress"] == "" and nets[b["Name"]]["NetworkID"] == b["Id"]
    one_error_line(run_pybuild("network", "connect", b["Name"], cid),
                   f"endpoint with name pbt-sc already exists in network {b['Name']}")
    for _ in range(2):                  # start, and again after a stop
        ok(run_pybuild("start", cid))
        got = addrs(cid)
        assert got["eth0"].startswith(prefix(a)) and got["eth1"].startswith(prefix(b))
        assert got["default"] == f"{gateway(a)} eth0"
        nets = networks_of(cid)
        assert (nets[a["Name"]]["IPAddress"], nets[b["Name"]]["IPAddress"]) == (got["eth0"],
                                                                                got["eth1"])
        # its peers on b resolve it, and it resolves names of both networks
        assert f"Address: {got['eth1']}" in resolve(peer, "pbt-sx")
        assert f"Address: {state(root, peer)['network']['ip']}" in resolve(cid, "pbt-speer")
        ps = ok(run_pybuild("ps", "--filter", "name=pbt-sc", "--format", "{{.Networks}}")).stdout
        assert ps == f"{a['Name']},{b['Name']}\n"
        ok(run_pybuild("stop", "-t", "0", cid))
    assert ok(run_pybuild("network", "prune", "-f")).stdout == ""      # both still in use


def test_disconnect_the_first_network_running_and_stopped(root, network):
    a, b = network(), network()
    cid = run_d("--name", "pbt-dc", "--network", a["Name"], "busybox", "sleep", "60")
    ok(run_pybuild("network", "connect", b["Name"], cid))
    ok(run_pybuild("network", "disconnect", a["Name"], cid))    # its eth0: docker allows it
    got = addrs(cid)
    assert "eth0" not in got and got["eth1"].startswith(prefix(b))
    assert got["default"] == f"{gateway(b)} eth1"                # the gateway moves, as docker's
    assert list(networks_of(cid)) == [b["Name"]]
    assert not leases.endpoints(user_net(a))                    # its lease went at once
    ok(run_pybuild("network", "disconnect", b["Name"], cid))    # its only one: lo is left
    assert set(addrs(cid)) == {"lo"}
    doc = json.loads(ok(run_pybuild("inspect", cid)).stdout)[0]
    assert doc["NetworkSettings"]["Networks"] == {} and doc["HostConfig"]["NetworkMode"] == a["Name"]
    ok(run_pybuild("restart", "-t", "0", cid))
    assert set(addrs(cid)) == {"lo"}
    ok(run_pybuild("network", "connect", a["Name"], cid))       # no default route: it takes it
    got = addrs(cid)
    assert got["eth1"].startswith(prefix(a)) and got["default"] == f"{gateway(a)} eth1"
    one_error_line(run_pybuild("network", "disconnect", b["Name"], cid),
                   f"container {cid} is not connected to network {b['Name']}")
    # a stopped one: only its record changes, and its next start has b as eth0
    sc = ok(run_pybuild("create", "--network", a["Name"], "busybox", "sleep", "60")).stdout.strip()
    ok(run_pybuild("network", "connect", b["Name"], sc))
    ok(run_pybuild("network", "disconnect", a["Name"], sc))
    assert list(networks_of(sc)) == [b["Name"]]
    ok(run_pybuild("start", sc))
    got = addrs(sc)
    assert got["eth0"].startswith(prefix(b)) and "eth1" not in got
    assert got["default"] == f"{gateway(b)} eth0"


def test_connected_endpoint_survives_a_restart_policy_restart(root, network):
    a, b = network(), network("--subnet", "10.127.3.0/24")
    peer = run_d("--name", "pbt-rpeer", "--network", b["Name"], "busybox", "sleep", "60")
    cid = run_d("--network", a["Name"], "--restart", "always", "busybox", "sh", "-c",
                "sleep 1; exit 1")
    ok(run_pybuild("network", "connect", "--alias", "pbt-rx", "--ip", "10.127.3.77", b["Name"],
                   cid))
    poll(lambda: (state(root, cid).get("restart_count") or 0) >= 2 and
         state(root, cid)["status"] == "running", 20)
    got = poll(lambda: run_pybuild("exec", cid, "ip", "-o", "-4", "addr").stdout, 5)
    assert "inet 10.127.3.77/24" in got and f"inet {prefix(a)}" in got     # its --ip kept
    assert "Address: 10.127.3.77" in resolve(peer, "pbt-rx")


def test_kill_9_of_a_container_on_two_networks_leaves_nothing(root, network):
    a, b = network(), network()
    cid = ok(run_pybuild("create", "--network", a["Name"], "busybox", "sleep", "60")).stdout.strip()
    ok(run_pybuild("network", "connect", b["Name"], cid))
    ok(run_pybuild("start", cid))
    [(_, e)] = leases.endpoints(user_net(b)).items()
    holder = int(e["token"].partition(".")[0])
    ports = [ln.split(":")[1].strip().partition("@")[0] for n in (a, b)
             for ln in subprocess.run(["ip", "-o", "link", "show", "master", user_net(n).bridge],
                                      capture_output=True, text=True,
                                      check=True).stdout.splitlines()]
    assert len(ports) == 2                          # eth0's veth on a, the holder's on b
    st = state(root, cid)
    for pid in (int(st["supervisor"].split(".")[0]), st["pid"]):
        os.kill(pid, signal.SIGKILL)
    poll(lambda: not test_containers.pid_alive(holder))         # it ends with the container
    ok(run_pybuild("rm", "-f", cid))
    poll(lambda: host_side_gone(a) and host_side_gone(b), GONE)
    assert not any(f" {p}@" in links() for p in ports)
