"""The overlay format of layer dirs, and its OCI tar spelling: the one place these are written.

On disk (overlayfs's own format, so a layer dir stacks directly as a lowerdir): a deleted path
is a 0/0 character device, a directory that hides what is below it carries the xattr
`trusted.overlay.opaque=y`. In a layer tar (OCI image-spec): a deleted NAME is an entry
`.wh.NAME`, an opaque dir gets an entry `.wh..wh..opq`.

Which spelling a store uses is decided by who writes it: as root, `trusted.overlay.*` (overlay
without userxattr, which is how pybuild mounts); without root, where trusted.* can be neither
read nor written, `user.overlay.*` (overlay's userxattr spelling). A process reads and writes
only the spelling of its own mode (`opaque_xattr`): in a root store `user.overlay.opaque` is just
a user's xattr and must never hide anything. Overlay's own xattrs, in both spellings, never come
from user content (`layer_xattr`): a build-context file, a stage's file or an ADDed tar entry
carrying one would otherwise delete the base image's directory.
"""
from __future__ import annotations

import errno
import os
import stat

OPAQUE_XATTR = "trusted.overlay.opaque"
USER_OPAQUE_XATTR = "user.overlay.opaque"
REDIRECT_XATTRS = ("trusted.overlay.redirect", "user.overlay.redirect")
PRIVATE_PREFIXES = ("trusted.overlay.", "user.overlay.")   # overlay's own, both spellings

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


def opaque_xattr() -> str:
    """The opaque marker's name in this process's layer dirs (see the module doc)."""
    return OPAQUE_XATTR if os.geteuid() == 0 else USER_OPAQUE_XATTR


def is_opaque(path) -> bool:
    """Does the directory `path` (a path or an fd) carry overlay's opaque marker?"""
    try:
        return os.getxattr(path, opaque_xattr(), **_nofollow(path)) == b"y"
    except OSError:
        return False


def set_opaque(path) -> None:
    """Mark the directory `path` (a path or an fd) opaque."""
    os.setxattr(path, opaque_xattr(), b"y", **_nofollow(path))


def clear_opaque(path) -> None:
    """Remove the opaque marker."""
    try:
        os.removexattr(path, opaque_xattr(), **_nofollow(path))
    except OSError as e:
        if e.errno != errno.ENODATA:
            raise


def private_xattr(name: str) -> bool:
    """Is the xattr `name` overlay's own (either spelling)? Never shown through a mount,
    never copied from user content."""
    return name.startswith(PRIVATE_PREFIXES)


def layer_xattr(name: str) -> bool:
    """Is the xattr `name` part of a layer's content? (file capabilities and user.*, never
    overlay's own.) The one rule for what is written to a layer tar and for what COPY, ADD
    and layer extraction take from user content into a layer dir."""
    return name == "security.capability" or (name.startswith("user.") and not private_xattr(name))


def key_xattrs(path) -> tuple[str, str]:
    """(the file capability as hex, the other layer xattrs as `name=hex;...` sorted), "" for
    none: what of a source file's xattrs a COPY's cache key and a replay's touch check see,
    the ones `layer_xattr` lets into a layer. One listxattr when there are none."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return "", ""
    cap, others = "", []
    for name in sorted(names):
        if not layer_xattr(name):
            continue
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
        if name == "security.capability":
            cap = value.hex()
        else:
            others.append(f"{name}={value.hex()}")
    return cap, ";".join(others)


def _join(a, b):
    return a + (b"/" if isinstance(a, bytes) else "/") + b


def dir_layers(layers, rel) -> list:
    """The layer dirs (of `layers`, topmost first) whose directory `rel` overlay merges into the
    directory `rel` of their merged view, topmost first; [] when rel is no directory there. Each
    component is looked up as overlay does: the topmost layer holding it decides (a whiteout
    deletes, a non-directory hides everything below), and below a directory the merge goes on
    until a layer where it is not a directory, or where it is opaque. A layer dir's own root is
    always merged (overlay ignores an opaque marker there). `rel`: str or bytes, `/`-separated."""
    below = [os.fspath(d) for d in layers]
    sep = b"/" if isinstance(rel, bytes) else "/"
    path = None
    for name in (c for c in rel.split(sep) if c):
        path = name if path is None else _join(path, name)
        below = _step(below, path)[1]
        if not below:
            return []
    return below


def lookup(layers, rel) -> os.stat_result | None:
    """What `rel` is in the merged view of overlay-format layer dirs (topmost first): the lstat
    of the entry overlay shows, or None when no layer has it or it is deleted (a whiteout, or
    hidden by an opaque dir or a non-directory on the way). See `dir_layers`."""
    sep = b"/" if isinstance(rel, bytes) else "/"
    parent, _, name = rel.strip(sep).rpartition(sep)
    if not name:
        return None
    return _step(dir_layers(layers, parent), _join(parent, name) if parent else name)[0]


def _step(layers: list, path) -> tuple[os.stat_result | None, list]:
    """Look up `path` in `layers` (those merged into its parent dir, topmost first): what overlay
    shows there, and the layers merged into it when it is a directory."""
    top, merged = None, []
    for layer in layers:
        p = _join(layer, path)
        try:
            st = os.lstat(p)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if top is None:
            if is_whiteout(st):
                return None, []
            top = st
        if not stat.S_ISDIR(st.st_mode) or not stat.S_ISDIR(top.st_mode):
            break
        merged.append(layer)
        if is_opaque(p):
            break
    return top, merged
