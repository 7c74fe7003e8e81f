"""docker run's -p/--publish, -P/--publish-all and --expose: parsing (go-connections/nat's
ParsePortSpec and its error lines), the listening sockets on the host, and the spellings
`ps`, `port` and `inspect` show.

A binding is a plain dict (it is kept in the container's config.json):
{"ip": host address ("" = 0.0.0.0), "host": first host port (0 = any free one),
 "host_end": last host port of a range to pick from, "port": container port, "proto"}.
"""
from __future__ import annotations

import errno
import ipaddress
import socket

from runtime.errors import ConfigError, SandboxError

PROTOS = ("tcp", "udp")


def _range(text: str) -> tuple[int, int]:
    start, dash, end = text.partition("-")
    lo = int(start) if start.isdigit() else -1
    hi = (int(end) if end.isdigit() else -1) if dash else lo
    if not (0 <= lo <= 65535 and 0 <= hi <= 65535) or hi < lo:
        raise ValueError(text)
    return lo, hi


def parse(raw: str) -> list[dict]:
    """One -p value as its bindings (a container port range gives one per port)."""
    parts = raw.split(":")
    ctr = parts[-1]
    ip, host = ("", "") if len(parts) == 1 else \
        ("", parts[0]) if len(parts) == 2 else (":".join(parts[:-2]), parts[-2])
    ctr, _, proto = ctr.partition("/")
    proto = proto or "tcp"
    if ip.startswith("[") and ip.endswith("]"):
        ip = ip[1:-1]
    if ip:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise ConfigError(f"invalid IP address: {ip}") from None
    if not ctr:
        raise ConfigError(f"no port specified: {raw}<empty>")
    try:
        lo, hi = _range(ctr)
    except ValueError:
        raise ConfigError(f"invalid containerPort: {ctr}") from None
    hlo = hhi = 0
    if host:
        try:
            hlo, hhi = _range(host)
        except ValueError:
            raise ConfigError(f"invalid hostPort: {host}") from None
        if hi - lo != hhi - hlo and hi != lo:
            raise ConfigError(f"invalid ranges specified for container and host Ports: "
                              f"{ctr} and {host}")
    if proto.lower() not in PROTOS + ("sctp",):
        raise ConfigError(f"invalid proto: {proto}")
    if proto.lower() == "sctp":
        raise ConfigError("sctp ports are not supported")
    proto = proto.lower()
    if hi == lo:
        return [{"ip": ip, "host": hlo, "host_end": hhi, "port": lo, "proto": proto}]
    return [{"ip": ip, "host": hlo + i if hlo else 0, "host_end": hlo + i if hlo else 0,
             "port": p, "proto": proto} for i, p in enumerate(range(lo, hi + 1))]


def exposed(image_ports: dict | None, expose: list[str]) -> list[str]:
    """The image's ExposedPorts plus --expose PORT[-PORT][/proto], as "80/tcp" keys. A bad
    --expose is docker's error; a bad image entry (its config is not ours to refuse) is left out."""
    out = []
    for k in image_ports or {}:
        try:
            out += _expose_one(str(k))
        except ConfigError:
            continue
    for e in expose:
        out += _expose_one(e)
    return list(dict.fromkeys(out))


def _expose_one(e: str) -> list[str]:
    if ":" in e:
        raise ConfigError(f"invalid port format for --expose: {e}")
    port, _, proto = e.partition("/")
    proto = proto.lower() or "tcp"
    try:
        lo, hi = _range(port)
    except ValueError:
        raise ConfigError(f"invalid range format for --expose: {e}, error: "
                          f"strconv.ParseUint: parsing {port!r}: invalid syntax") from None
    if proto not in PROTOS + ("sctp",):
        raise ConfigError(f"invalid proto: {proto}")
    if proto == "sctp":
        raise ConfigError("sctp ports are not supported")
    if lo == 0:
        raise ConfigError(f"invalid port: {port}")
    return [f"{p}/{proto}" for p in range(lo, hi + 1)]


def publish_all(keys: list[str]) -> list[dict]:
    """-P: every exposed port on a random free host port of every address."""
    out = []
    for k in keys:
        port, _, proto = k.partition("/")
        out.append({"ip": "", "host": 0, "host_end": 0, "port": int(port), "proto": proto or "tcp",
                    "given": False})
    return out


def key(b: dict) -> str:
    return f"{b['port']}/{b['proto']}"


def bind(bindings: list[dict]) -> list[tuple[dict, socket.socket]]:
    """A listening socket per binding (docker's error when the port is taken); each returned
    binding has its real host port. One without an address listens on 0.0.0.0 and, as docker,
    on [::] at the same port where the host has IPv6."""
    out: list[tuple[dict, socket.socket]] = []
    try:
        for b in bindings:
            out.append(_bind_one(b))
            if not b["ip"]:
                six = _bind_v6(out[-1][0])
                if six is not None:
                    out.append(six)
    except BaseException:
        for _, s in out:
            s.close()
        raise
    return out


def _bind_one(b: dict) -> tuple[dict, socket.socket]:
    ip = b["ip"] or "0.0.0.0"
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    kind = socket.SOCK_STREAM if b["proto"] == "tcp" else socket.SOCK_DGRAM
    ports = range(b["host"], max(b["host"], b["host_end"]) + 1) if b["host"] else [0]
    last = None
    for port in ports:
        s = None
        try:       # socket() too: no IPv6 on the host (EAFNOSUPPORT) is this error line as well
            s = socket.socket(family, kind | socket.SOCK_CLOEXEC)
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((ip, port))
            if kind == socket.SOCK_STREAM:
                s.listen(128)
        except OSError as e:
            if s is not None:
                s.close()
            last = e
            continue
        return {**b, "ip": b["ip"] or "0.0.0.0", "host": s.getsockname()[1], "host_end": 0}, s
    shown = f"[{ip}]" if family == socket.AF_INET6 else ip
    if last is not None and last.errno == errno.EADDRINUSE:
        span = f"{b['host']}-{b['host_end']}" if b["host_end"] > b["host"] else str(b["host"])
        raise SandboxError(f"Bind for {shown}:{span} failed: port is already allocated")
    raise SandboxError(f"cannot publish {shown}:{b['host']}: {last.strerror if last else '?'}")


def _bind_v6(b: dict) -> tuple[dict, socket.socket] | None:
    """[::]:port beside 0.0.0.0:port (IPV6_V6ONLY, so the two do not collide); None without IPv6."""
    kind = socket.SOCK_STREAM if b["proto"] == "tcp" else socket.SOCK_DGRAM
    try:
        s = socket.socket(socket.AF_INET6, kind | socket.SOCK_CLOEXEC)
    except OSError:
        return None
    try:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("::", b["host"]))
        if kind == socket.SOCK_STREAM:
            s.listen(128)
    except OSError:
        s.close()
        return None
    return {**b, "ip": "::"}, s


def host_port(b: dict) -> str:
    """docker port's spelling: 0.0.0.0:8800, [::]:8800."""
    return f"[{b['ip']}]:{b['host']}" if ":" in b["ip"] else f"{b['ip']}:{b['host']}"


def ps_text(published: list[dict], exposed_keys: list[str]) -> str:
    """docker ps's PORTS: "127.0.0.1:8800->80/tcp, 443/tcp"."""
    out, seen = [], set()
    for b in sorted(published, key=lambda b: (b["port"], b["proto"])):
        out.append(f"{b['ip']}:{b['host']}->{b['port']}/{b['proto']}")
        seen.add(key(b))
    out += [k for k in exposed_keys if k not in seen]
    return ", ".join(out)


def inspect_ports(published: list[dict], exposed_keys: list[str]) -> dict:
    """NetworkSettings.Ports: {"80/tcp": [{"HostIp", "HostPort"}], "443/tcp": None}."""
    out: dict = dict.fromkeys(exposed_keys)
    for b in published:
        out.setdefault(key(b), None)
        out[key(b)] = (out[key(b)] or []) + [{"HostIp": b["ip"], "HostPort": str(b["host"])}]
    return out


def port_bindings(requested: list[dict]) -> dict:
    """HostConfig.PortBindings as given (HostPort "" when any free port)."""
    out: dict = {}
    for b in requested:
        hp = "" if not b["host"] else (f"{b['host']}-{b['host_end']}" if b["host_end"] > b["host"]
                                       else str(b["host"]))
        out.setdefault(key(b), []).append({"HostIp": b["ip"], "HostPort": hp})
    return out


def of_container(c) -> tuple[list[dict], list[str]]:
    """(published bindings, exposed "80/tcp" keys) of a container record while it runs (docker
    shows none for one that does not)."""
    if c.status != "running":
        return [], []
    net = c.state.get("network") or {}
    return (sorted(net.get("ports") or [], key=lambda b: (b["port"], b["proto"])),
            c.config.get("exposed") or [])
