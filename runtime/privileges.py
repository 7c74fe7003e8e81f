"""Who may build images and run containers: root, for now.

Every layer step and every container mounts (overlayfs or a bind of the native snapshotter's
tree), makes namespaces and sets file owners, so a non-root user fails at the first of those with
a kernel errno that says nothing useful. `require_root` turns that into one line saying what is
needed, and whether user namespaces (which a rootless mode would need) are there at all.
"""
from __future__ import annotations

import os

from runtime.errors import KernelCallError, SandboxError


def require_root() -> None:
    """Raise SandboxError unless the effective uid is 0. Cheap: call it before any write."""
    if os.geteuid() == 0:
        return
    problem = userns_problem()
    msg = f"pybuild needs root to build images and run containers (running as uid {os.geteuid()}): "
    if problem is None:
        msg += "rootless mode (user namespaces) is not supported yet; run pybuild as root, e.g. with sudo"
    else:
        msg += ("run pybuild as root, e.g. with sudo; rootless mode is not supported yet and would "
                f"also need user namespaces, which this user cannot create here ({problem})")
    raise SandboxError(msg)


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def userns_problem() -> str | None:
    """Why this process cannot create a user namespace, or None when it can (tried in a child)."""
    if _read_int("/proc/sys/user/max_user_namespaces") == 0:
        return "sysctl user.max_user_namespaces is 0"
    if _read_int("/proc/sys/kernel/unprivileged_userns_clone") == 0:
        return "sysctl kernel.unprivileged_userns_clone is 0"
    from runtime import kernel

    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            kernel.unshare(kernel.CLONE_NEWUSER)
        except KernelCallError as e:
            code = min(e.errno, 255) or 1
        except BaseException:  # noqa: BLE001 - the child only reports a number
            code = 255
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        return None
    return f"unshare(CLONE_NEWUSER): {os.strerror(code) if 0 < code < 255 else 'failed'}"
