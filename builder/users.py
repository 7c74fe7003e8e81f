"""`--chown=user[:group]` (and WORKDIR's owner) resolved in the image's /etc/passwd and /etc/group.

BuildKit (client/llb/fileop.go WithUser + solver/llbsolver/ops/user_linux.go readUser):
- `root` and decimal numbers are ids without any lookup; `1000` alone means 1000:1000;
- a user name alone takes that user's primary gid from /etc/passwd;
- `user:` (empty group) gives gid 0 - BuildKit's current behaviour (moby/buildkit#3555);
- files are read inside the rootfs as a chroot (a symlinked /etc/passwd stays inside).
BuildKit silently uses 0 for a name it cannot find; pybuild stops with the classic builder's
error instead (strict=True), because a silently root-owned file is a security surprise.
"""

from __future__ import annotations

from pathlib import Path

from builder.errors import BuildError
from runtime.errors import SandboxError
from runtime.users import read_table


def _parse_id(s: str) -> int | None:
    if s == "root":
        return 0
    try:
        v = int(s, 10)
    except ValueError:
        return None
    return v if -(1 << 31) <= v < (1 << 31) else None


def _read_db(rootfs: Path, path: str) -> list[list[str]]:
    try:
        return read_table(path, rootfs) or []
    except SandboxError as e:
        raise BuildError(str(e)) from None


def lookup_user(name: str, rootfs: Path) -> tuple[int, int] | None:
    """(uid, primary gid) of a user name in the rootfs's /etc/passwd, or None."""
    for row in _read_db(rootfs, "/etc/passwd"):
        if len(row) >= 4 and row[0] == name:
            try:
                return int(row[2]), int(row[3])
            except ValueError:
                continue
    return None


def lookup_group(name: str, rootfs: Path) -> int | None:
    """gid of a group name in the rootfs's /etc/group, or None."""
    for row in _read_db(rootfs, "/etc/group"):
        if len(row) >= 3 and row[0] == name:
            try:
                return int(row[2])
            except ValueError:
                continue
    return None


def resolve_chown(spec: str, rootfs: Path, *, strict: bool = True) -> tuple[int, int]:
    """`user[:group]` -> (uid, gid) as BuildKit resolves --chown (see module doc)."""
    user, sep, group = spec.partition(":")
    uid = gid = 0
    uid_n = _parse_id(user)
    if uid_n is not None:
        uid = gid = uid_n
    else:
        found = lookup_user(user, rootfs)
        if found is not None:
            uid, gid = found
        elif strict:
            raise BuildError("unable to convert uid/gid chown string to host mapping: can't "
                             f"find uid for user {user}: no such user: {user}")
    if sep:
        gid_n = _parse_id(group)
        if gid_n is not None:
            gid = gid_n
        elif group == "":
            gid = 0
        else:
            found_g = lookup_group(group, rootfs)
            if found_g is not None:
                gid = found_g
            elif strict:
                raise BuildError("unable to convert uid/gid chown string to host mapping: "
                                 f"can't find gid for group {group}: no such group: {group}")
            else:
                gid = 0
    return uid, gid
