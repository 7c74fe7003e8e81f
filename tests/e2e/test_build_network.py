"""`pybuild build --network` as docker 20.10's BuildKit: RUN steps on a network namespace of
their own on the bridge (NAT'd out) by default, the host's with `host`, only lo with `none`;
`RUN --network` beats the build's; the mode is in the step's cache key (as LLB's ExecOp);
nothing of the bridge is left after a build, a failed RUN or a kill -9."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import test_network
from busybox_fixture import REPO, run_pybuild
from e2e_helpers import ok, one_error_line
from test_containers import pid_alive, poll
from test_network import GONE, LINGER, links, nothing_left

from runtime.network import leases

outside = test_network.outside     # the fixture: a server in a netns beyond a veth of its own

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/sbin/iptables"),
                                reason="the bridge network needs root and iptables "
                                       "(run as root; apt-get install iptables)")


@pytest.fixture(autouse=True)
def short_linger(monkeypatch):
    monkeypatch.setenv("PYBUILD_BRIDGE_LINGER", str(LINGER))


def build(ctx, dockerfile: str, *flags: str) -> subprocess.CompletedProcess:
    (ctx / "Dockerfile").write_text(dockerfile)
    return run_pybuild("build", "--progress", "plain", *flags, str(ctx))


def export(ctx, tmp_path, dockerfile: str, *flags: str):
    """The built filesystem (a -o type=local export): what the RUN steps wrote is read there."""
    dest = tmp_path / f"export{len(list(tmp_path.iterdir()))}"
    ok(build(ctx, dockerfile, *flags, "-o", f"type=local,dest={dest}"))
    return dest


def link_names(text: str) -> list[str]:
    return [ln.split(":")[1].strip().split("@")[0] for ln in text.splitlines()]


@pytest.fixture
def ctx(tmp_path):
    d = tmp_path / "ctx"
    d.mkdir()
    return d


def test_default_and_bridge_reach_a_server_outside_through_nat(busybox_root, ctx, tmp_path, outside):
    server, host_side, _ = outside
    df = ("FROM busybox\nRUN ip -o link > /links; ip -o -4 addr show eth0 > /addr; "
          "cp /etc/hosts /hosts; for i in 1 2 3 4 5; do wget -qO /out "
          f"http://{server}:8080/ && exit; sleep 0.2; done; exit 1\n")
    dest = export(ctx, tmp_path, df)
    assert (dest / "out").read_text() == host_side         # masqueraded: the host's address
    assert link_names((dest / "links").read_text()) == ["lo", "eth0"]
    assert " inet 172." in (dest / "addr").read_text() or " inet 10." in (dest / "addr").read_text()
    # BuildKit's hosts file, not a container's (no `IP buildkitsandbox` line)
    assert (dest / "hosts").read_text() == (
        "127.0.0.1\tlocalhost buildkitsandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    r = ok(build(ctx, df, "--network", "bridge"))       # docker's classic word for the same mode
    assert run_cached(r.stderr), r.stderr
    poll(nothing_left, GONE)


def test_none_has_only_lo_and_cannot_reach_out(busybox_root, ctx, tmp_path, outside):
    server, _, _ = outside
    df = (f"FROM busybox\nRUN ip -o link > /out; wget -T 2 -qO- http://{server}:8080/ "
          "&& echo reached >> /out || true\n")
    assert (export(ctx, tmp_path, df, "--network", "none") / "out").read_text().count("\n") == 1
    assert link_names((tmp_path / "export1" / "out").read_text()) == ["lo"]     # no "reached"


def test_host_shares_the_hosts_interfaces(busybox_root, ctx, tmp_path):
    df = "FROM busybox\nRUN ip -o link > /out\n"
    seen = set(link_names((export(ctx, tmp_path, df, "--network", "host") / "out").read_text()))
    mine = set(link_names(links()))
    assert "lo" in seen and len(seen) > 1
    # the host's stable interfaces (other tests' veths come and go meanwhile)
    stable = {n for n in mine if not n.startswith(("veth", "pb", "br-", "pybuild"))}
    assert stable <= seen


def test_run_network_flag_beats_the_builds_and_default_follows_it(busybox_root, ctx, tmp_path):
    df = ("FROM busybox\nRUN --network=default ip -o link > /default\n"
          "RUN --network=host ip -o link > /host\nRUN --network=none ip -o link > /none\n")
    dest = tmp_path / "x"
    ok(build(ctx, df, "--network", "none", "--allow", "network.host", "-o",
             f"type=local,dest={dest}"))
    assert link_names((dest / "default").read_text()) == ["lo"]        # the build's none
    assert len(link_names((dest / "host").read_text())) > 1
    assert link_names((dest / "none").read_text()) == ["lo"]


def test_run_network_host_needs_the_network_host_entitlement(busybox_root, ctx, tmp_path):
    """BuildKit's network.host entitlement: a Dockerfile cannot put a RUN on the host's network
    (its loopback services) unless the user grants it: refused before step 1, with the line."""
    df = "FROM busybox\nRUN echo first > /first\nRUN --network=host ip -o link > /host\n"
    r = build(ctx, df)
    assert r.returncode == 1
    err = r.stderr.strip().splitlines()
    assert err[-1] == ("pybuild: error: Dockerfile:3: RUN --network=host: network.host is not "
                       "allowed (grant it with --allow network.host, or build with --network host)")
    assert "echo first" not in r.stderr                                 # no step ran
    ok(build(ctx, "FROM busybox AS dev\nRUN --network=host true\nFROM busybox AS prod\n"
                  "RUN true\n", "--target", "prod"))        # only the stages built are asked
    for grant in (["--allow", "network.host"], ["--network", "host"],
                  ["--allow", "network.host,network.host"]):
        dest = tmp_path / grant[1].replace(",", "-")
        ok(build(ctx, df, *grant, "-o", f"type=local,dest={dest}"))
        assert len(link_names((dest / "host").read_text())) > 1
    for bad, why in (("security.insecure", "grants no security.insecure"),
                     ("net.host", 'invalid entitlement "net.host"')):
        r = build(ctx, df, "--allow", bad)
        assert r.returncode == 1 and why in r.stderr and "Traceback" not in r.stderr


def run_cached(stderr: str) -> bool:
    """Whether plain progress (docker's or ours) shows the RUN step as CACHED."""
    [num] = {ln.split()[0] for ln in stderr.splitlines() if "] RUN " in ln}
    return f"{num} CACHED" in stderr.splitlines()


def test_the_mode_is_in_the_cache_key_as_in_buildkit(busybox_root, ctx, docker_busybox, tmp_path):
    """LLB's ExecOp carries the network mode and BuildKit keys a RUN on the whole op: the same
    RUN under another mode runs again, under the same mode it is cached."""
    df = "FROM busybox\nRUN echo once\n"
    (ctx / "Dockerfile").write_text(df)
    seen = {}
    for tool in ("docker", "pybuild"):
        runs = []
        for mode in ("none", "host", "none"):
            if tool == "docker":
                r = subprocess.run([*docker_busybox, "build", "--progress", "plain", "--network",
                                    mode, str(ctx)], capture_output=True, text=True,
                                   env={**os.environ, "DOCKER_BUILDKIT": "1"})
            else:
                r = build(ctx, df, "--network", mode)
            ok(r)
            runs.append(run_cached(r.stderr))
        seen[tool] = runs
    assert seen["pybuild"] == seen["docker"] == [False, False, True]


def test_a_bad_mode_is_one_error_line_before_any_step(busybox_root, ctx):
    r = build(ctx, "FROM busybox\nRUN echo never\n", "--network", "container:x")
    one_error_line(r, 'network mode "container:x" not supported', code=1)
    assert "never" not in r.stderr


def test_a_failed_run_leaves_nothing(busybox_root, ctx):
    r = build(ctx, "FROM busybox\nRUN ip -o link; exit 3\n")
    assert r.returncode == 1 and "eth0" in r.stderr
    poll(nothing_left, GONE)


def test_kill_9_of_the_build_leaves_nothing_once_the_next_one_sweeps(busybox_root, ctx):
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN sleep 60\n")
    p = subprocess.Popen([sys.executable, "-m", "builder", "build", "--progress", "plain",
                          str(ctx)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        poll(lambda: any(t.split(".")[0] == str(p.pid) for t in leases.held().values()), 30)
        kids = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()
        p.send_signal(signal.SIGKILL)
        p.wait()
        poll(lambda: not any(pid_alive(int(k)) for k in kids), 10)    # its sandbox followed it
        poll(lambda: not any(t.split(".")[0] == str(p.pid) for t in leases.held().values()), 10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    time.sleep(LINGER)
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN true\n")
    ok(run_pybuild("build", "--network", "none", str(ctx)))    # sweeps what the dead one left
    poll(nothing_left, GONE)


def test_add_host_gateway_is_the_bridges_gateway(busybox_root, ctx, tmp_path):
    """As dockerd's BuildKit: host-gateway is the bridge's address (docker0's there), the one
    a RUN's default route goes through."""
    df = "FROM busybox\nRUN grep gw /etc/hosts > /out; ip route | grep default >> /out\n"
    dest = export(ctx, tmp_path, df, "--add-host", "gw:host-gateway")
    hosts_line, route = (dest / "out").read_text().splitlines()
    gateway = hosts_line.split()[0]
    assert hosts_line == f"{gateway}\tgw" and f"via {gateway} " in route
