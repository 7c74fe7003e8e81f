"""Paths inside a root directory, resolved as if the root were `/`: the one walk every
security-relevant lookup in a tree we do not trust goes through (layer extraction, COPY/ADD
destinations and sources, `--chown` lookups in an image's /etc, bind-mount sources, OCI layout
dirs).

The walk is by file descriptor, one component at a time: symlinks met on the way are followed
with absolute targets taken from the root (like openat2's RESOLVE_IN_ROOT, or containerd's
RootPath), `..` never climbs above the root, and the final component is followed only when asked.
So no name -- `..`, absolute, a link pointing out, a link laid down earlier -- reaches outside.
(containerd's TestBreakouts is the list: tests/cache/test_extract_breakouts.py.)
"""
from __future__ import annotations

import errno
import os
import stat

from cache.errors import StoreError

MAX_LINKS = 40  # like the kernel's MAXSYMLINKS
# A walk that creates dirs makes none deeper: trees this deep break the tools that remove and
# walk them (Python's shutil.rmtree recurses once per level), and no real image has one.
MAX_DEPTH = 512
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def clean(name: str) -> list[str]:
    """Lexical clean relative to `/` (what filepath.Join("/", name) does): `..` never climbs
    above the root, so a name alone can never leave it. The components of Go's path.Clean on
    a `/` path: the one form for cache/ and runtime/, which may not import grammar.gopath (Go's
    path package in full, relative paths too, for Dockerfile values); tests check they agree."""
    comps: list[str] = []
    for c in name.split("/"):
        if c in ("", "."):
            continue
        if c == "..":
            if comps:
                comps.pop()
            continue
        comps.append(c)
    return comps


def climbs(name: str) -> bool:
    """Does a relative `name` climb above where it starts (go-archive's breakout check)? A
    rooted name never does: its `..` stops at `/`, as filepath.Clean does."""
    if name.startswith("/"):
        return False
    depth = 0
    for c in name.split("/"):
        if c not in ("", "."):
            depth += -1 if c == ".." else 1
            if depth < 0:
                return True
    return False


def clean_abs(name: str) -> str:
    """Go's path.Clean of `name` taken from `/`: `clean` as a path (`/a/b`, `/`)."""
    return "/" + "/".join(clean(name))


class Walked:
    """Where a walk ended: `fd` is the deepest directory reached (the caller closes it),
    `names` its path from the root; `tail` what is left below it -- [] when the path names
    that directory, [name] for a final component that is not a directory (or an unfollowed
    symlink) or does not exist, more when a middle component is missing or not a directory
    (then taken literally, lexically cleaned)."""

    __slots__ = ("fd", "names", "tail", "missing")

    def __init__(self, fd: int, names: list[str], tail: list[str], missing: bool):
        self.fd = fd
        self.names = names
        self.tail = tail
        self.missing = missing  # the tail does not exist (as opposed to: ends at a non-directory)

    def __repr__(self) -> str:
        return f"Walked(fd={self.fd}, names={self.names!r}, tail={self.tail!r}, missing={self.missing})"


def walk(root_fd: int, path: str | list[str], *, create: bool = False, follow_final: bool = True,
         visible=None, observe=None, base: str = "", what: str | None = None,
         mode: int | None = None, owner: tuple[int, int] | None = None) -> Walked:
    """Resolve `path` under the directory `root_fd` (see the module doc).

    `create`: make missing directories on the way (0755, or `mode` and `owner` set on each new
    one), and refuse a non-directory there.
    `visible(rel, st)`: False hides an entry (treated as missing; the build context's ignored
    files). `observe(path, st)`: told of every entry looked at, as `base/rel` (builder.replay).
    `what` names the path in errors (default: the path)."""
    pending = list(path) if isinstance(path, list) else path.split("/")
    what = what if what is not None else "/" + "/".join(clean("/".join(pending)))
    fds, names = [os.dup(root_fd)], []
    hops = 0
    try:
        while pending:
            c = pending.pop(0)
            if c in ("", "."):
                continue
            if c == "..":
                if names:
                    os.close(fds.pop())
                    names.pop()
                continue
            cur = fds[-1]
            try:
                st = os.stat(c, dir_fd=cur, follow_symlinks=False)
            except FileNotFoundError:
                st = None
            if st is not None:
                if observe is not None:
                    observe(base + "/" + "/".join([*names, c]), st)
                if visible is not None and not visible("/".join([*names, c]), st):
                    st = None
            made = False
            if st is None and create:
                if len(names) >= MAX_DEPTH:
                    raise StoreError(f"{what}: path too deep (more than {MAX_DEPTH} levels)")
                os.mkdir(c, 0o755 if mode is None else 0o700, dir_fd=cur)
                st = os.stat(c, dir_fd=cur, follow_symlinks=False)
                made = True
            if st is None:
                tail = [c]  # missing: `missing/..` cancels out, as containerd's RootPath does
                while pending and tail:
                    p = pending.pop(0)
                    if p == "..":
                        tail.pop()
                    elif p not in ("", "."):
                        tail.append(p)
                if tail:
                    return Walked(fds.pop(), names, tail, True)
                continue
            if stat.S_ISLNK(st.st_mode) and (pending or follow_final):
                hops += 1
                if hops > MAX_LINKS:
                    raise StoreError(f"{what}: too many levels of symbolic links")
                target = os.readlink(c, dir_fd=cur)
                if target.startswith("/"):
                    for fd in fds[1:]:
                        os.close(fd)
                    del fds[1:], names[:]
                pending[:0] = target.split("/")
                continue
            if stat.S_ISDIR(st.st_mode):
                fds.append(os.open(c, DIR_FLAGS, dir_fd=cur))
                names.append(c)
                if made and owner is not None:
                    os.fchown(fds[-1], *owner)
                if made and mode is not None:
                    os.fchmod(fds[-1], mode)
                continue
            if create and pending:
                raise StoreError(f"{what}: a parent is not a directory")
            return Walked(fds.pop(), names, [c, *(p for p in pending if p not in ("", "."))], False)
        return Walked(fds.pop(), names, [], False)
    finally:
        for fd in fds:
            os.close(fd)


def open_dir(root_fd: int, path: str | list[str], *, create: bool = False,
             what: str | None = None, mode: int | None = None,
             owner: tuple[int, int] | None = None) -> int | None:
    """An fd of the directory `path` names inside the root (symlinks followed in-root), or
    None when it does not exist (or is not a directory); `create` makes missing ones (with
    `mode` and `owner`, see walk)."""
    w = walk(root_fd, path, create=create, what=what, mode=mode, owner=owner)
    if w.tail:
        os.close(w.fd)
        if create:
            raise StoreError(f"{what or path}: a parent is not a directory")
        return None
    return w.fd


def resolve(root, path: str, *, follow_final: bool = True, visible=None, observe=None) -> str:
    """The host path that `path` names inside `root` (symlinks followed in-root, the final one
    only when `follow_final`); components that do not exist are kept literally. For code that
    must hand a path to another API; anything that can open by fd should use open_in_root."""
    root = os.fspath(root).rstrip("/") or "/"
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        w = walk(fd, path, follow_final=follow_final, visible=visible, observe=observe,
                 base=root.rstrip("/"))
    finally:
        os.close(fd)
    os.close(w.fd)
    rel = "/".join(w.names + w.tail)
    return root.rstrip("/") + "/" + rel if rel else root


def open_in_root(root, path: str, mode: str = "rb"):
    """Open the regular file `path` names inside `root` for reading, every symlink on the way
    (the final one included) resolved inside the root. Raises FileNotFoundError,
    NotADirectoryError, IsADirectoryError like open(), StoreError for a fifo, device or socket."""
    rfd = os.open(os.fspath(root), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        w = walk(rfd, path)
    finally:
        os.close(rfd)
    try:
        if not w.tail:
            raise IsADirectoryError(f"{path}: is a directory")
        if len(w.tail) > 1:
            raise (FileNotFoundError if w.missing else NotADirectoryError)(path)
        if w.missing:
            raise FileNotFoundError(path)
        fd = os.open(w.tail[0], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=w.fd)
    finally:
        os.close(w.fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise StoreError(f"{path} is not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, mode)


FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def open_file(name, st=None, *, dir_fd: int | None = None) -> int:
    """A read fd of the regular file `name` (relative to `dir_fd`) that a walk's lstat `st`
    found there, for a tree something else may change meanwhile (a context, a container's
    upper dir): no link followed, no FIFO waited on (O_NONBLOCK), and the opened inode must
    be a regular file and, with `st`, that same inode. Else OSError(ESTALE): it changed."""
    fd = os.open(name, FILE_FLAGS, dir_fd=dir_fd)
    now = os.fstat(fd)
    if not stat.S_ISREG(now.st_mode) or (
            st is not None and (now.st_ino != st.st_ino or now.st_dev != st.st_dev)):
        os.close(fd)
        raise OSError(errno.ESTALE, "file changed while it was read", os.fsdecode(name))
    return fd


def tree_bytes(path) -> int:
    """The bytes of every file below `path` (lstat sizes, links not followed): what docker calls
    a container's SizeRw or a volume's reclaimed space. Files that go meanwhile count 0."""
    total = 0
    for top, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(top, name)).st_size
            except OSError:
                continue
    return total


def remove_tree(path) -> None:
    """Remove the directory `path` and everything below it, ignoring errors: what
    shutil.rmtree(path, ignore_errors=True) does (a symlink is removed, never followed; `path`
    itself a symlink is left alone), without shutil's imports (fnmatch, re, bz2, lzma: ~3 ms on
    every run, which removes its run dir with this)."""
    try:
        os.rmdir(path)          # empty (or gone): done
        return
    except OSError:
        pass
    try:
        fd = os.open(path, DIR_FLAGS)
    except OSError:
        return
    try:
        _clear(fd)
    finally:
        os.close(fd)
    try:
        os.rmdir(path)
    except OSError:
        pass


def _clear(top: int) -> None:
    """Remove what the directory fd `top` holds, by fd (a name swapped for a symlink meanwhile
    is unlinked, not followed), depth first on a stack of its own: a tree of any depth (a
    container can make thousands of levels) ends neither in RecursionError nor a traceback;
    a level that cannot be opened (EMFILE) is left, as shutil leaves what it cannot remove."""
    stack = [(top, _entries(top), "")]        # (dir fd, its entries left, its name in the parent)
    while stack:
        fd, entries, name = stack[-1]
        if not entries:
            stack.pop()
            if stack:                           # a subdir: closed, then removed from its parent
                os.close(fd)
                try:
                    os.rmdir(name, dir_fd=stack[-1][0])
                except OSError:
                    pass
            continue
        child, is_dir = entries.pop()
        if not is_dir:
            try:
                os.unlink(child, dir_fd=fd)
            except OSError:
                pass
            continue
        try:
            sub = os.open(child, DIR_FLAGS, dir_fd=fd)
        except OSError:
            try:
                os.rmdir(child, dir_fd=fd)
            except OSError:
                pass
            continue
        stack.append((sub, _entries(sub), child))


def _entries(dir_fd: int) -> list[tuple[str, bool]]:
    """(name, is a directory, not following links) of what dir_fd holds; [] when unreadable."""
    out = []
    try:
        with os.scandir(dir_fd) as it:
            for e in it:
                try:
                    is_dir = e.is_dir(follow_symlinks=False)
                except OSError:
                    is_dir = False
                out.append((e.name, is_dir))
    except OSError:
        return []
    return out
