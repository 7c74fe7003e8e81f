"""Docker's `-u` forms resolved against the container's own /etc/passwd and /etc/group.

This runs inside the sandbox after pivot_root, so it reads the image's files, never the host's
(and never loads NSS modules from the image: plain text parsing only, cf. CVE-2019-14271);
`read_table` is the one bounded reader of these files, the builder's --chown uses it too.
Semantics follow moby/sys/user GetExecUser: `name`, `uid`, `name:group`, `uid:gid`; the empty
string means uid 0; a numeric id needs no entry; supplementary groups come from /etc/group
membership only when no group was given explicitly. A container's process (`run`, `exec`:
with_gid) also has its primary gid among them, as docker's getUser sets them (CVE-2022-36109):
`-u app` gives `groups=1000(app),27(sudo)`, `-u 1000:1000` just `groups=1000`; a build's RUN
keeps the memberships only, as BuildKit does (tests/interop: `id` shows no groups=).
"""
from __future__ import annotations

import os

from cache.errors import StoreError
from cache.fspath import open_in_root
from runtime.errors import SandboxError
from runtime.spec import Record

MAX_ID = 2**31 - 1
MAX_TABLE_BYTES = 10 << 20   # a passwd or group file larger than this is not one


class ExecUser(Record):
    _fields = ("uid", "gid", "sgids", "home")

    def __init__(self, uid: int = 0, gid: int = 0, sgids: list[int] | None = None, home: str = "/"):
        self.uid = uid
        self.gid = gid
        self.sgids = [] if sgids is None else sgids    # setgroups(): (the gid,) memberships
        self.home = home


def additional_groups(names: list[str], group: str = "/etc/group") -> list[int]:
    """docker --group-add: each a gid or a group of the container's /etc/group (moby/sys/user
    GetAdditionalGroups, its error line)."""
    rows = None
    out = []
    for name in names:
        gid = _numeric(name)
        if gid is None:
            if rows is None:
                rows = read_table(group) or []
            found = next((r for r in rows if len(r) >= 3 and r[0] == name), None)
            if found is None:
                raise SandboxError(f"Unable to find group {name}: no matching entries in group file")
            gid = _int(found[2])
        if gid not in out:
            out.append(gid)
    return out


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


def read_table(path: str, root: str | os.PathLike = "/") -> list[list[str]] | None:
    """The rows (`parse_table`) of the passwd or group file `path` inside `root`, every symlink
    on the way resolved inside it (`cache.fspath.open_in_root`), or None when there is none.
    The one bounded reader of these files, for `-u`/USER (in the sandbox, root `/`) and for
    --chown (a rootfs on the host): a fifo, device or directory, or a file over 10 MiB, is a
    SandboxError, so an image's /etc/passwd that is a fifo or a link to /dev/zero cannot hang
    the step or fill memory."""
    try:
        with open_in_root(root, path) as f:
            data = f.read(MAX_TABLE_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except IsADirectoryError:
        raise SandboxError(f"the image's {path} is not a regular file") from None
    except StoreError as e:
        raise SandboxError(f"the image's {e}") from None
    except OSError as e:
        raise SandboxError(f"cannot read the image's {path}: {e.strerror}") from None
    if len(data) > MAX_TABLE_BYTES:
        raise SandboxError(f"the image's {path} is larger than {MAX_TABLE_BYTES >> 20} MiB")
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


def resolve(spec: str, passwd: str = "/etc/passwd", group: str = "/etc/group", *,
            with_gid: bool = False) -> ExecUser:
    """Resolve a docker `-u` string; raises SandboxError with docker's wording when unknown.
    with_gid: the primary gid heads the supplementary groups (docker run/exec)."""
    user_part, _, group_part = spec.partition(":")
    has_group = ":" in spec
    out = ExecUser()
    users = read_table(passwd)
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
        groups = read_table(group) or []
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
    if with_gid:
        out.sgids = list(dict.fromkeys([out.gid, *out.sgids]))
    return out
