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


def _read(host_file: str) -> str:
    try:
        with open(host_file, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _values(text: str, key: str) -> list[str]:
    """The words after `key` on its lines (docker's resolvconf GetNameservers/GetSearchDomains/
    GetOptions: nameservers from each line, search and options from the last one)."""
    found: list[str] = []
    for ln in text.splitlines():
        words = ln.split("#", 1)[0].split()
        if words[:1] == [key] and len(words) > 1:
            found = found + words[1:2] if key == "nameserver" else words[1:]
    return found


def nameservers(host_file: str = "/etc/resolv.conf") -> list[str]:
    """The host's resolv.conf nameservers, loopback ones too (the embedded DNS server forwards
    from the host's netns, where they answer)."""
    return _values(_read(host_file), "nameserver")


def _loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip == "::1"


def resolv_conf(network: str, host_file: str = "/etc/resolv.conf", dns: tuple = (),
                search: tuple = (), options: tuple = (), embedded: bool = False) -> str:
    """The container's resolv.conf, as docker 20.10 writes it. `embedded` (a user network):
    docker's embedded DNS server, `nameserver 127.0.0.11`, the host's (or --dns-search) search
    and (or --dns-option) options, `ndots:0` added unless an ndots is given; --dns servers are
    that server's upstreams then. Elsewhere --dns/--dns-search/--dns-option replace the host's
    part each; with none given the host's file, off the host network without its loopback
    resolvers (as BuildKit; the Google servers when none is left)."""
    text = _read(host_file)
    if embedded or dns or search or options:
        servers = ["127.0.0.11"] if embedded else list(dns) or [
            ip for ip in _values(text, "nameserver") if network == "host" or not _loopback(ip)]
        if not servers:
            servers = ["8.8.8.8", "8.8.4.4"]
        search = list(search) or _values(text, "search")
        options = list(options) or _values(text, "options")
        if embedded and not any(o.startswith("ndots") for o in options):
            options.append("ndots:0")
        out = ""
        if search and " ".join(search).strip() != ".":
            out += "search " + " ".join(search) + "\n"
        out += "".join(f"nameserver {ip}\n" for ip in servers)
        if options:
            out += "options " + " ".join(options) + "\n"
        return out
    if network == "host":
        return text
    lines = [ln for ln in text.splitlines()
             if not (ln.split()[:1] == ["nameserver"] and len(ln.split()) > 1
                     and _loopback(ln.split()[1]))]
    if not any(ln.split()[:1] == ["nameserver"] for ln in lines):
        lines += ["nameserver 8.8.8.8", "nameserver 8.8.4.4"]
    return "\n".join(lines) + "\n"


def write(directory: str, hostname: str, network: str, ip: str = "", gateway: str = "",
          extra_hosts: list[str] | None = None, dns: dict | None = None,
          embedded: bool = False) -> dict[str, str]:
    """Write the three files into directory; return container path -> host file. `dns`:
    {servers, search, options} of --dns/--dns-search/--dns-option; `embedded`: a user network
    (its /etc/hosts has no peers: they are the embedded DNS server's)."""
    dns = dns or {}
    files = {"/etc/hosts": hosts(hostname, ip, _extra(extra_hosts or [], gateway)),
             "/etc/resolv.conf": resolv_conf(network, "/etc/resolv.conf", dns.get("servers") or (),
                                             dns.get("search") or (), dns.get("options") or (),
                                             embedded),
             "/etc/hostname": hostname + "\n"}
    out = {}
    for target, text in files.items():
        p = os.path.join(directory, os.path.basename(target))
        with open(p, "w", encoding="utf-8") as f:
            f.write(text)
        out[target] = p
    return out
