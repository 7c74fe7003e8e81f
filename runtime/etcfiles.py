"""The /etc/hosts, /etc/resolv.conf and /etc/hostname a sandbox gets, written on the host and
bind-mounted read-only over the image's own (which stay untouched in its layers)."""
from __future__ import annotations

import os


def hosts(hostname: str) -> str:
    return (f"127.0.0.1\tlocalhost {hostname}\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\n")


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


def write(directory: str, hostname: str, network: str) -> dict[str, str]:
    """Write the three files into directory; return container path -> host file."""
    files = {"/etc/hosts": hosts(hostname), "/etc/resolv.conf": resolv_conf(network),
             "/etc/hostname": hostname + "\n"}
    out = {}
    for target, text in files.items():
        p = os.path.join(directory, os.path.basename(target))
        with open(p, "w", encoding="utf-8") as f:
            f.write(text)
        out[target] = p
    return out
