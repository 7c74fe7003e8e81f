"""Address leases on the bridge, host-global and safe between pybuild processes.

State lives in /run/pybuild/network/ (tmpfs: gone at reboot with the bridge it describes):
`lock` (flocked around every change), `bridge.json` (the subnet pybuild0 has), `leases/<ip>`
(the cache.owner token of the process holding the address: the supervisor or the foreground
`pybuild run`). A lease whose holder is dead (kill -9) is reclaimed at the next acquire or
sweep; `released` (the last release's holder and time) and `sweep.lock` (held by the one sweep
waiting). LINGER seconds after the last release (once its process has ended: not during a
restart backoff), or at a sweep after a kill -9, the bridge and its rules go, so nothing stays
on the host once no container uses the network.

A user-defined network (runtime.network.Net, `net` below) has the same files in its own state
dir; its lease files also carry the endpoint once it joined (plain lines: the names peers
resolve it by, the network's name and whether it is --internal): the registry each container's
embedded DNS server (runtime.network.dns) answers from.
"""
from __future__ import annotations

import fcntl
import os
import struct

from cache import owner
from runtime.network import DEFAULT, WAITER, Net


class Lease:
    """One container's address (plain data, so it pickles into a supervisor's monitor)."""

    def __init__(self, ip: str, subnet: str, token: str, gateway: str = "", net: Net = DEFAULT):
        network, prefix = _subnet(subnet)
        self.ip, self.subnet, self.token, self.net = ip, subnet, token, net
        self.prefix = prefix
        self.gateway = gateway or _ip(network + 1)
        self.broadcast = _ip(network | (0xFFFFFFFF >> prefix))
        b = struct.pack("!I", _int(ip))
        self.mac = "02:42:" + ":".join(f"{x:02x}" for x in b)    # docker's: from the IP


def _subnet(text: str) -> tuple[int, int]:
    """"172.17.0.0/16" -> (network address as an int, prefix length); bridge.json's subnets
    are ours (bridge.choose_subnet), so no more than this is needed (ipaddress costs ~3 ms)."""
    addr, _, prefix = text.partition("/")
    return _int(addr), int(prefix)


def _int(ip: str) -> int:
    """A dotted quad as an int (the module stays free of socket, which a sweep from a
    `--network none` run would otherwise import: enum, selectors)."""
    a, b, c, d = (int(x) for x in ip.split("."))
    return a << 24 | b << 16 | c << 8 | d


def _ip(n: int) -> str:
    return f"{n >> 24 & 255}.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


class locked:
    """The state dir's flock, held for a `with` block (a class: contextlib costs an import)."""

    def __init__(self, net: Net = DEFAULT, make: bool = True):
        self.net, self.make = net, make

    def __enter__(self):
        if self.make:   # a sweep does not make it again (`network rm` removed it: nothing to do)
            os.makedirs(os.path.join(self.net.state_dir, "leases"), 0o755, exist_ok=True)
        self.fd = os.open(os.path.join(self.net.state_dir, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                          0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(self.fd)
            raise
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)


def _live(net: Net = DEFAULT) -> dict[str, str]:
    """ip -> holder of every live lease; a dead holder's lease file is removed (under the lock)."""
    d = os.path.join(net.state_dir, "leases")
    out = {}
    for ip in os.listdir(d):
        path = os.path.join(d, ip)
        try:
            with open(path) as f:
                tok = f.readline().strip()
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


def acquire(net: Net = DEFAULT, want: str = "") -> Lease:
    """Lease the lowest free address of the network's subnet (`want`: that one, docker's
    --ip), making the bridge when it is the first, for this process."""
    from runtime.network import ready_subnet

    tok = owner.token()
    with locked(net):
        live = _live(net)
        subnet = ready_subnet(net.state_dir, net.bridge)
        if subnet is None:
            from runtime.network import bridge
            subnet = bridge.ensure(net)
        network, prefix = _subnet(subnet)
        gateway = net.gateway or _ip(network + 1)
        if want:
            from runtime.errors import SandboxError
            if want in live:
                raise SandboxError("Address already in use")
            if want == gateway or not network < _int(want) < network | (0xFFFFFFFF >> prefix):
                raise SandboxError(f"no configured subnet or ip-range contain the IP address "
                                   f"{want}")
            ip = want
        else:
            for n in range(network + 1, network | (0xFFFFFFFF >> prefix)):
                ip = _ip(n)
                if ip not in live and ip != gateway:
                    break
            else:
                from runtime.errors import SandboxError
                raise SandboxError(f"no free address left in the network's subnet {subnet}")
        path = os.path.join(net.state_dir, "leases", ip)
        with open(path + ".tmp", "w") as f:
            f.write(tok + "\n")
        os.rename(path + ".tmp", path)
    return Lease(ip, subnet, tok, gateway, net)


def join(lease: Lease, names: list[str]) -> None:
    """A user network's endpoint joins: its names, the network's name and --internal flag go
    into its lease file (plain lines after the token: no json import on the run's path), where
    the DNS servers of the containers on the network find it."""
    net = lease.net
    names = [n for n in names if n and not any(c.isspace() for c in n)]
    with locked(net):
        path = os.path.join(net.state_dir, "leases", lease.ip)
        with open(path + ".tmp", "w") as f:
            f.write(f"{lease.token}\n{' '.join(names)}\n{net.name}\n{int(net.internal)}\n")
        os.rename(path + ".tmp", path)


def endpoints(net: Net, live=None) -> dict[str, dict]:
    """ip -> the endpoint a lease file carries ({} for a lease not joined yet); `live`: the
    addresses to read (default: the live leases, dead ones reclaimed under the lock)."""
    out = {}
    for ip in (live if live is not None else held(net)):
        e = _endpoint(os.path.join(net.state_dir, "leases", ip))
        if e is not None:
            out[ip] = e
    return out


def _endpoint(path: str) -> dict | None:
    """{token, names, network, internal} of a lease file, {} before its join, None if gone."""
    try:
        with open(path) as f:
            tok, names, network, internal = (f.readline() for _ in range(4))
    except OSError:
        return None
    if not network:
        return {}
    return {"token": tok.strip(), "names": names.split(), "network": network.strip(),
            "internal": internal.strip() == "1"}


LINGER = 5.0            # s the bridge stays after its last container ended (default)
RESTART_GRACE = 65.0    # s: above the restart policy's longest backoff (60 s)
_STAMP = "released"     # the last release: its holder's token; its mtime says when


def release(lease: Lease) -> None:
    """Give the address back. The last one out leaves the bridge to a detached `sweep`, which
    removes it and its NAT rules once no container has used it for `linger_seconds()` (and the
    releaser has ended: a supervisor in its restart backoff leases again), so a loop of
    `run --rm` reuses one bridge (rebuilding it costs ~90 ms) and nothing waits for the
    50-80 ms a link and nft deletion take. One waiting sweep at a time: the lock orders it with
    every acquire and release."""
    net = getattr(lease, "net", DEFAULT)
    with locked(net):
        path = os.path.join(net.state_dir, "leases", lease.ip)
        try:
            with open(path) as f:
                mine = f.readline().strip() == lease.token
            if mine:
                os.unlink(path)
        except FileNotFoundError:
            pass
        if _live(net):
            return
        stamp = os.path.join(net.state_dir, _STAMP)
        with open(stamp + ".tmp", "w") as f:
            f.write(lease.token + "\n")
        os.rename(stamp + ".tmp", stamp)
        if _waiter_busy(net):
            return                      # the waiting sweep sees the new stamp
    _spawn_sweep(net)


def _take_waiter(net: Net = DEFAULT) -> int | None:
    """The waiting sweep's flock, taken (its fd) or None when a sweep already holds it."""
    fd = os.open(os.path.join(net.state_dir, WAITER), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _waiter_busy(net: Net = DEFAULT) -> bool:
    fd = _take_waiter(net)
    if fd is None:
        return True
    os.close(fd)
    return False


def _spawn_sweep(net: Net = DEFAULT) -> None:
    """`sweep(linger=True)` in a `python -I -S` of its own session, stdio on /dev/null and every
    other inherited fd closed first (a caller's `3>file` must not stay open for seconds); by
    posix_spawn, since importing subprocess would cost the ending run ~5 ms."""
    import sys

    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = (f"import os, sys; os.closerange(3, 1 << 20); os.chdir('/'); sys.path.insert(0, {here!r}); "
            "from runtime.network import Net; from runtime.network.leases import sweep; "
            f"sweep(Net({net.state_dir!r}, {net.bridge!r}, id={net.id!r}), linger=True)")
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        os.posix_spawn(sys.executable, [sys.executable, "-I", "-S", "-c", code], os.environ,
                       file_actions=[(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, null, 1),
                                     (os.POSIX_SPAWN_DUP2, null, 2)], setsid=True)
    except OSError:         # no process to wait in (a process limit): remove it now, unused
        with locked(net):
            if not _live(net):
                _teardown(net)
    finally:
        os.close(null)


def _due(net: Net = DEFAULT) -> float:
    """Seconds until an unused bridge may go: 0 with no release on record (a holder killed
    with -9 never released), else LINGER after the last release, and not while its releaser
    lives (up to RESTART_GRACE)."""
    import time

    stamp = os.path.join(net.state_dir, _STAMP)
    try:
        with open(stamp) as f:
            tok = f.read().strip()
        age = time.time() - os.stat(stamp).st_mtime
    except OSError:
        return 0.0
    if age < RESTART_GRACE and owner.alive(tok):
        return 0.05
    return max(0.0, linger_seconds() - age)


def linger_seconds() -> float:
    """$PYBUILD_BRIDGE_LINGER (seconds, 0: at once), else LINGER."""
    try:
        return max(0.0, float(os.environ.get("PYBUILD_BRIDGE_LINGER", LINGER)))
    except ValueError:
        return LINGER


def sweep(net: Net = DEFAULT, linger: bool = False) -> None:
    """Reclaim dead holders' leases and, when none is left and the last release is LINGER
    seconds old, remove the bridge (`run` off the bridge and `rm` call it: after a kill -9
    nothing else would). `linger` (release's detached sweep): wait for that moment, unless a
    container leases again first, whose own release then starts the wait anew."""
    if not os.path.isdir(net.state_dir):
        return
    if not linger:
        lock = _existing(net)
        if lock is None:
            return
        try:
            if _live(net):
                return
            if _due(net) <= 0:
                _teardown(net)
                return
            if _waiter_busy(net):
                return
        finally:
            lock.__exit__()
        _spawn_sweep(net)               # not yet, and no one waits (the waiter was killed)
        return
    import time

    fd = _take_waiter(net)
    if fd is None:
        return                          # another sweep already waits
    while True:
        lock = _existing(net)
        if lock is None:                # `network rm` removed the network meanwhile
            os.close(fd)
            return
        try:
            due = 0.0 if _live(net) else _due(net)
            if due <= 0:
                if not _live(net):
                    _teardown(net)
                os.close(fd)            # under the lock: a release then sees no waiter
                return
        finally:
            lock.__exit__()
        time.sleep(min(due, 0.5))


def _existing(net: Net):
    """net's lock, held, unless its state dir is gone (`network rm` removes it under that lock:
    a sweep must not make it again), then None."""
    lock = locked(net, make=False)
    try:
        lock.__enter__()
    except FileNotFoundError:
        return None
    if not os.path.isdir(os.path.join(net.state_dir, "leases")):
        lock.__exit__()
        return None
    return lock


def held(net: Net = DEFAULT) -> dict[str, str]:
    """ip -> holder token of the live leases (reclaiming dead ones)."""
    with locked(net):
        return _live(net)


def _teardown(net: Net = DEFAULT) -> None:
    from runtime.network import bridge

    bridge.teardown(net)
    try:
        os.unlink(os.path.join(net.state_dir, _STAMP))
    except FileNotFoundError:
        pass
