"""User-defined networks' definitions: `<store root>/networks/<id>.json`, docker's inspect
document itself (Name, Id, Created, Scope, Driver, IPAM.Config, Internal, Labels; Containers
is filled in at inspect from the live leases).

Under the store root, as docker keeps them under /var/lib/docker (its data root, which
`--root` moves, as it moves pybuild's containers and volumes): a definition outlives a reboot,
while everything it puts on the host (runtime.network.bridge, leases) lives in /run and only
while a container uses it. Created, named and removed under one flock (`networks/lock`), so
two creates never take one name or one subnet.
"""
from __future__ import annotations

import os

from runtime.errors import ConfigError, SandboxError

DIR = "networks"
PREDEFINED = ("bridge", "host", "none")


class NotFound(SandboxError):
    pass


def _pools():
    """docker's default address pools, after pybuild0's 172.17: 172.18-31.0.0/16, then 10.x/16
    (as runtime.network.bridge.candidates)."""
    from runtime.network.bridge import candidates

    return (c for c in candidates() if c != "172.17.0.0/16")


class Networks:
    def __init__(self, root):
        self.root = os.fspath(root)
        self.dir = os.path.join(self.root, DIR)

    def _lock(self):
        from cache import atomic

        os.makedirs(self.dir, exist_ok=True)
        return atomic.Lock(os.path.join(self.dir, "lock"))

    def all(self) -> list[dict]:
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        from cache.jsonread import loads

        out = []
        for n in names:
            if not n.endswith(".json"):
                continue
            try:
                with open(os.path.join(self.dir, n), "rb") as f:
                    d = loads(f.read())
            except (OSError, ValueError):
                continue
            if isinstance(d, dict) and d.get("Id") == n[:-5]:
                out.append(d)
        out.sort(key=lambda d: d["Created"])
        return out

    def find(self, ref: str) -> dict:
        """By name, full ID or unique ID prefix (docker's order); NotFound otherwise."""
        nets = self.all()
        for key in ("Name", "Id"):
            for d in nets:
                if d[key] == ref:
                    return d
        hits = [d for d in nets if ref and d["Id"].startswith(ref)]
        if len(hits) == 1:
            return hits[0]
        raise NotFound(f"network {ref} not found")

    def create(self, name: str, subnet: str = "", gateway: str = "", internal: bool = False,
               labels: dict | None = None) -> dict:
        import ipaddress

        from runtime.containers.names import valid_name
        from runtime.containers.state import now

        if name in PREDEFINED:
            raise ConfigError(f"{name} is a pre-defined network and cannot be created")
        if not valid_name(name):
            raise ConfigError(f'invalid name "{name}": only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed')
        given = _check(subnet, gateway)
        with self._lock().held():
            nets = self.all()
            if any(d["Name"] == name for d in nets):
                raise ConfigError(f"network with name {name} already exists")
            taken = [ipaddress.IPv4Network(d["IPAM"]["Config"][0]["Subnet"]) for d in nets]
            if given is not None:
                for t in taken:
                    if given.overlaps(t):
                        raise ConfigError("invalid pool request: Pool overlaps with other one "
                                          "on this address space")
                net = given
            else:
                net = _free(taken)
            gw = gateway or str(net.network_address + 1)
            nid = os.urandom(32).hex()
            d = {"Name": name, "Id": nid, "Created": now(), "Scope": "local", "Driver": "bridge",
                 "EnableIPv6": False,
                 "IPAM": {"Driver": "default", "Options": {},
                          "Config": [{"Subnet": str(net), "Gateway": gw}]},
                 "Internal": bool(internal), "Attachable": False, "Ingress": False,
                 "ConfigFrom": {"Network": ""}, "ConfigOnly": False, "Containers": {},
                 "Options": {}, "Labels": labels or {}, "UserSubnet": given is not None}
            from cache import atomic
            atomic.write_json(os.path.join(self.dir, nid + ".json"), d)
        return d

    def remove(self, d: dict) -> None:
        """Refused while a container runs on it (docker's line); its host state goes too."""
        from runtime.network import leases, user_net

        net = user_net(d)
        with self._lock().held():
            if os.path.isdir(net.state_dir) and leases.held(net):
                raise SandboxError(f"error while removing network: network {d['Name']} id "
                                   f"{d['Id']} has active endpoints")
            if os.path.isdir(net.state_dir):    # under its lock: a waiting sweep then sees
                from cache.fspath import remove_tree  # it gone and does not make it again
                with leases.locked(net):
                    leases._teardown(net)
                    remove_tree(net.state_dir)
            os.unlink(os.path.join(self.dir, d["Id"] + ".json"))


def _check(subnet: str, gateway: str):
    """--subnet and --gateway as docker checks them; the subnet (None: choose one)."""
    import ipaddress

    if gateway and not subnet:
        raise ConfigError("every ip-range or gateway must have a corresponding subnet")
    if not subnet:
        return None
    try:
        net = ipaddress.IPv4Network(subnet, strict=False)
    except ValueError:
        raise ConfigError(f"invalid CIDR address: {subnet}") from None
    if str(net) != subnet:
        raise ConfigError(f"invalid subnet {subnet}: it should be {net}")
    if net.prefixlen > 30:
        raise ConfigError(f"invalid subnet {subnet}: too small for containers")
    if gateway:
        try:
            gw = ipaddress.IPv4Address(gateway)
        except ValueError:
            raise ConfigError(f"invalid gateway address {gateway}") from None
        if gw not in net or gw in (net.network_address, net.broadcast_address):
            raise ConfigError(f"no matching subnet for gateway {gateway}")
    return net


def _free(taken: list):
    """The first pool no host route, no other network's subnet and no pybuild0 overlaps."""
    import ipaddress

    from runtime.network import ready_subnet
    from runtime.network.bridge import free_subnet, host_routes

    busy = list(taken) + host_routes("")
    default = ready_subnet()
    if default:
        busy.append(ipaddress.IPv4Network(default))
    subnet = free_subnet(busy, _pools())
    if subnet is None:
        raise SandboxError("could not find an available, non-overlapping IPv4 address pool "
                           "among the defaults to assign to the network")
    return ipaddress.IPv4Network(subnet)


def endpoints_of(cfg: dict) -> list[dict]:
    """The user networks a container's record (runtime.containers.state's config) is on, in
    docker's order, {id, name, aliases, ip} each: `endpoints` once `network connect` or
    `disconnect` changed them, else run --network's (network_id, aliases, ip)."""
    if "endpoints" in cfg:
        return [dict(e) for e in cfg["endpoints"]]
    if cfg.get("network_id"):
        return [{"id": cfg["network_id"], "name": cfg.get("network", ""),
                 "aliases": list(cfg.get("aliases") or []), "ip": cfg.get("ip") or ""}]
    return []


def split(cfg: dict) -> tuple[dict | None, list[dict]]:
    """(the endpoint that is eth0 with the default route, the others made as eth1...). A
    container run on a user network has the first of its endpoints as eth0 (None: it was
    disconnected from all, only lo is left, as docker); on the default bridge every user
    network is an extra one."""
    eps = endpoints_of(cfg)
    if cfg.get("network_id"):
        return (eps[0] if eps else None), eps[1:]
    return None, eps


def _endpoint(root, e: dict, cid: str, name: str):
    from runtime.network import Endpoint, user_net

    try:
        d = Networks(root).find(e["id"])
    except NotFound:
        raise NotFound(f"network {e['name']} not found") from None
    aliases = list(e.get("aliases") or [])
    names = [n for n in (name, *aliases, cid[:12]) if n]
    return Endpoint(user_net(d), names, aliases, e.get("ip") or "")


def endpoint(root, cfg: dict, cid: str, name: str = ""):
    """spec.endpoint for a container's record `cfg` (see split): the user network's
    runtime.network.Endpoint that is its eth0, whose peers resolve it by `name`, its aliases
    and short ID (spec.network is then `bridge`, the driver), None when it was disconnected from
    every network. A network removed since: docker's "network X not found"."""
    first, _ = split(cfg)
    return None if first is None else _endpoint(root, first, cid, name)


def connected(root, cfg: dict, cid: str, name: str = "") -> list:
    """The Endpoints of the networks the container gets besides its eth0 (spec.connected)."""
    return [_endpoint(root, e, cid, name) for e in split(cfg)[1]]


def sweep(root, cfg: dict) -> None:
    """After a container's record goes: its networks' leases of a killed supervisor or holder,
    and a bridge when it was the last (what runtime.network.leases.sweep does for the default)."""
    from runtime.network import leases, user_net

    if cfg.get("network") == "bridge":
        from runtime.network import bridge_exists
        if bridge_exists():
            leases.sweep()
    for e in endpoints_of(cfg):
        try:
            d = Networks(root).find(e["id"])
        except NotFound:
            continue
        net = user_net(d)
        if os.path.isdir(net.state_dir):
            leases.sweep(net)
