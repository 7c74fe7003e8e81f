"""docker's --ulimit NAME=SOFT[:HARD] (go-units ParseUlimit) for run, create and build, and
applying them to a container's command (setrlimit before its capabilities are dropped, as
runc's init does). A hard limit above the caller's own needs CAP_SYS_RESOURCE: without it
the run fails with one line. The record keeps docker's HostConfig.Ulimits shape."""
from __future__ import annotations

from runtime.errors import ConfigError

# go-units' names and Linux's RLIMIT_* numbers (resource is imported only to apply them)
NAMES = {"cpu": 0, "fsize": 1, "data": 2, "stack": 3, "core": 4, "rss": 5, "nproc": 6,
         "nofile": 7, "memlock": 8, "as": 9, "locks": 10, "sigpending": 11, "msgqueue": 12,
         "nice": 13, "rtprio": 14, "rttime": 15}


def parse(value: str) -> dict:
    """`nofile=1024:2048` -> {"Name": "nofile", "Soft": 1024, "Hard": 2048} (hard = soft when
    one value is given); go-units' error lines."""
    name, eq, limits = value.partition("=")
    if not eq:
        raise ConfigError(f"invalid ulimit argument: {value}")
    if name not in NAMES:
        raise ConfigError(f"invalid ulimit type: {name}")
    soft_s, colon, hard_s = limits.partition(":")
    try:
        soft = int(soft_s)
    except ValueError:
        raise ConfigError(f"invalid ulimit soft value {soft_s}") from None
    try:
        hard = int(hard_s) if colon else soft
    except ValueError:
        raise ConfigError(f"invalid ulimit hard value {hard_s}") from None
    if soft > hard:
        raise ConfigError(f"ulimit soft limit must be less than or equal to hard limit: "
                          f"{soft} > {hard}")
    return {"Name": name, "Soft": soft, "Hard": hard}


def parse_all(values: list[str]) -> list[dict]:
    """Every --ulimit, a later one of a name replacing an earlier (docker's map)."""
    out: dict[str, dict] = {}
    for v in values:
        u = parse(v)
        out[u["Name"]] = u
    return list(out.values())


def load() -> None:
    """Import what `apply` needs, in the host's mount namespace: it runs in pid 1 after
    pivot_root, where the host's stdlib cannot be found."""
    import resource  # noqa: F401

    from runtime import errors  # noqa: F401


def apply(ulimits: list[dict]) -> None:
    """setrlimit each; -1 is unlimited. A refusal is one SandboxError line."""
    import resource

    from runtime.errors import SandboxError

    for u in ulimits:
        soft, hard = (resource.RLIM_INFINITY if x < 0 else x for x in (u["Soft"], u["Hard"]))
        try:
            resource.setrlimit(NAMES[u["Name"]], (soft, hard))
        except (OSError, ValueError) as e:
            raise SandboxError(f"setrlimit {u['Name']}={u['Soft']}:{u['Hard']}: "
                               f"{getattr(e, 'strerror', None) or e} (a hard limit above pybuild's "
                               "own needs CAP_SYS_RESOURCE)") from None
