"""The host side of the default network: bridge `pybuild0` with its own /16 and its rules.

Made by the first container that needs it (called under runtime.network.leases' lock) and
removed by the last: the bridge, gateway address .1, outbound NAT (nat POSTROUTING MASQUERADE
of the subnet leaving by another interface) and docker's FORWARD rules (see _rules), all in
one iptables-restore --noflush each way (the way down removes every rule naming the bridge);
net.ipv4.ip_forward set to 1 (as docker does) and put back when pybuild turned it on. The
subnet is docker's 172.17.0.0/16 unless a host route overlaps it, then the next free /16 of
172.18-31, then of 10.x.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import subprocess

from runtime.errors import SandboxError
from runtime.network import BRIDGE, RULES_VERSION
from runtime.network import BRIDGE_STATE as _STATE

_FORWARD = "/proc/sys/net/ipv4/ip_forward"
IPTABLES_RESTORE = "/usr/sbin/iptables-restore"


def candidates():
    for b in range(17, 32):
        yield f"172.{b}.0.0/16"
    for b in range(256):
        yield f"10.{b}.0.0/16"


def host_routes(skip: str = BRIDGE) -> list[ipaddress.IPv4Network]:
    """The host's IPv4 routes (but the default route and ours), from /proc/net/route."""
    out = []
    with open("/proc/net/route") as f:
        next(f)
        for line in f:
            p = line.split()
            if len(p) < 8 or p[0] == skip:
                continue
            dest, mask = (socket.inet_ntoa(int(x, 16).to_bytes(4, "little")) for x in (p[1], p[7]))
            net = ipaddress.IPv4Network(f"{dest}/{mask}", strict=False)
            if net.prefixlen:
                out.append(net)
    return out


def choose_subnet(routes: list[ipaddress.IPv4Network]) -> str:
    for c in candidates():
        net = ipaddress.IPv4Network(c)
        if not any(net.overlaps(r) for r in routes):
            return c
    raise SandboxError("no free private /16 left for the bridge network (every candidate "
                       "overlaps a host route)")


def _rules(subnet: str) -> dict[str, list[str]]:
    """Ours, as docker's: NAT out; into the bridge only replies (conntrack RELATED,ESTABLISHED)
    and container to container, the rest routed towards it dropped (published ports go through
    the userspace proxy, so a LAN host routing the subnet here reaches nothing unpublished)."""
    return {"*nat": [f"-A POSTROUTING -s {subnet} ! -o {BRIDGE} -j MASQUERADE"],
            "*filter": [
                f"-I FORWARD 1 -o {BRIDGE} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                f"-I FORWARD 2 -i {BRIDGE} -o {BRIDGE} -j ACCEPT",
                f"-I FORWARD 3 -i {BRIDGE} ! -o {BRIDGE} -j ACCEPT",
                f"-I FORWARD 4 -o {BRIDGE} -j DROP"]}


_OURS = re.compile(rf"^-A (POSTROUTING|FORWARD) (.* )?(-i|-o) {BRIDGE}( |$)")


def _ours_now() -> dict[str, list[str]]:
    """Every rule naming the bridge in nat POSTROUTING / filter FORWARD, as -D lines (whoever
    added them: an older pybuild's set or a duplicate are swept too)."""
    out: dict[str, list[str]] = {"*nat": [], "*filter": []}
    for table in ("nat", "filter"):
        try:
            p = subprocess.run([IPTABLES_RESTORE.replace("-restore", "-save"), "-t", table],
                               capture_output=True, text=True, check=False)
        except OSError:
            continue
        out["*" + table] = ["-D" + ln[2:] for ln in p.stdout.splitlines() if _OURS.match(ln)]
    return out


def _sync(subnet: str | None) -> str:
    """In one iptables-restore: drop every rule of ours there is, add the current set (none for
    `subnet` None)."""
    old, want = _ours_now(), _rules(subnet) if subnet else {}
    text = ""
    for table in ("*nat", "*filter"):
        lines = old[table] + want.get(table, [])
        if lines:
            text += "\n".join([table, *lines, "COMMIT"]) + "\n"
    return _iptables(text) if text else ""


def _iptables(text: str) -> str:
    try:
        p = subprocess.run([IPTABLES_RESTORE, "--noflush", "-w"], input=text.encode(),
                           capture_output=True, check=False)
    except OSError as e:
        raise SandboxError(f"the bridge network needs iptables ({IPTABLES_RESTORE}: "
                           f"{e.strerror}; apt-get install iptables)") from None
    return "" if p.returncode == 0 else p.stderr.decode(errors="replace").strip() or "failed"


def _exists() -> bool:
    return os.path.exists(f"/sys/class/net/{BRIDGE}")


def ensure(state_dir: str) -> str:
    """The bridge's subnet, making the bridge, its address and rules when missing."""
    from runtime.network import ready_subnet

    subnet = ready_subnet(state_dir)
    if subnet is not None:
        return subnet
    path = os.path.join(state_dir, _STATE)
    try:
        with open(path) as f:
            state = json.load(f)
        if _exists() and state.get("ready"):
            if state.get("rules") != RULES_VERSION:     # made by an older pybuild: its rules
                err = _sync(state["subnet"])           # let the LAN in; put ours instead
                if err:
                    raise SandboxError(f"cannot update the bridge network's rules: {err}")
                with open(path + ".tmp", "w") as f:
                    json.dump({**state, "rules": RULES_VERSION}, f)
                os.rename(path + ".tmp", path)
            return state["subnet"]
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        pass                # no bridge.json, or not ours: made anew
    teardown(state_dir)       # a half-made or foreign leftover goes first
    from runtime.network.netlink import Netlink

    subnet = choose_subnet(host_routes())
    net = ipaddress.IPv4Network(subnet)
    with open(_FORWARD) as f:
        forward = f.read().strip()
    state = {"subnet": subnet, "ip_forward": forward}
    nl = Netlink()
    try:
        nl.new_bridge(BRIDGE)
        with open(path, "w") as f:      # before the rules: a failure below is undone by teardown
            json.dump(state, f)
        idx = socket.if_nametoindex(BRIDGE)
        nl.add_address(idx, str(net.network_address + 1), net.prefixlen, str(net.broadcast_address))
        nl.set_up(idx)
        if forward != "1":
            with open(_FORWARD, "w") as f:
                f.write("1")
        err = _sync(subnet)
        if err:
            raise SandboxError(f"cannot add the bridge network's NAT rules: {err}")
        with open(path + ".tmp", "w") as f:     # only now is it whole (a kill -9 above: redone)
            json.dump({**state, "ready": True, "rules": RULES_VERSION}, f)
        os.rename(path + ".tmp", path)
    except OSError as e:
        teardown(state_dir)
        raise SandboxError(f"cannot create the bridge {BRIDGE}: {e.strerror}") from None
    except BaseException:
        teardown(state_dir)
        raise
    finally:
        nl.close()
    return subnet


def teardown(state_dir: str) -> None:
    """Remove what ensure made (best effort: each part whether or not the others are there)."""
    path = os.path.join(state_dir, _STATE)
    try:
        with open(path) as f:
            state = json.load(f)
    except (OSError, ValueError):
        state = None
    if not isinstance(state, dict):
        state = None
    if _exists():               # the link first: a teardown killed after it is redone by ensure
        from runtime.network.netlink import Netlink
        nl = Netlink()
        try:
            nl.delete_link(socket.if_nametoindex(BRIDGE))
        except OSError:
            pass
        finally:
            nl.close()
    _sync(None)                 # every rule naming the bridge, whichever state there is
    if state is not None and state.get("ip_forward") == "0":
        try:
            with open(_FORWARD, "w") as f:
                f.write("0")
        except OSError:
            pass
    if state is not None:
        os.unlink(path)
