"""The host side of the default network: bridge `pybuild0` with its own /16 and its rules.

Made by the first container that needs it (called under runtime.network.leases' lock) and
removed by the last (a user-defined network's br-<12 hex> alike, with its own subnet and
gateway, and with --internal no NAT and nothing forwarded in or out): the bridge, gateway
address .1, outbound NAT (nat POSTROUTING MASQUERADE
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


def free_subnet(busy: list[ipaddress.IPv4Network], pool=None) -> str | None:
    """The first of `pool` (default: candidates()) that overlaps nothing in `busy`, or None:
    pybuild0's subnet and a user network's default one are chosen alike."""
    for c in candidates() if pool is None else pool:
        if not any(ipaddress.IPv4Network(c).overlaps(r) for r in busy):
            return c
    return None


def choose_subnet(routes: list[ipaddress.IPv4Network]) -> str:
    subnet = free_subnet(routes)
    if subnet is None:
        raise SandboxError("no free private /16 left for the bridge network (every candidate "
                           "overlaps a host route)")
    return subnet


ISOLATION_1, ISOLATION_2 = "PYBUILD-ISOLATION-STAGE-1", "PYBUILD-ISOLATION-STAGE-2"


def _rules(bridge: str, subnet: str, internal: bool = False) -> dict[str, list[str]]:
    """Ours, as docker's: NAT out; into the bridge only replies (conntrack RELATED,ESTABLISHED)
    and container to container, the rest routed towards it dropped (published ports go through
    the userspace proxy, so a LAN host routing the subnet here reaches nothing unpublished).
    Between bridges docker's isolation chains (see _sync): stage 1 sends what leaves a bridge
    for another interface to stage 2, which drops it when that interface is another of ours.
    --internal: no NAT, and nothing in or out but between its own containers (stage 1 drops)."""
    if internal:
        return {"*filter": [
            f"-I FORWARD 1 -i {bridge} -o {bridge} -j ACCEPT",
            f"-A {ISOLATION_1} -i {bridge} ! -o {bridge} -j DROP",
            f"-A {ISOLATION_1} -o {bridge} ! -i {bridge} -j DROP"]}
    return {"*nat": [f"-A POSTROUTING -s {subnet} ! -o {bridge} -j MASQUERADE"],
            "*filter": [
                f"-I FORWARD 1 -o {bridge} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                f"-I FORWARD 2 -i {bridge} -o {bridge} -j ACCEPT",
                f"-I FORWARD 3 -i {bridge} ! -o {bridge} -j ACCEPT",
                f"-I FORWARD 4 -o {bridge} -j DROP",
                f"-A {ISOLATION_1} -i {bridge} ! -o {bridge} -j {ISOLATION_2}",
                f"-A {ISOLATION_2} -o {bridge} -j DROP"]}


def _ours(bridge: str):
    return re.compile(rf"^-A (POSTROUTING|FORWARD|{ISOLATION_1}|{ISOLATION_2}) (.* )?(-i|-o) "
                      rf"{re.escape(bridge)}( |$)")


def _save(table: str) -> list[str]:
    try:
        p = subprocess.run([IPTABLES_RESTORE.replace("-restore", "-save"), "-t", table],
                           capture_output=True, text=True, check=False)
    except OSError:
        return []
    return p.stdout.splitlines()


class _rules_lock:
    """One flock for every pybuild network's rule changes: the isolation chains and FORWARD's
    jump to them are shared, and each change is read (iptables-save) then written."""

    def __enter__(self):
        from runtime.network import STATE_DIR
        os.makedirs(STATE_DIR, 0o755, exist_ok=True)
        self.fd = os.open(os.path.join(STATE_DIR, "iptables.lock"),
                          os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        import fcntl
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)


def _sync(net, subnet: str | None) -> str:
    """In one iptables-restore: drop every rule naming net's bridge there is (whoever added
    them: an older pybuild's set or a duplicate are swept too), add the current set (none for
    `subnet` None). The isolation chains are made when missing and FORWARD's jump to them
    put first again (another network's -I FORWARD 1 pushed it down); the last network out
    removes them."""
    ours = _ours(net.bridge)
    with _rules_lock():
        nat, filt = _save("nat"), _save("filter")
        want = _rules(net.bridge, subnet, net.internal) if subnet else {}
        old_nat = ["-D" + ln[2:] for ln in nat if ours.match(ln)]
        old_filter = ["-D" + ln[2:] for ln in filt if ours.match(ln)]
        chains = {ln.split()[0][1:] for ln in filt if ln.startswith(":")}
        jump = f"-A FORWARD -j {ISOLATION_1}" in filt
        staged = [ln for ln in filt if ln.startswith((f"-A {ISOLATION_1} ", f"-A {ISOLATION_2} "))
                  and not ours.match(ln)]
        lines = list(old_filter)
        if want:
            lines += [f"-N {c}" for c in (ISOLATION_1, ISOLATION_2) if c not in chains]
            lines += ([f"-D FORWARD -j {ISOLATION_1}"] if jump else []) + want["*filter"]
            lines.append(f"-I FORWARD 1 -j {ISOLATION_1}")
        elif not staged:        # no other network left: the chains and the jump go
            lines += ([f"-D FORWARD -j {ISOLATION_1}"] if jump else [])
            lines += [f"-X {c}" for c in (ISOLATION_1, ISOLATION_2) if c in chains]
        text = ""
        for table, body in (("*nat", old_nat + want.get("*nat", [])), ("*filter", lines)):
            if body:
                text += "\n".join([table, *body, "COMMIT"]) + "\n"
        return _iptables(text) if text else ""


def _iptables(text: str) -> str:
    try:
        p = subprocess.run([IPTABLES_RESTORE, "--noflush", "-w"], input=text.encode(),
                           capture_output=True, check=False)
    except OSError as e:
        raise SandboxError(f"the bridge network needs iptables ({IPTABLES_RESTORE}: "
                           f"{e.strerror}; apt-get install iptables)") from None
    return "" if p.returncode == 0 else p.stderr.decode(errors="replace").strip() or "failed"


def _exists(bridge: str) -> bool:
    return os.path.exists(f"/sys/class/net/{bridge}")


def ensure(net) -> str:
    """The subnet of net's bridge (a runtime.network.Net), making the bridge, its address and
    rules when missing (under net's lease lock)."""
    from runtime.network import ready_subnet

    state_dir = net.state_dir
    subnet = ready_subnet(state_dir, net.bridge)
    if subnet is not None:
        return subnet
    path = os.path.join(state_dir, _STATE)
    try:
        with open(path) as f:
            state = json.load(f)
        if _exists(net.bridge) and state.get("ready"):
            if state.get("rules") != RULES_VERSION:     # made by an older pybuild: its rules
                err = _sync(net, state["subnet"])      # let the LAN in; put ours instead
                if err:
                    raise SandboxError(f"cannot update the bridge network's rules: {err}")
                with open(path + ".tmp", "w") as f:
                    json.dump({**state, "rules": RULES_VERSION}, f)
                os.rename(path + ".tmp", path)
            return state["subnet"]
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        pass                # no bridge.json, or not ours: made anew
    teardown(net)           # a half-made or foreign leftover goes first
    from runtime.network.netlink import Netlink

    subnet = net.subnet or choose_subnet(host_routes(net.bridge))
    ipn = ipaddress.IPv4Network(subnet)
    gateway = net.gateway or str(ipn.network_address + 1)
    with open(_FORWARD) as f:
        forward = f.read().strip()
    state = {"subnet": subnet, "ip_forward": forward}
    nl = Netlink()
    try:
        nl.new_bridge(net.bridge)
        with open(path, "w") as f:      # before the rules: a failure below is undone by teardown
            json.dump(state, f)
        idx = socket.if_nametoindex(net.bridge)
        nl.add_address(idx, gateway, ipn.prefixlen, str(ipn.broadcast_address))
        nl.set_up(idx)
        if forward != "1" and not net.internal:
            with open(_FORWARD, "w") as f:
                f.write("1")
        err = _sync(net, subnet)
        if err:
            raise SandboxError(f"cannot add the bridge network's NAT rules: {err}")
        with open(path + ".tmp", "w") as f:     # only now is it whole (a kill -9 above: redone)
            json.dump({**state, "ready": True, "rules": RULES_VERSION}, f)
        os.rename(path + ".tmp", path)
    except OSError as e:
        teardown(net)
        raise SandboxError(f"cannot create the bridge {net.bridge}: {e.strerror}") from None
    except BaseException:
        teardown(net)
        raise
    finally:
        nl.close()
    return subnet


def _other_bridges(net) -> bool:
    """Whether another pybuild bridge is up (then ip_forward stays on for it)."""
    from runtime.network import STATE_DIR

    if net.bridge != BRIDGE and _exists(BRIDGE):
        return True
    try:
        names = os.listdir(STATE_DIR)
    except OSError:
        return False
    return any(_exists("br-" + n) for n in names if len(n) == 12 and "br-" + n != net.bridge)


def teardown(net) -> None:
    """Remove what ensure made (best effort: each part whether or not the others are there)."""
    path = os.path.join(net.state_dir, _STATE)
    try:
        with open(path) as f:
            state = json.load(f)
    except (OSError, ValueError):
        state = None
    if not isinstance(state, dict):
        state = None
    if _exists(net.bridge):     # the link first: a teardown killed after it is redone by ensure
        from runtime.network.netlink import Netlink
        nl = Netlink()
        try:
            nl.delete_link(socket.if_nametoindex(net.bridge))
        except OSError:
            pass
        finally:
            nl.close()
    _sync(net, None)            # every rule naming the bridge, whichever state there is
    if state is not None and state.get("ip_forward") == "0" and not _other_bridges(net):
        try:
            with open(_FORWARD, "w") as f:
                f.write("0")
        except OSError:
            pass
    if state is not None:
        os.unlink(path)
