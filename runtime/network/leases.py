"""Address leases on the bridge, host-global and safe between pybuild processes.

State lives in /run/pybuild/network/ (tmpfs: gone at reboot with the bridge it describes):
`lock` (flocked around every change), `bridge.json` (the subnet pybuild0 has), `leases/<ip>`
(the cache.owner token of the process holding the address: the supervisor or the foreground
`pybuild run`). A lease whose holder is dead (kill -9) is reclaimed at the next acquire or
sweep; the last release (once its process has ended: not during a restart backoff) or a sweep
that finds no live lease removes the bridge and its rules, so nothing stays on the host once no
container uses the network.
"""
from __future__ import annotations

import fcntl
import ipaddress
import os
from contextlib import contextmanager

from cache import owner
from runtime.network import STATE_DIR


class Lease:
    """One container's address (plain data, so it pickles into a supervisor's monitor)."""

    def __init__(self, ip: str, subnet: str, token: str):
        net = ipaddress.IPv4Network(subnet)
        self.ip, self.subnet, self.token = ip, subnet, token
        self.prefix = net.prefixlen
        self.gateway = str(net.network_address + 1)
        self.broadcast = str(net.broadcast_address)
        b = ipaddress.IPv4Address(ip).packed
        self.mac = "02:42:" + ":".join(f"{x:02x}" for x in b)    # docker's: from the IP


@contextmanager
def locked():
    os.makedirs(os.path.join(STATE_DIR, "leases"), 0o755, exist_ok=True)
    fd = os.open(os.path.join(STATE_DIR, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _live() -> dict[str, str]:
    """ip -> holder of every live lease; a dead holder's lease file is removed (under the lock)."""
    d = os.path.join(STATE_DIR, "leases")
    out = {}
    for ip in os.listdir(d):
        path = os.path.join(d, ip)
        try:
            with open(path) as f:
                tok = f.read().strip()
        except OSError:
            continue
        if owner.alive(tok):
            out[ip] = tok
        else:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
    return out


def acquire() -> Lease:
    """Lease the lowest free address of the bridge's subnet (making the bridge when it is the
    first), for this process."""
    from runtime.network import bridge

    tok = owner.token()
    with locked():
        live = _live()
        subnet = bridge.ensure(STATE_DIR)
        net = ipaddress.IPv4Network(subnet)
        first = int(net.network_address) + 2
        for n in range(first, int(net.broadcast_address)):
            ip = str(ipaddress.IPv4Address(n))
            if ip not in live:
                break
        else:
            from runtime.errors import SandboxError
            raise SandboxError(f"no free address left in the bridge's subnet {subnet}")
        path = os.path.join(STATE_DIR, "leases", ip)
        with open(path + ".tmp", "w") as f:
            f.write(tok + "\n")
        os.rename(path + ".tmp", path)
    return Lease(ip, subnet, tok)


def release(lease: Lease) -> None:
    """Give the address back; the last one out has the bridge and its NAT rules removed, by a
    detached `sweep` process (deleting a link and nft rules takes 50-80 ms, which the
    container's command should not wait for; the lock orders it with any acquire)."""
    with locked():
        path = os.path.join(STATE_DIR, "leases", lease.ip)
        try:
            with open(path) as f:
                mine = f.read().strip() == lease.token
            if mine:
                os.unlink(path)
        except FileNotFoundError:
            pass
        if _live():
            return
    import subprocess
    import sys

    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = (f"import sys; sys.path.insert(0, {here!r}); from runtime.network.leases import sweep; "
            f"sweep({lease.token!r})")
    try:
        subprocess.Popen([sys.executable, "-I", "-S", "-c", code], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/",
                         start_new_session=True)
    except OSError:
        sweep()


RESTART_GRACE = 65.0    # s: above the restart policy's longest backoff (60 s)


def sweep(releaser: str | None = None) -> None:
    """Reclaim dead holders' leases and, when none is left, the bridge (after a kill -9).
    With `releaser` (release's background sweep) it first waits, up to RESTART_GRACE, for that
    process to end: a supervisor in its restart backoff is still alive and leases again, so a
    crash loop keeps the bridge instead of rebuilding it each time. One waiter per releaser."""
    if not os.path.isdir(STATE_DIR):
        return
    if releaser:
        import time

        path = os.path.join(STATE_DIR, f"sweep-{releaser}")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return                  # another sweep already waits for this releaser
            end = time.monotonic() + RESTART_GRACE
            while owner.alive(releaser) and time.monotonic() < end:
                time.sleep(0.05)
            os.unlink(path)
        finally:
            os.close(fd)
    with locked():
        _teardown_if_unused()


def held() -> dict[str, str]:
    """ip -> holder token of the live leases (reclaiming dead ones)."""
    with locked():
        return _live()


def _teardown_if_unused() -> None:
    if not _live():
        from runtime.network import bridge
        bridge.teardown(STATE_DIR)
