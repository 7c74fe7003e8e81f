"""The /etc/hosts, /etc/resolv.conf and /etc/hostname a sandbox gets, written on the host and
bind-mounted read-only over the image's own (which stay untouched in its layers)."""
from __future__ import annotations

import os


def hosts(hostname: str, ip: str = "", extra: tuple = ()) -> str:
    """ip given (a bridge container): docker's file, the container's own line last; else the
    host name on 127.0.0.1. `extra`: (name, ip) pairs from --add-host, before that line."""
    more = "".join(f"{a}\t{n}\n" for n, a in extra)
    if not ip:
        return (f"127.0.0.1\tlocalhost {hostname}\n"
                "::1\tlocalhost ip6-localhost ip6-loopback\n" + more)
    return ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            "fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n"
            f"ff02::2\tip6-allrouters\n{more}{ip}\t{hostname}\n")


def parse_add_host(value: str) -> str:
    """--add-host NAME:IP (or NAME=IP), IP may be `host-gateway`; docker's error lines."""
    import ipaddress

    from runtime.errors import ConfigError

    sep = "=" if "=" in value else ":"
    name, found, ip = value.partition(sep)
    if not found or not name or not ip:
        raise ConfigError(f'invalid argument "{value}" for "--add-host" flag: '
                          f'bad format for add-host: "{value}"')
    if ip != "host-gateway":
        try:
            ipaddress.ip_address(ip.strip("[]"))
        except ValueError:
            raise ConfigError(f'invalid argument "{value}" for "--add-host" flag: '
                              f'invalid IP address in add-host: "{ip}"') from None
    return f"{name}:{ip.strip('[]')}"


def _extra(extra_hosts: list[str], gateway: str) -> tuple:
    """(name, ip) pairs; host-gateway is the bridge's gateway (the host's loopback elsewhere)."""
    out = []
    for item in extra_hosts:
        name, _, ip = item.partition(":")
        out.append((name, (gateway or "127.0.0.1") if ip == "host-gateway" else ip))
    return tuple(out)


def resolv_conf(network: str, host_file: str = "/etc/resolv.conf") -> str:
    """The host's resolv.conf; off the host network, loopback resolvers are replaced (as BuildKit)."""
    try:
        with open(host_file, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        text = ""
    if network == "host":
        return text
    lines = [ln for ln in text.splitlines()
             if not (ln.split()[:1] == ["nameserver"] and len(ln.split()) > 1
                     and (ln.split()[1].startswith("127.") or ln.split()[1] == "::1"))]
    if not any(ln.split()[:1] == ["nameserver"] for ln in lines):
        lines += ["nameserver 8.8.8.8", "nameserver 8.8.4.4"]
    return "\n".join(lines) + "\n"


def write(directory: str, hostname: str, network: str, ip: str = "", gateway: str = "",
          extra_hosts: list[str] | None = None) -> dict[str, str]:
    """Write the three files into directory; return container path -> host file."""
    files = {"/etc/hosts": hosts(hostname, ip, _extra(extra_hosts or [], gateway)),
             "/etc/resolv.conf": resolv_conf(network),
             "/etc/hostname": hostname + "\n"}
    out = {}
    for target, text in files.items():
        p = os.path.join(directory, os.path.basename(target))
        with open(p, "w", encoding="utf-8") as f:
            f.write(text)
        out[target] = p
    return out
