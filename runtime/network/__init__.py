"""Container networks: docker's default `bridge` without a daemon.

`bridge` (the bridge `pybuild0` and its NAT rules, made by the first user and removed by the
last), `leases` (host-global address leases under /run/pybuild/network, flocked, each tagged
with its holder's cache.owner token), `netlink` (the few rtnetlink requests this needs, stdlib
only: pyroute2 0.9 costs 110-200 ms to import, more than the whole run's budget, and is not on
a `python -I -S` supervisor's path), `attach` (one container's veth, address and route, the
host side's half of runtime.process.start), `ports` (-p/-P parsing and listening sockets) and
`proxy` (the userspace relay from a published host port to the container, docker-proxy's job).
"""
from __future__ import annotations

import os

STATE_DIR = "/run/pybuild/network"      # leases' state (tmpfs: gone at reboot with the bridge)
BRIDGE_STATE = "bridge.json"            # there while pybuild0 exists (bridge.ensure/teardown)
BRIDGE = "pybuild0"
RULES_VERSION = 2          # bridge.json's "rules": 1 (none) accepted all forwarding into it


def bridge_exists() -> bool:
    """Whether pybuild made a bridge that is still there: what a `run` off the bridge asks
    before it imports the sweep (a stat instead of ~6 ms of imports)."""
    return os.path.exists(os.path.join(STATE_DIR, BRIDGE_STATE))


def ready_subnet(state_dir: str = STATE_DIR) -> str | None:
    """The subnet of a whole bridge with today's rules (bridge.json says ready, the link is
    there), else None: then runtime.network.bridge.ensure makes or mends it. What every run
    on the bridge asks, so it reads one small file without importing bridge's iptables,
    ipaddress and subprocess machinery (nor json: cache.jsonread)."""
    from cache.jsonread import loads

    try:
        with open(os.path.join(state_dir, BRIDGE_STATE), "rb") as f:
            state = loads(f.read())
        ok = (state.get("ready") and state.get("rules") == RULES_VERSION
              and os.path.exists(f"/sys/class/net/{BRIDGE}"))
        return str(state["subnet"]) if ok else None
    except (OSError, ValueError, KeyError, AttributeError):
        return None
