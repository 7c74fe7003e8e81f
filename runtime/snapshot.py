"""The native snapshotter: overlay semantics on any filesystem, for when overlayfs is unusable.

Three steps replace one overlay mount:

1. `materialise` applies the overlay-format layer dirs, bottom up, onto one plain directory
   (a 0/0 char device deletes, an opaque dir clears; modes, owners, xattrs, times, devices,
   fifos and hard links within a layer are kept; sockets are skipped, as the layer writer does).
2. `Snapshot.take` records every path of that tree (type, mode, owner, size, mtime, ctime,
   inode, and for directories the birth time) and `settle` waits until the filesystem clock has
   passed every recorded ctime.
3. After the command ran on the tree, `diff` moves what changed into an overlay-format upper dir:
   new and changed entries (renamed, not copied: the tree is thrown away, and a rename keeps
   hard links), 0/0 char devices for deleted paths, an opaque marker on a directory that
   replaced a directory, and every ancestor of a change (as overlay's copy-up makes them).

Why ctime is a sufficient change test. Every change to an inode -- data, size, mode, owner,
xattrs, link count, times -- sets its ctime to the current time, and no call a container can
make sets ctime back (only changing the system clock could, and the sandbox has no CAP_SYS_TIME).
`settle` makes every ctime set after the snapshot strictly greater than every recorded one, so a
content change that keeps size and mtime (write, then `touch -r` the old time back) still shows
as a new ctime; reading the content again could not tell more. A path whose inode number changed
was replaced. Inode numbers are reused at once on ext4 (`rm -rf d; mkdir d` can give d its old
number back), which matters only for directories (a replaced one is opaque, a changed one is
merged), so directories are also compared by birth time (statx), which a new inode always moves
on. Where the filesystem has no birth time a reused directory is taken as changed in place: the
layer then lists its old entries as deleted instead of being opaque, the same tree either way.

Equivalence with the overlay path (same layer, same diff_id). A hard link shares one inode, so
linking, unlinking or renaming one name of a lower hard-linked pair moves the ctime of the other
names too; overlay copies up only the name it was asked to. Such a file counts as changed only
if it differs from the layer file it came from. Two differences remain: overlay copies up a file
that was only opened for writing, and its copy-up breaks a hard link between lower files, while
here writing one name of a lower hard-linked pair changes both (as on any real filesystem).
Overlay also marks a fresh directory renamed into an existing one opaque, which hides nothing;
`drop_redundant_opaque` removes such markers from overlay upper dirs so both paths agree.
"""
from __future__ import annotations

import errno
import os
import stat
import time
from _collections_abc import Iterator, Sequence

from cache.overlayfmt import (
    clear_opaque,
    dir_layers,
    is_opaque,
    is_whiteout,
    make_whiteout,
    private_xattr,
    set_opaque,
)
from runtime import kernel, lazyctx
from runtime.errors import SandboxError

TYPE_CHECKING = False
if TYPE_CHECKING:       # annotations only: pathlib is imported where a Path is made
    from pathlib import Path

# --- metadata ---------------------------------------------------------------------------------

def _xattrs(path: bytes) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}
        raise
    out = {}
    for n in names:
        if private_xattr(n):          # overlay's own: never shown through a mount
            continue
        try:
            out[n] = os.getxattr(path, n, follow_symlinks=False)
        except OSError as e:
            if e.errno != errno.ENODATA:
                raise
    return out


def _set_meta(dst: bytes, st: os.stat_result, xattrs: dict[str, bytes], *, times: bool = True,
              replace: bool = False) -> None:
    """Owner, then mode (chown clears setuid bits), then xattrs (chown clears
    security.capability), then times; `replace` drops xattrs dst has and the source lacks."""
    link = stat.S_ISLNK(st.st_mode)
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    if not link:
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    if replace:
        for n in _xattrs(dst):
            if n not in xattrs:
                os.removexattr(dst, n, follow_symlinks=False)
    for n, v in xattrs.items():
        try:
            os.setxattr(dst, n, v, follow_symlinks=False)
        except OSError as e:
            if not (link and e.errno == errno.EPERM and n.startswith("user.")):
                raise
    if times:
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _copy_data(src: bytes, dst: bytes, size: int) -> None:
    s = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        d = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            left = size
            use_range = True
            while left > 0:
                try:
                    n = (os.copy_file_range(s, d, min(left, 1 << 30)) if use_range
                         else os.sendfile(d, s, None, min(left, 1 << 30)))
                except OSError as e:
                    if use_range and e.errno in (errno.EXDEV, errno.ENOSYS, errno.EINVAL,
                                                 errno.EOPNOTSUPP):
                        use_range = False
                        continue
                    raise
                if n == 0:
                    break
                left -= n
        finally:
            os.close(d)
    finally:
        os.close(s)


def _remove(path: bytes) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        import shutil
        shutil.rmtree(path)
    else:
        os.unlink(path)


# --- 1. materialise ---------------------------------------------------------------------------

def materialise(layers: Sequence[str | os.PathLike], dest: str | os.PathLike) -> dict[bytes, bytes]:
    """Apply overlay-format layer dirs (top first, as overlay's lowerdir takes them) onto
    `dest`, so it shows what a read-only overlay of them shows. The root dir keeps its own
    metadata (overlay shows the upper dir's root, which is a fresh directory too).
    Returns the layer file each hard-linked path was copied from (see `diff`)."""
    for d in layers:
        if not os.path.isdir(d):
            raise SandboxError(f"layer dir {os.fsdecode(d)} is missing (run `pybuild prune`?)")
    root = os.fsencode(dest)
    origins: dict[bytes, bytes] = {}
    for layer in reversed(list(layers)):
        _apply(os.fsencode(layer), root, origins)
    return origins


def _apply(layer: bytes, dest: bytes, origins: dict[bytes, bytes]) -> None:
    links: dict[tuple[int, int], bytes] = {}
    post: list[tuple[bytes, os.stat_result, dict]] = []   # dirs: metadata after their children
    with os.scandir(dest) as it:
        empty = next(it, None) is None
    stack = [(b"", empty)]        # (dir, made by this pass: nothing to replace in it)
    while stack:
        rel, fresh = stack.pop()
        with os.scandir(layer + b"/" + rel if rel else layer) as it:
            entries = list(it)
        for e in entries:
            crel = rel + b"/" + e.name if rel else e.name
            src, dst = e.path, dest + b"/" + crel
            st = e.stat(follow_symlinks=False)
            mode = st.st_mode
            if is_whiteout(st):
                if not fresh:
                    _remove(dst)
                continue
            if stat.S_ISDIR(mode):
                have = None
                if not fresh:
                    try:
                        have = os.lstat(dst)
                    except FileNotFoundError:
                        pass
                if have is not None and not stat.S_ISDIR(have.st_mode):
                    os.unlink(dst)
                    have = None
                if have is not None and is_opaque(src):   # a new dir, as overlay made it
                    import shutil
                    shutil.rmtree(dst)
                    have = None
                if have is None:
                    os.mkdir(dst, 0o700)
                post.append((dst, st, _xattrs(src)))
                stack.append((crel, have is None))
                continue
            if not fresh:
                _remove(dst)
            if stat.S_ISSOCK(mode):
                continue
            if st.st_nlink > 1:
                origins[crel] = src
                first = links.get((st.st_dev, st.st_ino))
                if first is not None:
                    os.link(first, dst)
                    continue
                links[(st.st_dev, st.st_ino)] = dst
            if stat.S_ISREG(mode):
                _copy_data(src, dst, st.st_size)
            elif stat.S_ISLNK(mode):
                os.symlink(os.readlink(src), dst)
            elif stat.S_ISFIFO(mode):
                os.mkfifo(dst, 0o600)
            else:   # char and block devices
                os.mknod(dst, stat.S_IFMT(mode) | 0o600, st.st_rdev)
            _set_meta(dst, st, _xattrs(src))
    for dst, st, xattrs in reversed(post):   # children before parents: their times stick
        _set_meta(dst, st, xattrs, replace=True)


# --- 2. snapshot ------------------------------------------------------------------------------

class Snapshot:
    """Every path under a tree: rel path (bytes) -> (fmt, mode, uid, gid, size, mtime_ns,
    ctime_ns, ino, btime_ns, nlink); `kids[dir rel]` lists each directory's names; `origins`
    the layer file of each hard-linked path (from `materialise`)."""

    def __init__(self, origins: dict[bytes, bytes] | None = None) -> None:
        self.entries: dict[bytes, tuple] = {}
        self.kids: dict[bytes, list[bytes]] = {}
        self.max_ctime = 0
        self.origins = origins or {}

    @classmethod
    def take(cls, root: str | os.PathLike, origins: dict[bytes, bytes] | None = None) -> Snapshot:
        snap = cls(origins)
        top = os.fsencode(root)
        stack = [b""]
        while stack:
            rel = stack.pop()
            names = []
            with os.scandir(top + b"/" + rel if rel else top) as it:
                for e in it:
                    crel = rel + b"/" + e.name if rel else e.name
                    names.append(e.name)
                    st = e.stat(follow_symlinks=False)
                    is_dir = stat.S_ISDIR(st.st_mode)
                    snap.entries[crel] = _record(st, kernel.btime(e.path) if is_dir else 0)
                    snap.max_ctime = max(snap.max_ctime, st.st_ctime_ns)
                    if is_dir:
                        stack.append(crel)
            snap.kids[rel] = names
        return snap


def _record(st: os.stat_result, btime: int) -> tuple:
    return (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_size,
            st.st_mtime_ns, st.st_ctime_ns, st.st_ino, btime, st.st_nlink)


def _same_as_origin(path: bytes, origin: bytes | None) -> bool:
    """Whether a file equals the layer file it was copied from (content and xattrs)."""
    if origin is None:
        return False
    if _xattrs(path) != _xattrs(origin):
        return False
    import filecmp
    return filecmp.cmp(path, origin, shallow=False)


def settle(snap: Snapshot, where: str | os.PathLike, limit: float = 2.0) -> None:
    """Wait until the clock that stamps ctimes on `where`'s filesystem has passed every ctime in
    the snapshot, so any change made from now on gives a ctime the snapshot does not hold.
    Timestamps come from a clock that ticks every few ms, so this waits at most one tick
    (kernels with multigrain timestamps usually need no wait at all)."""
    probe = os.path.join(os.fsencode(where), b".clock")
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + limit
        while os.fstat(fd).st_ctime_ns <= snap.max_ctime:
            if time.monotonic() > deadline:
                raise SandboxError("the filesystem clock does not advance (ctime stuck); cannot "
                                   "take a snapshot here (set PYBUILD_SNAPSHOTTER=overlay?)")
            time.sleep(0.001)
            os.fchmod(fd, 0o600)   # a new ctime from the current clock
    finally:
        os.close(fd)
        os.unlink(probe)


# --- 3. diff ----------------------------------------------------------------------------------

def diff(root: str | os.PathLike, snap: Snapshot, upper: str | os.PathLike) -> None:
    """Move what changed in `root` since `snap` into the empty dir `upper`, in overlay format.
    `root` is consumed: entries are renamed out of it (it must be on upper's filesystem)."""
    top, up = os.fsencode(root), os.fsencode(upper)
    seen: dict[bytes, os.stat_result] = {}    # dirs as found, before anything moved out of them
    made: list[bytes] = []                    # upper dirs made for kept dirs (times set last)
    made_set = {b""}

    def ensure(rel: bytes) -> None:
        """The dir rel and its ancestors in upper, with the tree's metadata (overlay copy-up)."""
        missing = []
        while rel not in made_set:
            missing.append(rel)
            rel = rel.rpartition(b"/")[0]
        for r in reversed(missing):
            dst = up + b"/" + r
            os.mkdir(dst, 0o700)
            _set_meta(dst, seen[r], _xattrs(top + b"/" + r), times=False)
            made_set.add(r)
            made.append(r)

    stack = [b""]
    while stack:
        rel = stack.pop()
        path = top + b"/" + rel if rel else top
        now = os.listdir(path)
        for name in now:
            crel = rel + b"/" + name if rel else name
            src = top + b"/" + crel
            st = os.lstat(src)
            old = snap.entries.get(crel)
            fmt = stat.S_IFMT(st.st_mode)
            is_dir = fmt == stat.S_IFDIR
            if (old is None or old[0] != fmt or old[7] != st.st_ino
                    or (is_dir and old[8] and kernel.btime(src) != old[8])):
                ensure(rel)                       # new, or replaced by another inode
                dst = up + b"/" + crel
                os.rename(src, dst)
                if is_dir and old is not None and old[0] == stat.S_IFDIR:
                    set_opaque(dst)
                continue
            now_rec = _record(st, old[8])
            changed = now_rec[:8] != old[:8]
            if changed and not is_dir and old[9] > 1 and now_rec[:6] == old[:6]:
                # A hard-linked file whose ctime moved: perhaps through another name (linked,
                # unlinked, renamed), which overlay would not copy up. Ask its layer file.
                changed = not _same_as_origin(src, snap.origins.get(crel))
            if is_dir:
                seen[crel] = st
                if changed:
                    ensure(crel)
                stack.append(crel)
            elif changed:
                ensure(rel)
                os.rename(src, up + b"/" + crel)
        gone = set(snap.kids.get(rel, ())).difference(now)
        if gone:
            ensure(rel)
            for name in sorted(gone):
                _whiteout(up + b"/" + (rel + b"/" + name if rel else name))
    for r in reversed(made):                  # children first: their entries changed our mtime
        st = seen[r]
        os.utime(up + b"/" + r, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _whiteout(path: bytes) -> None:
    try:
        make_whiteout(path)
    except PermissionError:
        from runtime.mountinfo import filesystem_of
        where, fstype = filesystem_of(os.path.dirname(path))
        raise SandboxError(f"cannot record a deleted path: {where} ({fstype}) refuses overlay "
                           "whiteouts (0/0 character devices), which layer dirs need; put "
                           "PYBUILD_ROOT on ext4, xfs, btrfs or tmpfs") from None


# --- overlay upper dirs: the same form as diff writes ------------------------------------------

def drop_redundant_opaque(upper: str | os.PathLike, lowers: Sequence[str | os.PathLike]) -> None:
    """Remove opaque markers that hide nothing: on a dir whose path shows no directory in the
    lowers (overlay marks a fresh directory renamed into a merged one). With or without the marker
    overlay shows the same tree, and so does a layer tar applied in order; this way a layer has
    one form, the one `diff` writes. Only merged dirs (dirs in both upper and a lower) can hold
    such a dir, so only they are walked."""
    up = os.fsencode(upper)
    below = [os.fsencode(d) for d in lowers]
    stack = [b""]
    while stack:
        rel = stack.pop()
        with os.scandir(up + b"/" + rel if rel else up) as it:
            dirs = [e.name for e in it if e.is_dir(follow_symlinks=False)]
        for name in dirs:
            crel = rel + b"/" + name if rel else name
            path = up + b"/" + crel
            opaque = is_opaque(path)
            if not dir_layers(below, crel):
                if opaque:
                    clear_opaque(path)
            elif not opaque:
                stack.append(crel)


# --- the native counterpart of overlay.mounted --------------------------------------------------

@lazyctx.contextmanager
def mounted(lowerdirs: Sequence[Path], upperdir: Path | None = None, *,
            base: str | os.PathLike | None = None) -> Iterator[Path]:
    """Yield a plain directory holding the merged view of lowerdirs (top first) and upperdir.
    On a clean exit upperdir holds, in overlay format, what it held plus what the caller changed
    (as an overlay upper dir would). Without upperdir the view is a read-only bind mount. The
    copy goes in `base` (on upperdir's filesystem), default next to upperdir, else the temp dir."""
    import shutil
    import tempfile
    from pathlib import Path

    if base is None and upperdir is not None:
        base = Path(upperdir).parent
    base = os.fspath(base) if base is not None else None
    rundir = tempfile.mkdtemp(prefix="pybuild-tree-", dir=base)
    try:
        tree = os.path.join(rundir, "root")
        os.mkdir(tree, 0o755)
        origins = materialise(lowerdirs, tree)
        if upperdir is None:
            view = os.path.join(rundir, "view")
            os.mkdir(view)
            kernel.mount(tree, view, None, kernel.MS_BIND)
            try:
                kernel.mount(None, view, None, kernel.MS_BIND | kernel.MS_REMOUNT | kernel.MS_RDONLY)
                yield Path(view)
            finally:
                kernel.umount2(view, kernel.MNT_DETACH)
            return
        snap = Snapshot.take(tree, origins)
        settle(snap, rundir)
        with os.scandir(upperdir) as it:
            had = next(it, None) is not None
        if had:   # an upper dir with content is the top layer, and part of the result
            materialise([upperdir], tree)
        yield Path(tree)
        if not had:
            diff(tree, snap, upperdir)
            return
        fresh = os.path.join(rundir, "upper")
        os.mkdir(fresh)
        diff(tree, snap, fresh)
        for name in os.listdir(upperdir):
            _remove(os.path.join(os.fsencode(upperdir), os.fsencode(name)))
        for name in os.listdir(fresh):
            os.rename(os.path.join(fresh, name), os.path.join(upperdir, name))
    finally:
        shutil.rmtree(rundir, ignore_errors=True)
