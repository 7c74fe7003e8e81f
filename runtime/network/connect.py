"""`network connect|disconnect` of a running container: one more endpoint, held by a process
of its own.

`connect` posix_spawns a holder (`python -I -S`, its own session, as the linger sweep) that
leases an address on the network (its own cache.owner token: a kill -9 of it frees the lease
like any dead holder's), makes a veth into the container's netns as the first free ethN (no
default route: the first network keeps it, as docker's), joins (its names in its lease file:
the container's embedded DNS server, runtime.network.dns, then answers names of that network
too, and its peers' answer its names) and says `ok` on its stdout; then it waits for the
container's pid 1 to end (pidfd) or for SIGTERM (`disconnect`), removes the veth and releases
the lease (the network's linger then applies).
"""
from __future__ import annotations

import os
import sys

from runtime.errors import SandboxError


def connect(c, pid: int, d: dict, aliases: list[str], ip: str) -> None:
    """Container record c, whose pid 1 is `pid` (0: not running), onto network d."""
    from runtime.network import user_net

    net = user_net(d)
    if not pid:
        raise SandboxError(f"container {c.name} is not running (connect needs a running one)")
    if c.config.get("network_id") == d["Id"] or endpoint_of(net, c.id) is not None:
        raise SandboxError(f"endpoint with name {c.name} already exists in network {d['Name']}")
    if c.config.get("network") in ("host", "none"):
        raise SandboxError("container cannot be disconnected from host network or connected to "
                           "host network" if c.config.get("network") == "host" else
                           "container sharing network namespace with another container or "
                           "host cannot be connected to any other network")
    if ip and not d.get("UserSubnet"):
        raise SandboxError("user specified IP address is supported only when connecting to "
                           "networks with user configured subnets")
    import json

    arg = json.dumps({"net": [net.state_dir, net.bridge, net.subnet, net.gateway, net.internal,
                              net.id, net.name],
                      "pid": pid, "names": [c.name, *aliases, c.id[:12]], "ip": ip})
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = (f"import os, sys; os.closerange(3, 1 << 20); os.chdir('/'); sys.path.insert(0, {here!r}); "
            "from runtime.network.connect import hold; hold(sys.argv[1])")
    r, w = os.pipe2(os.O_CLOEXEC)
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        os.posix_spawn(sys.executable, [sys.executable, "-I", "-S", "-c", code, arg], os.environ,
                       file_actions=[(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, w, 1),
                                     (os.POSIX_SPAWN_DUP2, null, 2)], setsid=True)
    finally:
        os.close(w)
        os.close(null)
    with os.fdopen(r, "rb") as f:
        answer = f.read().decode(errors="replace").strip()
    if answer != "ok":
        raise SandboxError(answer or "the network's endpoint could not be made")


def endpoint_of(net, cid: str) -> tuple[str, dict] | None:
    """(ip, endpoint) of a `connect`ed container on net, from its lease files."""
    from runtime.network import leases

    if not os.path.isdir(os.path.join(net.state_dir, "leases")):
        return None
    for ip, e in leases.endpoints(net).items():
        if e and cid[:12] in e["names"] and e["names"][-1] == cid[:12]:
            return ip, e
    return None


def disconnect(c, d: dict) -> None:
    from runtime.network import user_net

    if c.config.get("network_id") == d["Id"]:
        raise SandboxError(f"container {c.name} started on network {d['Name']}: only a network "
                           "it was connected to can be disconnected for now")
    found = endpoint_of(user_net(d), c.id)
    if found is None:
        raise SandboxError(f"container {c.id[:12]} is not connected to network {d['Name']}")
    pid = int(found[1]["token"].partition(".")[0])
    import signal
    import time

    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    end = time.monotonic() + 10
    while time.monotonic() < end and os.path.exists(f"/proc/{pid}") and \
            endpoint_of(user_net(d), c.id) is not None:
        time.sleep(0.02)


def extra_networks(root, c) -> dict[str, dict]:
    """name -> {id, ip, prefix, gateway, mac, aliases} of the networks c was connected to."""
    from runtime.network import leases, user_net
    from runtime.network.defs import Networks

    out = {}
    for d in Networks(root).all():
        if d["Id"] == c.config.get("network_id"):
            continue
        net = user_net(d)
        found = endpoint_of(net, c.id)
        if found is None:
            continue
        ip, e = found
        lease = leases.Lease(ip, net.subnet, "", net.gateway, net)
        out[d["Name"]] = {"id": d["Id"], "ip": ip, "prefix": lease.prefix, "mac": lease.mac,
                          "gateway": "" if net.internal else lease.gateway,
                          "aliases": e["names"][1:-1]}
    return out


def hold(arg: str) -> None:
    """The holder process (see the module's docstring)."""
    import json
    import select
    import signal
    import socket
    import threading

    from runtime import kernel
    from runtime.network import Net, leases
    from runtime.network.netlink import Netlink

    a = json.loads(arg)
    net = Net(*a["net"])
    out = os.fdopen(1, "w")
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    lease, veth = None, ""
    try:
        pidfd = os.pidfd_open(a["pid"])
        nsfd = os.open(f"/proc/{a['pid']}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        lease = leases.acquire(net, a["ip"])
        inside: dict = {}

        def enter(then=None):
            try:
                kernel.setns(nsfd, kernel.CLONE_NEWNET)
                if "ifname" not in inside:
                    names = {n for _, n in socket.if_nameindex()}
                    inside["ifname"] = next(f"eth{i}" for i in range(1, 100)
                                            if f"eth{i}" not in names)
                if then is not None:
                    then()
            except BaseException as e:  # noqa: BLE001 - raised again on the caller's thread
                inside["error"] = e

        t = threading.Thread(target=enter)
        t.start()
        t.join()
        if "error" in inside:
            raise inside["error"]
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
            finally:
                nl.close()

        t = threading.Thread(target=enter, args=(configure,))
        t.start()
        t.join()
        if "error" in inside:
            raise inside["error"]
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
        if veth:
            nl = Netlink()
            try:
                nl.delete_link(socket.if_nametoindex(veth))
            except OSError:
                pass                    # gone with the container's netns
            finally:
                nl.close()
        if lease is not None:
            leases.release(lease)
