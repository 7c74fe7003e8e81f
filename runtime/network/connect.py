"""`network connect|disconnect`: the record's networks (config.json `endpoints`, in docker's
order: runtime.network.defs.endpoints_of), and the endpoints of a running container besides its
eth0, each held by a process of its own (a container started on several networks gets one per
network but its first, spawned by runtime.network.attach before the command runs).

`spawn` posix_spawns a holder (`python -I -S`, its own session, as the linger sweep) that
leases an address on the network (its own cache.owner token: a kill -9 of it frees the lease
like any dead holder's), makes a veth into the container's netns as the first free ethN (no
default route unless the container has none, as docker's gateway choice), joins (its names in its lease file:
the container's embedded DNS server, runtime.network.dns, then answers names of that network
too, and its peers' answer its names) and says `ok` on its stdout; then it waits for the
container's pid 1 to end (pidfd) or for SIGTERM (`disconnect`), removes the veth and releases
the lease (the network's linger then applies).
"""
from __future__ import annotations

import os
import sys

from runtime.errors import SandboxError


def spawn(net, pid: int, names: list[str], ip: str = "") -> None:
    """A holder of one more endpoint on net in the netns of process `pid` (the container's
    pid 1, or at start its keeper: either ends with the container); returns once it is up."""
    import json

    arg = json.dumps({"net": [net.state_dir, net.bridge, net.subnet, net.gateway, net.internal,
                              net.id, net.name],
                      "pid": pid, "names": names, "ip": ip})
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = (f"import os, sys; os.closerange(3, 1 << 20); os.chdir('/'); sys.path.insert(0, {here!r}); "
            "from runtime.network.connect import hold; hold(sys.argv[1])")
    r, w = os.pipe2(os.O_CLOEXEC)
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        child = os.posix_spawn(sys.executable, [sys.executable, "-I", "-S", "-c", code, arg],
                               os.environ, setsid=True,
                               file_actions=[(os.POSIX_SPAWN_DUP2, null, 0),
                                             (os.POSIX_SPAWN_DUP2, w, 1),
                                             (os.POSIX_SPAWN_DUP2, null, 2)])
    finally:
        os.close(w)
        os.close(null)
    with os.fdopen(r, "rb") as f:
        answer = f.read().decode(errors="replace").strip()
    os.waitpid(child, 0)            # it forked the holder away (no zombie left in a supervisor)
    if answer != "ok":
        raise SandboxError(answer or "the network's endpoint could not be made")


def connect(c, pid: int, d: dict, aliases: list[str], ip: str, update) -> None:
    """Container record c (its pid 1 `pid`, 0: not running) onto network d, as docker: in its
    record (`update`: runtime.containers.state's update_config of it; its next start and a
    restart policy's run attach it again), and at once when it runs."""
    from runtime.network import defs, user_net

    mode = c.config.get("network")
    if mode in ("host", "none"):
        raise SandboxError("container cannot be disconnected from host network or connected to "
                           "host network" if mode == "host" else
                           "container sharing network namespace with another container or "
                           "host cannot be connected to any other network")
    if ip:
        from ipaddress import IPv4Address
        try:
            IPv4Address(ip)
        except ValueError:
            raise SandboxError(f"invalid IPv4 address: {ip}") from None
        if not d.get("UserSubnet"):
            raise SandboxError("user specified IP address is supported only when connecting to "
                               "networks with user configured subnets")

    def add(cfg: dict) -> None:
        eps = defs.endpoints_of(cfg)
        if any(e["id"] == d["Id"] for e in eps):
            raise SandboxError(f"endpoint with name {c.name} already exists in network "
                               f"{d['Name']}")
        cfg["endpoints"] = eps + [{"id": d["Id"], "name": d["Name"], "aliases": list(aliases),
                                   "ip": ip}]

    add(dict(c.config))                 # its errors before anything is made
    if pid:
        net = user_net(d)
        if endpoint_of(net, c.id) is not None:
            raise SandboxError(f"endpoint with name {c.name} already exists in network "
                               f"{d['Name']}")
        spawn(net, pid, [c.name, *aliases, c.id[:12]], ip)
    update(add)


def endpoint_of(net, cid: str) -> tuple[str, dict] | None:
    """(ip, endpoint) of container cid on net, from its lease files."""
    from runtime.network import leases

    if not os.path.isdir(os.path.join(net.state_dir, "leases")):
        return None
    for ip, e in leases.endpoints(net).items():
        if e and e["names"][-1] == cid[:12]:
            return ip, e
    return None


def disconnect(root, c, pid: int, d: dict, update) -> None:
    """Container record c (pid 1 `pid`, 0: not running) off network d, its eth0's too (docker:
    the default route then goes through another network it is on, if any; none left, only lo):
    from the record (`update`, as connect's), and at once when it runs (a holder's endpoint:
    SIGTERM to it; eth0's, held by the supervisor: its veth deleted and its lease given back
    here)."""
    from runtime.network import defs, leases, user_net

    net = user_net(d)
    recorded = any(e["id"] == d["Id"] for e in defs.endpoints_of(c.config))
    found = endpoint_of(net, c.id) if pid else None
    if not recorded and found is None:
        raise SandboxError(f"container {c.id} is not connected to network {d['Name']}")
    if found is not None:
        ip, e = found
        if e["token"] == c.state.get("supervisor"):         # eth0: the supervisor's lease
            _delete_link((c.state.get("network") or {}).get("veth", ""))
            leases.release(leases.Lease(ip, net.subnet, e["token"], net.gateway, net))
        else:
            _stop_holder(int(e["token"].partition(".")[0]), net, c.id)
    if recorded:
        update(lambda cfg: cfg.update(endpoints=[x for x in defs.endpoints_of(cfg)
                                                 if x["id"] != d["Id"]]))
    if pid:
        _reroute(root, c, pid)


def _wait_released(net, ip: str, cid12: str, timeout: float = 3.0) -> None:
    """Until address ip of net is no longer held by an endpoint of the same container (the
    holder of its last run, which ends with that run's pid 1), at most timeout seconds."""
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        e = endpoint_of(net, cid12)
        if e is None or e[0] != ip:
            return
        time.sleep(0.02)


def _delete_link(name: str) -> None:
    """Delete the host end of a veth (both ends go; nothing when it is gone already)."""
    import socket

    from runtime.network.netlink import Netlink

    if not name:
        return
    nl = Netlink()
    try:
        nl.delete_link(socket.if_nametoindex(name))
    except OSError:
        pass                    # gone with the container's netns
    finally:
        nl.close()


def _stop_holder(pid: int, net, cid: str) -> None:
    import signal
    import time

    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    end = time.monotonic() + 10
    while time.monotonic() < end and os.path.exists(f"/proc/{pid}") and \
            endpoint_of(net, cid) is not None:
        time.sleep(0.02)


def _reroute(root, c, pid: int) -> None:
    """docker's gateway choice after a disconnect: a container left without a default route
    gets one through the first other network it is on that has a way out."""
    from runtime.network import defs, user_net

    hops = []
    for e in defs.endpoints_of(c.config):
        try:
            net = user_net(defs.Networks(root).find(e["id"]))
        except defs.NotFound:
            continue
        found = endpoint_of(net, c.id)
        if found is not None and not net.internal:
            hops.append((found[0], net.gateway))
    if hops:
        _in_netns(pid, lambda: _default_route(hops))


def _default_route(hops: list[tuple[str, str]]) -> None:
    """In the container's netns: a default route via the interface holding the first address
    of hops, unless one is there (EEXIST)."""
    import errno

    from runtime.network.netlink import Netlink

    nl = Netlink()
    try:
        for ip, gateway in hops:
            index = _index_of(ip)
            if index is None:
                continue
            try:
                nl.add_default_route(index, gateway)
            except OSError as e:
                if e.errno != errno.EEXIST:
                    continue
            return
    finally:
        nl.close()


def _index_of(ip: str) -> int | None:
    """The interface (of this thread's netns) holding IPv4 address ip (SIOCGIFADDR)."""
    import fcntl
    import socket
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for index, name in socket.if_nameindex():
            try:
                got = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()))
            except OSError:
                continue
            if socket.inet_ntoa(got[20:24]) == ip:
                return index
    return None


def _in_netns(pid: int, then) -> None:
    """then() in the netns of process pid (netlink.in_netns)."""
    from runtime.network.netlink import in_netns

    nsfd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        in_netns(nsfd, then)
    finally:
        os.close(nsfd)


def live_endpoints(root, c) -> dict[str, dict]:
    """name -> {id, ip, prefix, gateway, mac, aliases} of the user networks c's record is on
    (ip "" and the rest empty while it does not run or its endpoint there is not up)."""
    from runtime.network import defs, leases, user_net

    out = {}
    running = c.status == "running"
    for e in defs.endpoints_of(c.config):
        info = {"id": e["id"], "ip": "", "prefix": 0, "mac": "", "gateway": "",
                "aliases": list(e.get("aliases") or []), "config_ip": e.get("ip") or ""}
        if running:
            try:
                net = user_net(defs.Networks(root).find(e["id"]))
            except defs.NotFound:
                net = None
            found = endpoint_of(net, c.id) if net is not None else None
            if found is not None:
                lease = leases.Lease(found[0], net.subnet, "", net.gateway, net)
                st = c.state.get("network") or {}
                mac = st.get("mac") if st.get("ip") == found[0] and st.get("id") == e["id"] \
                    else lease.mac
                info.update(ip=found[0], prefix=lease.prefix, mac=mac or lease.mac,
                            gateway="" if net.internal else lease.gateway)
        out[e["name"]] = info
    return out


def extra_networks(root, c) -> dict[str, dict]:
    """live_endpoints of the networks besides the one c was run on (ps's NETWORKS)."""
    first = c.config.get("network")
    return {n: e for n, e in live_endpoints(root, c).items() if n != first and e["ip"]}


def hold(arg: str) -> None:
    """The holder process (see the module's docstring)."""
    import json
    import select
    import signal
    import socket

    from runtime.network import Net, leases
    from runtime.network.netlink import Netlink, in_netns

    if os.fork():           # the holder is init's child, not a zombie of its spawner
        os._exit(0)
    a = json.loads(arg)
    net = Net(*a["net"])
    out = os.fdopen(1, "w")
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    lease, veth = None, ""
    try:
        pidfd = os.pidfd_open(a["pid"])
        nsfd = os.open(f"/proc/{a['pid']}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        if a["ip"]:             # a restart's: the last run's holder may still be releasing it
            _wait_released(net, a["ip"], a["names"][-1])
        lease = leases.acquire(net, a["ip"])
        inside: dict = {}

        def free_name() -> None:
            names = {n for _, n in socket.if_nameindex()}
            inside["ifname"] = next(f"eth{i}" for i in range(1, 100) if f"eth{i}" not in names)

        in_netns(nsfd, free_name)
        veth = "veth" + os.urandom(4).hex()[:7]
        host = Netlink()
        try:
            host.new_veth(veth, socket.if_nametoindex(net.bridge), inside["ifname"], nsfd, lease.mac)
        finally:
            host.close()

        def configure():
            nl = Netlink()
            try:
                idx = socket.if_nametoindex(inside["ifname"])
                nl.add_address(idx, lease.ip, lease.prefix, lease.broadcast)
                nl.set_up(idx)
                if not net.internal:        # the first network with a way out keeps it
                    try:
                        nl.add_default_route(idx, lease.gateway)
                    except FileExistsError:
                        pass
            finally:
                nl.close()

        in_netns(nsfd, configure)
        leases.join(lease, a["names"])
        out.write("ok\n")
        out.close()
        while not stop:
            try:
                if select.select([pidfd], [], [], 0.5)[0]:
                    break
            except InterruptedError:
                continue
    except Exception as e:  # noqa: BLE001 - the connecting command prints it
        if not out.closed:
            msg = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            out.write(f"cannot connect the container to network {net.name}: {msg}\n")
            out.close()
    finally:
        _delete_link(veth)
        if lease is not None:
            leases.release(lease)
