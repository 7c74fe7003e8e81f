"""The rtnetlink requests a bridge network needs (links, addresses, a route), stdlib only.

pyroute2 would do the same but costs 110-200 ms to import (asyncio, its NDB) against a 100 ms
budget for a whole `pybuild run`, and a supervisor (`python -I -S`) cannot import it at all.
Each request waits for the kernel's ack and raises OSError(errno) on a refusal.
"""
from __future__ import annotations

import os
import socket
import struct

RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 17, 20, 24
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
NLMSG_ERROR = 2
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MASTER, IFLA_LINKINFO, IFLA_NET_NS_FD = 1, 3, 10, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST = 1, 2, 4
RTA_OIF, RTA_GATEWAY = 4, 5
IFF_UP = 0x1
NESTED = 0x8000


def attr(kind: int, data: bytes) -> bytes:
    """One rtattr, padded to 4 bytes."""
    n = 4 + len(data)
    return struct.pack("=HH", n, kind) + data + b"\0" * (-n % 4)


def name(s: str) -> bytes:
    return s.encode() + b"\0"


def ifinfo(index: int = 0, up: bool = False) -> bytes:
    return struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, IFF_UP if up else 0,
                       IFF_UP if up else 0)


def mac(text: str) -> bytes:
    return bytes(int(x, 16) for x in text.split(":"))


class Netlink:
    """A NETLINK_ROUTE socket in the network namespace of the thread that made it."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def request(self, kind: int, body: bytes, flags: int = 0) -> None:
        self.seq += 1
        msg = struct.pack("=LHHLL", 16 + len(body), kind, NLM_F_REQUEST | NLM_F_ACK | flags,
                          self.seq, 0) + body
        self.sock.send(msg)
        while True:
            data = self.sock.recv(65536)
            off = 0
            while off + 16 <= len(data):
                length, mtype, _, seq, _ = struct.unpack_from("=LHHLL", data, off)
                if mtype == NLMSG_ERROR and seq == self.seq:
                    err = struct.unpack_from("=i", data, off + 16)[0]
                    if err:
                        raise OSError(-err, os.strerror(-err))
                    return
                off += max((length + 3) & ~3, 16)

    def new_bridge(self, ifname: str) -> None:
        info = attr(IFLA_LINKINFO | NESTED, attr(IFLA_INFO_KIND, b"bridge"))
        self.request(RTM_NEWLINK, ifinfo() + attr(IFLA_IFNAME, name(ifname)) + info,
                     NLM_F_CREATE | NLM_F_EXCL)

    def new_veth(self, host: str, master: int, peer: str, peer_netns_fd: int,
                 peer_mac: str) -> None:
        """A veth pair: `host` up on bridge `master`, `peer` made in the netns peer_netns_fd."""
        peer_msg = (ifinfo() + attr(IFLA_IFNAME, name(peer))
                    + attr(IFLA_NET_NS_FD, struct.pack("=I", peer_netns_fd))
                    + attr(IFLA_ADDRESS, mac(peer_mac)))
        info = attr(IFLA_LINKINFO | NESTED, attr(IFLA_INFO_KIND, b"veth")
                    + attr(IFLA_INFO_DATA | NESTED, attr(VETH_INFO_PEER | NESTED, peer_msg)))
        self.request(RTM_NEWLINK, ifinfo(up=True) + attr(IFLA_IFNAME, name(host))
                     + attr(IFLA_MASTER, struct.pack("=I", master)) + info,
                     NLM_F_CREATE | NLM_F_EXCL)

    def set_up(self, index: int) -> None:
        self.request(RTM_NEWLINK, ifinfo(index, up=True))

    def delete_link(self, index: int) -> None:
        self.request(RTM_DELLINK, ifinfo(index))

    def add_address(self, index: int, ip: str, prefix: int, broadcast: str) -> None:
        a = socket.inet_aton(ip)
        body = (struct.pack("=BBBBI", socket.AF_INET, prefix, 0, 0, index) + attr(IFA_LOCAL, a)
                + attr(IFA_ADDRESS, a) + attr(IFA_BROADCAST, socket.inet_aton(broadcast)))
        self.request(RTM_NEWADDR, body, NLM_F_CREATE | NLM_F_EXCL)

    def add_default_route(self, index: int, gateway: str) -> None:
        # rtmsg: AF_INET, dst_len 0, src_len, tos, table main, proto boot, scope universe, unicast
        body = (struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, 254, 3, 0, 1, 0)
                + attr(RTA_GATEWAY, socket.inet_aton(gateway))
                + attr(RTA_OIF, struct.pack("=I", index)))
        self.request(RTM_NEWROUTE, body, NLM_F_CREATE | NLM_F_EXCL)


def in_netns(nsfd: int, then) -> None:
    """then() on a short thread that setns()es into the netns of nsfd (a socket stays in the
    netns it was made in, whoever uses it after); its error is raised here."""
    import threading

    from runtime import kernel

    out: dict = {}

    def run() -> None:
        try:
            kernel.setns(nsfd, kernel.CLONE_NEWNET)
            then()
        except BaseException as e:  # noqa: BLE001 - raised again on the caller's thread
            out["error"] = e

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
