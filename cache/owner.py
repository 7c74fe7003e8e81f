"""Which process owns a temporary file or dir, or a lease, and whether that process still runs.

An owner is `pid.start` (the start time in clock ticks since boot, /proc/<pid>/stat field 22):
a pid alone is reused by the kernel, pid + start time names one process for the life of the
machine. Temporary names (`<kind>-<pid>.<start>-<random>`) and the leases (`cache.leases`) carry
it, so prune removes exactly what a dead process left behind and never a live one's.
"""
from __future__ import annotations

import os

_LOWER = frozenset("abcdefghijklmnopqrstuvwxyz")
_mine: tuple[int, str] | None = None


def _stat(pid: int) -> tuple[bytes, int] | None:
    """(state, start time in clock ticks since boot) of a process, or None when there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: count after its last ')'
    fields = stat[stat.rfind(b")") + 2:].split()
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def start_time(pid: int) -> int | None:
    st = _stat(pid)
    return None if st is None else st[1]


def token() -> str:
    """This process as `pid.start` (computed once per process; a fork child gets its own)."""
    global _mine
    pid = os.getpid()
    if _mine is None or _mine[0] != pid:
        _mine = (pid, f"{pid}.{start_time(pid) or 0}")
    return _mine[1]


def alive(tok) -> bool:
    """Whether the process `tok` names still runs. A bare pid (older names) is alive while any
    process has it; a malformed token is dead."""
    pid, _, start = str(tok).partition(".")
    if not pid.isdigit() or int(pid) == 0:
        return False
    st = _stat(int(pid))
    if st is None or st[0] in (b"Z", b"X"):  # a zombie holds nothing: it only waits to be reaped
        return False
    return not start or not start.isdigit() or int(start) == 0 or int(start) == st[1]


def of_name(name: str) -> str | None:
    """The owner token in a temporary name `<kind>-<pid>[.<start>]-...`, or None (checked by
    hand, without `re`: tests/cache/test_atomic.py holds the regex it agrees with)."""
    kind, sep, rest = name.partition("-")
    if not sep or not kind or not _LOWER.issuperset(kind):
        return None
    tok, sep, _ = rest.partition("-")
    pid, dot, start = tok.partition(".")
    if not sep or not pid.isdecimal() or (dot and not start.isdecimal()):
        return None
    return tok


def temp_name(kind: str) -> str:
    """A fresh temporary name owned by this process."""
    return f"{kind}-{token()}-{os.urandom(6).hex()}"


def temp_dir(parent, kind: str) -> str:
    """A fresh empty dir `<parent>/<kind>-<owner>-<random>` (mode 0700) owned by this process:
    put in the store's tmp/, prune removes it once the process is gone."""
    while True:
        path = os.path.join(os.fspath(parent), temp_name(kind))
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        return path
