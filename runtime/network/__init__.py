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


def bridge_exists() -> bool:
    """Whether pybuild made a bridge that is still there: what a `run` off the bridge asks
    before it imports the sweep (a stat instead of ~6 ms of imports)."""
    return os.path.exists(os.path.join(STATE_DIR, BRIDGE_STATE))
