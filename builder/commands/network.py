"""CLI: `pybuild network create|ls|inspect|rm|prune|connect|disconnect`, docker's network
commands over the user-defined networks of the store root (runtime.network.defs); docker's
predefined `bridge`, `host` and `none` are listed and inspected too. Imports happen only when
a command runs."""
from __future__ import annotations

import sys

PREDEFINED = ("bridge", "host", "none")


def register(sub) -> None:
    n = sub.add_parser("network", help="manage networks",
                       description="Manage the networks containers run on.")
    nsub = n.add_subparsers(dest="network_command", metavar="COMMAND")
    n.set_defaults(func=lambda args: (n.print_help(), 0)[1])

    p = nsub.add_parser("create", help="create a network")
    p.add_argument("name", metavar="NETWORK")
    p.add_argument("-d", "--driver", default="bridge", help='network driver (only "bridge")')
    p.add_argument("--subnet", default="", help="subnet in CIDR format (default: a free /16 "
                                                "of 172.18-31.x, then 10.x)")
    p.add_argument("--gateway", default="", help="gateway of the subnet (default: its first address)")
    p.add_argument("--internal", action="store_true",
                   help="restrict external access to the network (no NAT, no route out)")
    p.add_argument("--label", action="append", default=[], metavar="K=V", help="set metadata")
    p.set_defaults(func=cmd_create)

    p = nsub.add_parser("ls", aliases=["list"], help="list networks")
    p.add_argument("-q", "--quiet", action="store_true", help="only display network IDs")
    p.add_argument("-f", "--filter", action="append", default=[], metavar="name=NAME",
                   help="filter output (name=, id=, driver=)")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate the output")
    p.set_defaults(func=cmd_ls)

    p = nsub.add_parser("inspect", help="display detailed information on one or more networks")
    p.add_argument("names", nargs="+", metavar="NETWORK")
    p.set_defaults(func=cmd_inspect)

    p = nsub.add_parser("rm", aliases=["remove"], help="remove one or more networks")
    p.add_argument("-f", "--force", action="store_true",
                   help="no error for a network that does not exist")
    p.add_argument("names", nargs="+", metavar="NETWORK")
    p.set_defaults(func=cmd_rm)

    p = nsub.add_parser("connect", help="connect a container to a network")
    p.add_argument("--alias", action="append", default=[], help="add a network-scoped alias")
    p.add_argument("--ip", default="", help="IPv4 address (on a network with a --subnet)")
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(func=cmd_connect)

    p = nsub.add_parser("disconnect", help="disconnect a container from a network")
    p.add_argument("-f", "--force", action="store_true", help="no error when it is not connected")
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(func=cmd_disconnect)

    p = nsub.add_parser("prune", help="remove all networks no container uses")
    p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="until=TIME|DURATION (created before), label=K[=V], label!=K[=V]")
    p.set_defaults(func=cmd_prune)


def _networks():
    from cache.layout import default_root
    from runtime.network.defs import Networks

    return Networks(default_root())


def _predefined_doc(name: str) -> dict:
    """docker's document of a predefined network; the default bridge's subnet while it is up."""
    import hashlib

    from runtime.network import ready_subnet

    config = []
    if name == "bridge":
        subnet = ready_subnet() or "172.17.0.0/16"
        config = [{"Subnet": subnet, "Gateway": subnet.rsplit(".", 2)[0] + ".0.1"}]
    return {"Name": name, "Id": hashlib.sha256(b"pybuild-network-" + name.encode()).hexdigest(),
            "Created": "0001-01-01T00:00:00Z", "Scope": "local",
            "Driver": {"bridge": "bridge", "host": "host", "none": "null"}[name],
            "EnableIPv6": False, "IPAM": {"Driver": "default", "Options": None, "Config": config},
            "Internal": False, "Attachable": False, "Ingress": False,
            "ConfigFrom": {"Network": ""}, "ConfigOnly": False, "Containers": {},
            "Options": {"com.docker.network.bridge.name": "pybuild0"} if name == "bridge" else {},
            "Labels": {}}


def _containers(nid: str, name: str) -> dict:
    """Containers {id: {Name, EndpointID, MacAddress, IPv4Address, IPv6Address}} running on it
    (a user network's: from its lease files, eth0's and `network connect`ed ones alike)."""
    from cache.layout import default_root
    from runtime.containers.state import Containers
    from runtime.network.connect import endpoint_of

    user = None
    if name not in PREDEFINED:
        from runtime.network import user_net
        user = user_net(_networks().find(nid))
    out = {}
    for c in Containers(default_root()).all():
        net = c.state.get("network") or {}
        if c.status != "running":
            continue
        if user is not None:
            found = endpoint_of(user, c.id)
            if found is None:
                continue
            if net.get("ip") != found[0]:
                net = {"ip": found[0], "prefix": int(user.subnet.rpartition("/")[2]),
                       "mac": "02:42:" + ":".join(f"{int(x):02x}" for x in found[0].split("."))}
        elif c.config.get("network") != "bridge":
            continue
        out[c.id] = {"Name": c.name, "EndpointID": "", "MacAddress": net.get("mac", ""),
                     "IPv4Address": f"{net.get('ip', '')}/{net.get('prefix', 0)}",
                     "IPv6Address": ""}
    return out


_ORDER = ("Name", "Id", "Created", "Scope", "Driver", "EnableIPv6", "IPAM", "Internal",
          "Attachable", "Ingress", "ConfigFrom", "ConfigOnly", "Containers", "Options", "Labels")


def _public(d: dict, containers: dict) -> dict:
    """docker's document, in docker's key order."""
    return {k: containers if k == "Containers" else d.get(k) for k in _ORDER}


def _all() -> list[dict]:
    return [_predefined_doc(n) for n in PREDEFINED] + _networks().all()


def cmd_create(args) -> int:
    from runtime.errors import ConfigError

    if args.driver != "bridge":
        raise ConfigError(f"plugin \"{args.driver}\" not found (only the bridge driver)")
    from builder.flags import kv_map

    d = _networks().create(args.name, args.subnet, args.gateway, args.internal, kv_map(args.label))
    print(d["Id"])
    return 0


def _matches(d: dict, filters: list[str]) -> bool:
    from runtime.errors import ConfigError

    want: dict[str, list[str]] = {}
    for f in filters:
        k, eq, v = f.partition("=")
        if not eq or k not in ("name", "id", "driver"):
            raise ConfigError(f"invalid filter '{f}'")
        want.setdefault(k, []).append(v)
    return (all(any(v in d["Name"] for v in vs) for k, vs in want.items() if k == "name")
            and all(any(d["Id"].startswith(v) for v in vs) for k, vs in want.items() if k == "id")
            and all(d["Driver"] in vs for k, vs in want.items() if k == "driver"))


def cmd_ls(args) -> int:
    nets = sorted((d for d in _all() if _matches(d, args.filter)), key=lambda d: d["Name"])
    ids = [d["Id"] if args.no_trunc else d["Id"][:12] for d in nets]
    if args.quiet:
        sys.stdout.write("".join(i + "\n" for i in ids))
        return 0
    rows = [("NETWORK ID", "NAME", "DRIVER", "SCOPE")]
    rows += [(i, d["Name"], d["Driver"], d["Scope"]) for i, d in zip(ids, nets, strict=True)]
    widths = [max(len(r[c]) for r in rows) for c in range(3)]
    sys.stdout.write("".join("   ".join(r[c].ljust(widths[c]) for c in range(3)) + "   " + r[3]
                             + "\n" for r in rows))
    return 0


def _find(ref: str) -> dict:
    if ref in PREDEFINED:
        return _predefined_doc(ref)
    for n in PREDEFINED:
        d = _predefined_doc(n)
        if len(ref) >= 12 and d["Id"].startswith(ref):
            return d
    return _networks().find(ref)


def cmd_inspect(args) -> int:
    import json

    from runtime.network.defs import NotFound

    docs, rc = [], 0
    for ref in args.names:
        try:
            d = _find(ref)
        except NotFound:
            print(f"pybuild: error: No such network: {ref}", file=sys.stderr)
            rc = 1
            continue
        docs.append(_public(d, _containers(d["Id"], d["Name"])))
    print(json.dumps(docs, indent=4, sort_keys=False))
    return rc


def cmd_rm(args) -> int:
    from runtime.errors import SandboxError
    from runtime.network.defs import NotFound

    nets, rc = _networks(), 0
    for ref in args.names:
        try:
            if ref in PREDEFINED:
                raise SandboxError(f"{ref} is a pre-defined network and cannot be removed")
            nets.remove(nets.find(ref))
        except NotFound as e:
            if not args.force:
                print(f"pybuild: error: {e}", file=sys.stderr)
                rc = 1
            continue
        except SandboxError as e:
            print(f"pybuild: error: {e}", file=sys.stderr)
            rc = 1
            continue
        print(ref)
    return rc


def _used(nid: str) -> bool:
    from cache.layout import default_root
    from runtime.containers.state import Containers
    from runtime.network.defs import endpoints_of

    return any(any(e["id"] == nid for e in endpoints_of(c.config))
               for c in Containers(default_root()).all())


def cmd_prune(args) -> int:
    from builder.commands.containers import prune_filter
    from runtime.errors import SandboxError

    keep = prune_filter(getattr(args, "filter", []))
    if not args.force:
        from builder.prompt import confirm

        confirm("WARNING! This will remove all custom networks not used by at least one "
                "container.", "network prune has been cancelled")
    nets, deleted = _networks(), []
    for d in nets.all():
        if _used(d["Id"]) or (keep is not None and not keep(d.get("Created") or "",
                                                              d.get("Labels") or {})):
            continue
        try:
            nets.remove(d)
        except SandboxError:
            continue        # a foreground run on it
        deleted.append(d["Name"])
    if deleted:
        sys.stdout.write("Deleted Networks:\n" + "".join(n + "\n" for n in deleted))
    return 0


def _container_and_network(args):
    """(the container, its pid 1 or 0, the network, the record's updater) of connect and
    disconnect."""
    from cache.layout import default_root
    from runtime.containers.inspect import init_pid
    from runtime.containers.state import Containers
    from runtime.errors import SandboxError

    if args.network in PREDEFINED:
        raise SandboxError(f"connecting to or disconnecting from the predefined network "
                           f"{args.network} is not supported (only user-defined networks)")
    d = _networks().find(args.network)
    cs = Containers(default_root())
    c = cs.get(args.container)
    return c, init_pid(c), d, lambda change: cs.update_config(c, change)


def cmd_connect(args) -> int:
    from runtime.network.connect import connect

    c, pid, d, update = _container_and_network(args)
    connect(c, pid, d, args.alias, args.ip, update)
    return 0


def cmd_disconnect(args) -> int:
    from cache.layout import default_root
    from runtime.errors import SandboxError
    from runtime.network.connect import disconnect

    c, pid, d, update = _container_and_network(args)
    try:
        disconnect(default_root(), c, pid, d, update)
    except SandboxError:
        if not args.force:
            raise
    return 0
