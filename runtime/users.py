"""Docker's `-u` forms resolved against the container's own /etc/passwd and /etc/group.

This runs inside the sandbox after pivot_root, so it reads the image's files, never the host's
(and never loads NSS modules from the image: plain text parsing only, cf. CVE-2019-14271).
Semantics follow moby/sys/user GetExecUser: `name`, `uid`, `name:group`, `uid:gid`; the empty
string means uid 0; a numeric id needs no entry; supplementary groups come from /etc/group
membership only when no group was given explicitly.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from runtime.errors import SandboxError

MAX_ID = 2**31 - 1


@dataclass
class ExecUser:
    uid: int = 0
    gid: int = 0
    sgids: list[int] = field(default_factory=list)
    home: str = "/"


def parse_table(data: bytes) -> list[list[str]]:
    """The rows of a passwd or group file: colon-separated fields of each line that is neither
    blank nor a `#` comment (moby/sys/user's parser; the one reader of these files, also for
    the builder's --chown). Undecodable bytes survive as surrogates, so no name matches them."""
    rows = []
    for line in data.decode("utf-8", "surrogateescape").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rows.append(line.split(":"))
    return rows


def _read_table(path: str) -> list[list[str]] | None:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    return parse_table(data)


def _numeric(s: str) -> int | None:
    if s.isdigit():
        n = int(s)
        if n > MAX_ID:
            raise SandboxError(f"user or group id {s} is out of range (max {MAX_ID})")
        return n
    return None


def _int(s: str) -> int:
    try:
        return int(s)
    except ValueError:
        return -1


def resolve(spec: str, passwd: str = "/etc/passwd", group: str = "/etc/group") -> ExecUser:
    """Resolve a docker `-u` string; raises SandboxError with docker's wording when unknown."""
    user_part, _, group_part = spec.partition(":")
    has_group = ":" in spec
    out = ExecUser()
    users = _read_table(passwd)
    uid_arg = _numeric(user_part) if user_part else 0
    matched = None
    for row in users or []:
        if len(row) < 4:
            continue
        if (user_part and row[0] == user_part) or (uid_arg is not None and _int(row[2]) == uid_arg):
            matched = row
            break
    if matched is not None:
        out.uid, out.gid = _int(matched[2]), _int(matched[3])
        if len(matched) > 5 and matched[5]:
            out.home = matched[5]
    elif uid_arg is None:
        raise SandboxError(f"unable to find user {user_part}: no matching entries in passwd file")
    else:
        out.uid = uid_arg

    if has_group or matched is not None:
        groups = _read_table(group) or []
        if has_group:
            gid_arg = _numeric(group_part)
            found = next((r for r in groups if len(r) >= 3 and (
                r[0] == group_part or (gid_arg is not None and _int(r[2]) == gid_arg))), None)
            if found is not None:
                out.gid = _int(found[2])
            elif gid_arg is None:
                raise SandboxError(f"unable to find group {group_part}: no matching entries in group file")
            else:
                out.gid = gid_arg
        else:
            name = matched[0]
            out.sgids = [_int(r[2]) for r in groups
                         if len(r) >= 4 and name in r[3].split(",") and _int(r[2]) >= 0]
    if out.uid < 0 or out.gid < 0:
        raise SandboxError(f"user {spec!r} has an invalid uid or gid in the image's passwd/group file")
    return out
