"""The OCI platform (os, architecture, variant) of this machine, in Go's GOARCH names.

One mapping for the whole project: the image configs a build writes, the `TARGETPLATFORM` build
args, the platform chosen from a multi-platform index on load, `--platform` checks. Names
follow containerd's platforms package: `uname -m` is mapped to GOARCH (`x86_64` -> `amd64`,
`armv7l` -> `arm` + variant `v7`), and a variant is then normalised as containerd does
(arm64's `v8` is dropped, a bare `arm` means `v7`), so two spellings of one platform compare equal.
"""
from __future__ import annotations

import os
import sys
from functools import cache

# uname -m -> (GOARCH, variant) where the name alone is not already the GOARCH name
_MACHINE = {
    "x86_64": ("amd64", ""), "x86-64": ("amd64", ""), "amd64": ("amd64", ""),
    "i386": ("386", ""), "i486": ("386", ""), "i586": ("386", ""), "i686": ("386", ""),
    "aarch64": ("arm64", ""), "arm64": ("arm64", ""), "aarch64_be": ("arm64be", ""),
    "armv8l": ("arm", "v8"), "armv7l": ("arm", "v7"), "armv7": ("arm", "v7"),
    "armv6l": ("arm", "v6"), "armv5tel": ("arm", "v5"), "armv5tejl": ("arm", "v5"),
    "loongarch64": ("loong64", ""),
    "ppc": ("ppc", ""), "ppc64": ("ppc64", ""), "ppc64le": ("ppc64le", ""),
    "riscv64": ("riscv64", ""), "s390x": ("s390x", ""), "sparc64": ("sparc64", ""),
}


def normalize(arch: str, variant: str = "") -> tuple[str, str]:
    """(GOARCH, variant) for any common spelling, as containerd's platforms.Normalize."""
    arch, variant = arch.lower(), variant.lower()
    if arch == "i386":
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        return "arm64", {"8": "", "v8": "", "v8.0": "", "9": "v9", "9.0": "v9",
                         "v9.0": "v9"}.get(variant, variant)
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        return "arm", {"": "v7", "7": "v7", "5": "v5", "6": "v6", "8": "v8"}.get(variant, variant)
    return arch, variant


def parse(spec: str) -> dict:
    """`linux`, `linux/arm64`, `linux/arm/v7` as docker users write them -> a platform dict
    (normalised as containerd's platforms.Parse does); ValueError for anything else."""
    parts = spec.lower().split("/")
    if not 1 <= len(parts) <= 3 or not all(parts):
        raise ValueError(f'"{spec}": expected os[/arch[/variant]], e.g. linux/amd64')
    out = {"os": parts[0]}
    if len(parts) > 1:
        arch, variant = normalize(parts[1], parts[2] if len(parts) > 2 else "")
        out["architecture"] = arch
        if variant:
            out["variant"] = variant
    return out


def from_machine(machine: str, byteorder: str = sys.byteorder) -> dict:
    """The OCI platform of a Linux machine whose `uname -m` is `machine`."""
    m = machine.lower()
    if m in _MACHINE:
        arch, variant = _MACHINE[m]
    elif m in ("mips", "mips64"):  # uname does not tell the byte order
        arch, variant = m + ("le" if byteorder == "little" else ""), ""
    else:
        arch, variant = m, ""
    arch, variant = normalize(arch, variant)
    out = {"os": "linux", "architecture": arch}
    if variant:
        out["variant"] = variant
    return out


@cache
def _host() -> tuple[tuple[str, str], ...]:
    return tuple(from_machine(os.uname().machine).items())


def host() -> dict:
    """This machine's platform: {"os", "architecture"[, "variant"]} (a fresh dict)."""
    return dict(_host())


def to_string(p: dict) -> str:
    """`linux/arm/v7`, `linux/amd64`."""
    parts = [p.get("os", "linux"), p.get("architecture", "")]
    if p.get("variant"):
        parts.append(p["variant"])
    return "/".join(parts)


def matches(p: dict, want: dict) -> bool:
    """Does platform `p` (from an index entry or a config) name the platform `want`?"""
    if (p.get("os") or "linux") != want.get("os", "linux"):
        return False
    arch, variant = normalize(p.get("architecture") or "", p.get("variant") or "")
    warch, wvariant = normalize(want.get("architecture", ""), want.get("variant", ""))
    return arch == warch and (variant == wvariant or not variant)
