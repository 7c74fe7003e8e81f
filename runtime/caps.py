"""Docker's (and containerd's, BuildKit's) default capability set, and dropping to it.

The command runs as root in its namespaces but with only these 14 capabilities: everything else
leaves the bounding set (so no setuid binary or file capability can bring it back), the ambient
set is cleared, and effective = permitted = the 14. For a non-root user the kernel clears the
effective and permitted sets at setuid, as it does for docker's containers.
"""
from __future__ import annotations

from runtime import kernel

DEFAULT_CAPS = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_FOWNER": 3, "CAP_FSETID": 4, "CAP_KILL": 5,
    "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8, "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_RAW": 13, "CAP_SYS_CHROOT": 18, "CAP_MKNOD": 27, "CAP_AUDIT_WRITE": 29,
    "CAP_SETFCAP": 31,
}
DEFAULT_CAP_MASK = sum(1 << n for n in DEFAULT_CAPS.values())  # 0x00000000a80425fb


def drop_to_default() -> None:
    """Keep only DEFAULT_CAPS in this thread's bounding, ambient, effective and permitted sets
    (call before dropping to the user: removing from the bounding set needs CAP_SETPCAP)."""
    kernel.drop_bounding(DEFAULT_CAP_MASK, kernel.cap_last_cap())
    kernel.prctl(kernel.PR_CAP_AMBIENT, kernel.PR_CAP_AMBIENT_CLEAR_ALL)
    kernel.capset(DEFAULT_CAP_MASK, DEFAULT_CAP_MASK, 0)
