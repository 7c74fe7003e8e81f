"""Capabilities: Docker's (and containerd's, BuildKit's) default set, docker's --cap-add,
--cap-drop and --privileged on top of it, and dropping a process to the result.

The command runs as root in its namespaces but with only its set: everything else leaves the
bounding set (so no setuid binary or file capability can bring it back), the ambient and
inheritable sets are cleared, and effective = permitted = the set. For a non-root user the
kernel clears the effective and permitted sets at setuid, as it does for docker's containers.
"All" (--privileged, --cap-add ALL) is every capability this kernel knows that the caller
still has in its bounding set: no process can hand out more (docker 20.10 asks runc for the
ones it lacks and fails; newer docker leaves them out, as this does).
"""
from __future__ import annotations

import os

from runtime import kernel
from runtime.errors import SandboxError

DEFAULT_CAPS = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_FOWNER": 3, "CAP_FSETID": 4, "CAP_KILL": 5,
    "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8, "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_RAW": 13, "CAP_SYS_CHROOT": 18, "CAP_MKNOD": 27, "CAP_AUDIT_WRITE": 29,
    "CAP_SETFCAP": 31,
}
DEFAULT_CAP_MASK = sum(1 << n for n in DEFAULT_CAPS.values())  # 0x00000000a80425fb
# capability(7)'s numbers, in order (linux/capability.h)
CAP_NAMES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)


def available_mask() -> int:
    """Every capability the kernel knows that this process can still give (its bounding set)."""
    last = min(kernel.cap_last_cap(), len(CAP_NAMES) - 1)
    mask = 0
    for n in range(last + 1):
        if kernel.prctl(kernel.PR_CAPBSET_READ, n) == 1:
            mask |= 1 << n
    return mask


def normalize(names: list[str], field: str) -> list[str]:
    """docker's NormalizeLegacyCapabilities: upper case, CAP_ prefixed, ALL kept; an unknown
    or unavailable name is docker's one line (field: CapAdd or CapDrop)."""
    have = None
    out = []
    for name in names:
        c = name.upper()
        if c != "ALL":
            c = c if c.startswith("CAP_") else "CAP_" + c
            if c[4:] not in CAP_NAMES:
                raise SandboxError(f'invalid {field}: unknown capability: "{c}"')
            have = available_mask() if have is None else have
            if not have >> CAP_NAMES.index(c[4:]) & 1:
                raise SandboxError(f"invalid {field}: capability not supported by your kernel "
                                   f'or not available in the current environment: "{c}"')
        out.append(c)
    return out


def mask(cap_add: list[str] = (), cap_drop: list[str] = (), privileged: bool = False) -> int:
    """docker's TweakCapabilities as a bit mask: all with privileged; else drop, then add
    (`--cap-add ALL`: all but the dropped; `--cap-drop ALL`: only the added)."""
    if privileged:
        return available_mask()
    if not cap_add and not cap_drop:
        return DEFAULT_CAP_MASK
    drop = normalize(list(cap_drop), "CapDrop")
    add = normalize(list(cap_add), "CapAdd")
    bits = {c: 1 << CAP_NAMES.index(c[4:]) for c in add + drop if c != "ALL"}
    if "ALL" in add:
        return available_mask() & ~sum(bits[c] for c in drop if c != "ALL")
    base = 0 if "ALL" in drop else DEFAULT_CAP_MASK & ~sum(bits[c] for c in drop)
    return base | sum(bits[c] for c in add)


def names(m: int) -> list[str]:
    """The CAP_ names of a mask's bits."""
    return ["CAP_" + n for i, n in enumerate(CAP_NAMES) if m >> i & 1]


def drop_to(keep: int, user) -> None:
    """Become `user` (a runtime.users.ExecUser: groups, gid, uid) with only the capabilities
    of mask `keep`, in runc's order: the bounding set first (that needs CAP_SETPCAP), the
    user switched while every capability is still effective (so --cap-drop SETUID or ALL
    does not stop it), then effective = permitted = keep, inheritable and ambient empty. A
    non-root uid leaves none: the kernel clears them at setuid, as for docker's containers."""
    kernel.drop_bounding(keep, kernel.cap_last_cap())
    kernel.prctl(kernel.PR_CAP_AMBIENT, kernel.PR_CAP_AMBIENT_CLEAR_ALL)
    os.setgroups(user.sgids)
    os.setresgid(user.gid, user.gid, user.gid)
    os.setresuid(user.uid, user.uid, user.uid)
    kernel.capset(keep, keep, 0) if user.uid == 0 else kernel.capset(0, 0, 0)
