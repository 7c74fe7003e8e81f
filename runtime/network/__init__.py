"""Container networks: docker's default `bridge` without a daemon.

`bridge` (the bridge `pybuild0` and its NAT rules, made by the first user and removed by the
last), `leases` (host-global address leases under /run/pybuild/network, flocked, each tagged
with its holder's cache.owner token), `netlink` (the few rtnetlink requests this needs, stdlib
only: pyroute2 0.9 costs 110-200 ms to import, more than the whole run's budget, and is not on
a `python -I -S` supervisor's path), `attach` (one container's veth, address and route, the
host side's half of runtime.process.start), `ports` (-p/-P parsing and listening sockets) and
`proxy` (the userspace relay from a published host port to the container, docker-proxy's job).

User-defined networks (`pybuild network create`): `defs` keeps their definitions under the
store root; each has the default bridge's machinery parameterised by a `Net` (its own state dir
/run/pybuild/network/<12 hex of its id>/ with the same lock, leases and linger, its bridge
br-<12 hex>), and reaches a sandbox as spec.endpoint (an `Endpoint`); `dns` is each such
container's embedded DNS server (docker's 127.0.0.11), answering from the lease files.
"""
from __future__ import annotations

import os

STATE_DIR = "/run/pybuild/network"      # leases' state (tmpfs: gone at reboot with the bridge)
BRIDGE_STATE = "bridge.json"            # there while pybuild0 exists (bridge.ensure/teardown)
BRIDGE = "pybuild0"
WAITER = "sweep.lock"       # flocked by the one sweep that waits out a bridge's linger
RULES_VERSION = 3          # bridge.json's "rules": 1 (none) accepted all forwarding into it; 2 had
                           # no isolation from user networks


class Net:
    """One bridge network's host side, plain data (pickles into a supervisor's monitor): where
    its state lives, its bridge, and for a user network its fixed subnet, gateway and whether
    it is --internal (the default bridge's subnet is chosen when the bridge is made)."""

    def __init__(self, state_dir: str = STATE_DIR, bridge: str = BRIDGE, subnet: str = "",
                 gateway: str = "", internal: bool = False, id: str = "", name: str = "bridge"):
        self.state_dir, self.bridge, self.subnet, self.gateway = state_dir, bridge, subnet, gateway
        self.internal, self.id, self.name = internal, id, name

    @property
    def user(self) -> bool:
        return bool(self.id)


DEFAULT = Net()


def user_net(d: dict) -> Net:
    """The Net of a network definition (runtime.network.defs)."""
    short = d["Id"][:12]
    cfg = d["IPAM"]["Config"][0]
    return Net(os.path.join(STATE_DIR, short), "br-" + short, cfg["Subnet"], cfg["Gateway"],
               bool(d.get("Internal")), d["Id"], d["Name"])


class Endpoint:
    """spec.endpoint of a container on a user-defined network (its spec.network is `bridge`,
    the driver): what runtime.network.attach needs besides the -p bindings: the network
    (`net`), the names peers resolve it by (`names`: container name, --network-alias, short
    ID), the --ip asked for (`ip`)."""

    def __init__(self, net: Net, names: list[str], aliases: list[str], ip: str = ""):
        self.net, self.names, self.aliases, self.ip = net, names, aliases, ip


def bridge_exists() -> bool:
    """Whether pybuild made a bridge that is still there: what a `run` off the bridge asks
    before it imports the sweep (a stat instead of ~6 ms of imports)."""
    return os.path.exists(os.path.join(STATE_DIR, BRIDGE_STATE))


def hand_over(var: str, fields: list[str], fds) -> tuple[int, ...]:
    """Before a supervisor re-execs into its monitor (the port proxy's and the DNS server's
    sockets): `fds` made inheritable, `fields` (what they are) in $var; the fds to keep."""
    fds = tuple(fds)
    for fd in fds:
        os.set_inheritable(fd, True)
    os.environ[var] = ";".join(fields)
    return fds


def taken_over(var: str) -> list[str] | None:
    """In the monitor: the fields `hand_over` put in $var (taken out of the environment, so
    the container's processes never see it), None when there were none."""
    text = os.environ.pop(var, "")
    return text.split(";") if text else None


def adopt(fd: int):
    """A handed-over socket fd as a socket, no longer inherited by what the monitor starts."""
    import socket

    os.set_inheritable(fd, False)
    return socket.socket(fileno=fd)


def sweep_waits(state_dir: str = STATE_DIR) -> bool:
    """Whether a sweep already waits out this bridge's linger (its flock on WAITER is held):
    it reclaims dead holders and removes the bridge when due, so a `run` off the bridge need
    not import leases and take the network lock to do it too (~5 ms of a `--network none`
    run made within the linger)."""
    import fcntl

    try:
        fd = os.open(os.path.join(state_dir, WAITER), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)        # (a lock we took goes with the fd)
    return False


def user_bridges() -> list[str]:
    """The 12 hex of each user network whose bridge pybuild made (its state dir has a
    bridge.json): what a `run` sweeps, so a killed foreground run's bridge goes too."""
    try:
        names = os.listdir(STATE_DIR)
    except OSError:
        return []
    return [n for n in names
            if len(n) == 12 and os.path.exists(os.path.join(STATE_DIR, n, BRIDGE_STATE))]


def ready_subnet(state_dir: str = STATE_DIR, bridge: str = BRIDGE) -> str | None:
    """The subnet of a whole bridge with today's rules (bridge.json says ready, the link is
    there), else None: then runtime.network.bridge.ensure makes or mends it. What every run
    on the bridge asks, so it reads one small file without importing bridge's iptables,
    ipaddress and subprocess machinery (nor json: cache.jsonread)."""
    from cache.jsonread import loads

    try:
        with open(os.path.join(state_dir, BRIDGE_STATE), "rb") as f:
            state = loads(f.read())
        ok = (state.get("ready") and state.get("rules") == RULES_VERSION
              and os.path.exists(f"/sys/class/net/{bridge}"))
        return str(state["subnet"]) if ok else None
    except (OSError, ValueError, KeyError, AttributeError):
        return None
