"""One container on the bridge, the host side's half of runtime.process.start:

`Attachment(spec)` before the fork binds the published ports (so a taken port fails before
anything runs) and leases an address; `connect(pid)` once the keeper has unshared its network
namespace makes the veth pair (the host end on pybuild0, the other created as eth0 straight
in the container's netns), then, from a short thread that setns()es there, brings up lo and
eth0 with the leased address and the default route, and starts the port proxy; `release()`
after the tree ended (RunDir.remove) stops the proxy and gives the lease back. The veth goes
with the netns, whatever ends the container. Pickles without its sockets (the monitor gets
those through proxy.handoff).

On a user-defined network (spec.endpoint, a runtime.network.Endpoint) the same on its bridge, with
its --ip; no default route on an --internal one; the thread in the netns also binds the
container's embedded DNS server's sockets (runtime.network.dns, served from this process);
once connected the endpoint joins (leases.join: its names go into its lease file, the registry
those servers answer from). runtime.rundir hands over the spec's --mac-address and --dns
(`configure`), and the Endpoints of the record's other networks (spec.connected), each made
as eth1... by a runtime.network.connect holder before the command runs.
"""
from __future__ import annotations

import os
import socket

from runtime.errors import SandboxError
from runtime.network import DEFAULT, leases, netlink
from runtime.network.netlink import Netlink


class Attachment:
    def __init__(self, bindings: list[dict], endpoint=None):
        if bindings:        # ports and the proxy (ipaddress, threads) only for -p/-P
            from runtime.network import ports
            self.listeners = ports.bind(bindings)
        else:
            self.listeners = []
        self.published = [b for b, _ in self.listeners]
        self.proxy_key: str | None = None
        self.veth = ""
        self.endpoint = endpoint        # a user network's runtime.network.Endpoint, else None
        self.mac = ""                   # --mac-address (configure), else the lease's
        self.dns_servers: list[str] = []    # --dns: the embedded DNS server's upstreams
        self.dns_key: str | None = None     # its runtime.network.dns.Resolver, once started
        self.connected: list = []           # spec.connected: Endpoints made as eth1... by holders
        try:
            if self.endpoint is not None:
                self.lease = leases.acquire(self.endpoint.net, self.endpoint.ip)
            else:
                self.lease = leases.acquire()
        except OSError as e:
            self._close_listeners()
            raise SandboxError(f"cannot lease an address on the bridge network: {e}") from None
        except BaseException:
            self._close_listeners()
            raise

    def __getstate__(self):
        return {**self.__dict__, "listeners": []}

    def _close_listeners(self) -> None:
        for _, s in self.listeners:
            s.close()
        self.listeners = []

    def configure(self, spec) -> None:
        """The spec's part (runtime.rundir, before the fork): --mac-address, --dns."""
        self.mac = spec.mac_address or ""
        self.dns_servers = list((spec.dns or {}).get("servers") or [])
        self.connected = list(spec.connected)

    def info(self) -> dict:
        """What state.json keeps for inspect, ps and port."""
        le = self.lease
        out = {"ip": le.ip, "prefix": le.prefix, "gateway": le.gateway, "mac": self.mac or le.mac,
               "veth": self.veth, "ports": self.published}
        if self.endpoint is not None:
            ep = self.endpoint
            out.update(name=ep.net.name, id=ep.net.id, aliases=ep.aliases,
                       gateway="" if ep.net.internal else le.gateway)
        return out

    def connect(self, pid: int) -> None:
        le = self.lease
        net = self.endpoint.net if self.endpoint is not None else DEFAULT
        try:
            nsfd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise SandboxError(f"the container ended before its network was set up: "
                               f"{e.strerror}") from None
        host = Netlink()
        inside: dict = {}

        def configure() -> None:            # on the thread in the container's netns
            nl = Netlink()
            try:
                eth0 = socket.if_nametoindex("eth0")
                nl.set_up(1)                                  # lo: always ifindex 1
                nl.add_address(eth0, le.ip, le.prefix, le.broadcast)
                nl.set_up(eth0)
                if not net.internal:              # docker's --internal: no route out
                    nl.add_default_route(eth0, le.gateway)
            finally:
                nl.close()
            if self.endpoint is not None:         # lo is up: 127.0.0.11 is there
                from runtime.network import dns
                inside["dns"] = dns.open_sockets()

        try:
            self.veth = "veth" + os.urandom(4).hex()[:7]
            host.new_veth(self.veth, socket.if_nametoindex(net.bridge), "eth0", nsfd,
                          self.mac or le.mac)
            try:
                netlink.in_netns(nsfd, configure)
            except BaseException:
                for s in inside.pop("dns", ()):
                    s.close()
                raise
        except OSError as e:
            raise SandboxError(f"cannot connect the container to the bridge network: "
                               f"{e.strerror or e}") from None
        finally:
            host.close()
            os.close(nsfd)
        if self.endpoint is not None:
            self._serve_dns(inside["dns"])
            leases.join(self.lease, list(dict.fromkeys(self.endpoint.names)))
        if self.connected:      # the record's other networks, each by a holder of its own
            from runtime.network.connect import spawn
            for ep in self.connected:
                spawn(ep.net, pid, list(dict.fromkeys(ep.names)), ep.ip)
        if self.listeners:
            from runtime.network import proxy
            self.proxy_key = os.urandom(8).hex()
            proxy.Proxy(self.proxy_key, [(s, b["proto"], le.ip, b["port"])
                                         for b, s in self.listeners]).start()

    def _serve_dns(self, sockets) -> None:
        """The container's embedded DNS server, on threads of this process (docker's 127.0.0.11;
        Endpoint.names ends with the container's short ID, which finds its networks)."""
        from runtime.network import dns

        try:
            servers = dns.upstreams(self.dns_servers)
        except BaseException:
            for s in sockets:
                s.close()
            raise
        self.dns_key = os.urandom(8).hex()
        dns.Resolver(self.dns_key, sockets, self.endpoint.names[-1], servers).start()

    def release(self) -> None:
        if self.dns_key is not None:
            from runtime.network import dns
            dns.stop(self.dns_key)
        if self.proxy_key is not None:
            from runtime.network import proxy
            proxy.stop(self.proxy_key)
        self._close_listeners()
        lease, self.lease = self.lease, None
        if lease is not None:
            leases.release(lease)
