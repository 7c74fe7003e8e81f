"""The overlay format of layer dirs, and its OCI tar spelling: the one place these are written.

On disk (overlayfs's own format, so a layer dir stacks directly as a lowerdir): a deleted path
is a 0/0 character device, a directory that hides what is below it carries the xattr
`trusted.overlay.opaque=y` (`user.overlay.opaque` where overlay runs with userxattr, i.e.
without root). In a layer tar (OCI image-spec): a deleted NAME is an entry `.wh.NAME`, an
opaque dir gets an entry `.wh..wh..opq`. Overlay's other private xattrs (redirect, origin,
...) never belong in a layer.
"""
from __future__ import annotations

import errno
import os
import stat

OPAQUE_XATTR = "trusted.overlay.opaque"
USER_OPAQUE_XATTR = "user.overlay.opaque"
OPAQUE_XATTRS = (OPAQUE_XATTR, USER_OPAQUE_XATTR)
REDIRECT_XATTRS = ("trusted.overlay.redirect", "user.overlay.redirect")
PRIVATE_PREFIXES = ("trusted.overlay.", "user.overlay.")

WH_PREFIX = ".wh."
WH_OPAQUE = ".wh..wh..opq"


def is_whiteout(st: os.stat_result) -> bool:
    """Is this lstat() an overlay whiteout (a 0/0 character device)?"""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def make_whiteout(name, *, dir_fd: int | None = None) -> None:
    """Record `name` as deleted, as overlayfs does (a 0/0 char device of mode 0000); raises
    PermissionError where the filesystem refuses device nodes."""
    os.mknod(name, stat.S_IFCHR, 0, dir_fd=dir_fd)


def _nofollow(path) -> dict:
    return {} if isinstance(path, int) else {"follow_symlinks": False}


def is_opaque(path) -> bool:
    """Does the directory `path` (a path or an fd) carry overlay's opaque marker?"""
    for n in OPAQUE_XATTRS:
        try:
            if os.getxattr(path, n, **_nofollow(path)) == b"y":
                return True
        except OSError:
            pass
    return False


def set_opaque(path, *, user: bool = False) -> None:
    """Mark the directory `path` (a path or an fd) opaque; `user`: the userxattr spelling."""
    os.setxattr(path, USER_OPAQUE_XATTR if user else OPAQUE_XATTR, b"y", **_nofollow(path))


def clear_opaque(path) -> None:
    """Remove the opaque marker, in whichever spelling it has."""
    for n in OPAQUE_XATTRS:
        try:
            os.removexattr(path, n, **_nofollow(path))
        except OSError as e:
            if e.errno != errno.ENODATA:
                raise


def layer_xattr(name: str) -> bool:
    """Is the xattr `name` part of a layer's content? (file capabilities and user.*, never
    overlay's own, as BuildKit keeps them)"""
    return name == "security.capability" or (
        name.startswith("user.") and not name.startswith(PRIVATE_PREFIXES))
