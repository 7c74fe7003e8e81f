"""`stats`: what a running container uses, read as docker's daemon reads it, without one.

Every container has its own cgroup (runtime.cgroups makes one even without limits), found from
its pid 1's /proc/<pid>/cgroup (`cgroups.of_pid`), v1 (one dir per controller) or v2 (one dir):
CPU time (cpuacct.usage | cpu.stat usage_usec) against the host's (/proc/stat, docker's
system_cpu_usage), memory (usage minus inactive file pages, as the docker CLI shows; the limit,
or the host's memory when there is none), block I/O (blkio.throttle.io_service_bytes | io.stat)
and pids (pids.current); network bytes from /proc/<pid>/net/dev when the container has a
network namespace of its own (docker shows none for --network host).
CPU % needs two samples: `measure` takes them INTERVAL apart, as docker's stream does.
"""
from __future__ import annotations

import os
import time

from runtime import cgroups

INTERVAL = 0.5      # seconds between the two samples of a CPU %
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _int(path: str) -> int:
    try:
        return int(_read(path).split()[0])
    except (ValueError, IndexError):
        return 0


def _kv(path: str) -> dict[str, int]:
    out = {}
    for line in _read(path).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def _system_ns() -> int:
    """docker's system_cpu_usage: the host's total CPU time (all cpus, all states) in ns."""
    for line in _read("/proc/stat").splitlines():
        if line.startswith("cpu "):
            return sum(int(x) for x in line.split()[1:9]) * 10**9 // _CLK_TCK   # to steal
    return 0


def _mem_total() -> int:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return 0


def _net(pid: int) -> tuple[int, int]:
    """(rx, tx) bytes of the container's own network namespace, loopback left out."""
    try:
        if os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino:
            return 0, 0
    except OSError:
        return 0, 0
    rx = tx = 0
    for line in _read(f"/proc/{pid}/net/dev").splitlines()[2:]:
        name, _, rest = line.partition(":")
        f = rest.split()
        if name.strip() != "lo" and len(f) >= 9:
            rx, tx = rx + int(f[0]), tx + int(f[8])
    return rx, tx


def _blkio(ver: int, dirs: dict) -> tuple[int, int]:
    read = write = 0
    if ver == 1:
        path = dirs.get("blkio")
        text = _read(os.path.join(path, "blkio.throttle.io_service_bytes")) if path else ""
        for line in text.splitlines():
            f = line.split()
            if len(f) == 3 and f[1] == "Read":
                read += int(f[2])
            elif len(f) == 3 and f[1] == "Write":
                write += int(f[2])
    else:
        for line in _read(os.path.join(dirs[""], "io.stat")).splitlines():
            for field in line.split()[1:]:
                k, _, v = field.partition("=")
                if k == "rbytes":
                    read += int(v)
                elif k == "wbytes":
                    write += int(v)
    return read, write


def sample(pid: int) -> dict:
    """One reading of the container whose pid 1 is `pid` (host pid)."""
    ver, dirs = cgroups.of_pid(pid)
    if ver == 1:
        cpu = _int(os.path.join(dirs.get("cpuacct", "/nonexistent"), "cpuacct.usage"))
        mdir = dirs.get("memory", "/nonexistent")
        mstat = _kv(os.path.join(mdir, "memory.stat"))
        usage = _int(os.path.join(mdir, "memory.usage_in_bytes"))
        usage -= min(usage, mstat.get("total_inactive_file", 0))
        limit = _int(os.path.join(mdir, "memory.limit_in_bytes"))
        pids = _int(os.path.join(dirs.get("pids", "/nonexistent"), "pids.current"))
    else:
        d = dirs[""]
        cpu = _kv(os.path.join(d, "cpu.stat")).get("usage_usec", 0) * 1000
        mstat = _kv(os.path.join(d, "memory.stat"))
        usage = _int(os.path.join(d, "memory.current"))
        usage -= min(usage, mstat.get("inactive_file", 0))
        raw = _read(os.path.join(d, "memory.max")).strip()
        limit = int(raw) if raw.isdigit() else 0
        pids = _int(os.path.join(d, "pids.current"))
    host = _mem_total()
    if not limit or limit > host:
        limit = host
    rx, tx = _net(pid)
    br, bw = _blkio(ver, dirs)
    return {"cpu": cpu, "system": _system_ns(), "cpus": os.cpu_count() or 1, "mem": usage,
            "limit": limit, "rx": rx, "tx": tx, "blk_read": br, "blk_write": bw, "pids": pids}


def cpu_percent(before: dict, after: dict) -> float:
    """docker's calculateCPUPercentUnix."""
    cpu = after["cpu"] - before["cpu"]
    system = after["system"] - before["system"]
    if cpu > 0 and system > 0:
        return cpu / system * after["cpus"] * 100.0
    return 0.0


def measure(pids: list[int], before: list[dict | None] | None = None,
            interval: float = INTERVAL) -> list[dict | None]:
    """A reading per pid (None for 0 or one gone) with its `cpu_percent` over `interval`, or
    since `before` (the previous readings, for a stream)."""
    def take(pid):
        if not pid:
            return None
        try:
            return sample(pid)
        except OSError:
            return None
    if before is None:
        before = [take(p) for p in pids]
        time.sleep(interval)
    out = []
    for pid, b in zip(pids, before, strict=True):
        a = take(pid)
        if a is not None:
            a["cpu_percent"] = cpu_percent(b, a) if b is not None else 0.0
        out.append(a)
    return out
