"""Layer tars: the deterministic writer (directory in overlay format -> OCI layer tar) and the
safe extractor (tar -> directory), both streaming at constant memory.

Writer rules (DESIGN.md "Layer"): entries in path order (components compared bytewise, parents
first, like Go's WalkDir), numeric uid/gid with empty uname/gname, mtimes as integers clamped to
`epoch` (SOURCE_DATE_EPOCH, default 0; None keeps real times), no atime/ctime, hardlinks as
links, only `security.capability` and `user.*` xattrs, sockets skipped. Overlay whiteouts (0/0
char devices) become `.wh.NAME` and an opaque dir (`trusted.overlay.opaque=y`, or
`user.overlay.opaque` under userxattr) gets `.wh..wh..opq` right after its own entry.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from cache import tarfmt
from cache.compress import CHUNK, HashingWriter
from cache.errors import StoreError

WH_PREFIX = b".wh."
WH_OPAQUE = b".wh..wh..opq"
OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")
REDIRECT_XATTRS = ("trusted.overlay.redirect", "user.overlay.redirect")
_FLUSH_AT = 1 << 20


@dataclass(frozen=True)
class TarResult:
    diff_id: str  # sha256 of the uncompressed tar
    size: int     # its length in bytes


def _kept_xattrs(path: bytes, is_link: bool) -> dict[bytes, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for n in names:
        if n in REDIRECT_XATTRS:
            raise StoreError(f"{os.fsdecode(path)}: overlay redirect_dir entries cannot be written "
                             "as a layer (mount the overlay with redirect_dir=off)")
        if n == "security.capability" or (n.startswith("user.") and not n.startswith("user.overlay.")):
            if is_link:
                continue
            try:
                out[n.encode()] = os.getxattr(path, n, follow_symlinks=False)
            except OSError:
                pass
    return out


def _is_opaque(path: bytes) -> bool:
    for n in OPAQUE_XATTRS:
        try:
            if os.getxattr(path, n, follow_symlinks=False) == b"y":
                return True
        except OSError:
            pass
    return False


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


class _Out:
    """Buffers small header writes so the sink sees ~1 MiB writes, and hashes them (diff_id)."""

    def __init__(self, out):
        self.h = HashingWriter(out)
        self.buf = bytearray()

    def add(self, data) -> None:
        self.buf += data
        if len(self.buf) >= _FLUSH_AT:
            self.flush()

    def big(self, data) -> None:
        if self.buf:
            self.flush()
        self.h.write(data)

    def flush(self) -> None:
        if self.buf:
            self.h.write(bytes(self.buf))
            self.buf.clear()


def _walk(root: bytes):
    """Yield (tar name, full path, lstat) in layer order; whiteout devices keep their own name
    here (the caller renames), but sort by the tar name they will have."""
    stack = [(b"", iter(_sorted_children(root)))]
    while stack:
        prefix, it = stack[-1]
        nxt = next(it, None)
        if nxt is None:
            stack.pop()
            continue
        _sort_name, name, st = nxt
        full = root + b"/" + prefix + name
        rel = prefix + name
        yield rel, full, st
        if stat.S_ISDIR(st.st_mode):
            stack.append((rel + b"/", iter(_sorted_children(full))))


def _sorted_children(path: bytes):
    items = []
    with os.scandir(path) as it:
        for e in it:
            st = e.stat(follow_symlinks=False)
            name = e.name
            key = WH_PREFIX + name if is_whiteout(st) else name
            items.append((key, name, st))
    items.sort(key=lambda t: t[0])
    return items


def write_tar(dir, out=None, *, epoch: int | None = 0) -> TarResult:
    """Write the layer tar of `dir` (overlay format) to `out` (None: only hash it)."""
    root = os.fsencode(os.path.abspath(dir))
    o = _Out(out)
    seen: dict[tuple[int, int], bytes] = {}

    def mt(st) -> int:
        m = st.st_mtime_ns // 1_000_000_000
        return min(m, epoch) if epoch is not None else m

    for rel, full, st in _walk(root):
        mode = st.st_mode
        parent, _, base = rel.rpartition(b"/")
        if base.startswith(WH_PREFIX) and not is_whiteout(st):
            raise StoreError(f"{os.fsdecode(full)}: names starting with .wh. cannot be stored in a layer")
        if is_whiteout(st):
            name = (parent + b"/" if parent else b"") + WH_PREFIX + base
            o.add(tarfmt.header(name, mode=0o600, typeflag=tarfmt.REG))
            continue
        if stat.S_ISDIR(mode):
            o.add(tarfmt.header(rel + b"/", mode=mode, uid=st.st_uid, gid=st.st_gid, mtime=mt(st),
                                typeflag=tarfmt.DIR, xattrs=_kept_xattrs(full, False)))
            if _is_opaque(full):
                o.add(tarfmt.header(rel + b"/" + WH_OPAQUE, mode=0o600, typeflag=tarfmt.REG))
            continue
        if stat.S_ISLNK(mode):
            o.add(tarfmt.header(rel, mode=mode, uid=st.st_uid, gid=st.st_gid, mtime=mt(st),
                                typeflag=tarfmt.SYM, linkname=os.readlink(full)))
            continue
        if stat.S_ISSOCK(mode):
            continue
        if st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            first = seen.get(key)
            if first is not None:
                o.add(tarfmt.header(rel, mode=mode, uid=st.st_uid, gid=st.st_gid, mtime=mt(st),
                                    typeflag=tarfmt.LNK, linkname=first))
                continue
            seen[key] = rel
        xattrs = _kept_xattrs(full, False)
        if stat.S_ISREG(mode):
            size = st.st_size
            o.add(tarfmt.header(rel, mode=mode, uid=st.st_uid, gid=st.st_gid, size=size,
                                mtime=mt(st), typeflag=tarfmt.REG, xattrs=xattrs))
            _copy_file(full, size, o)
            o.add(tarfmt.pad(size))
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            o.add(tarfmt.header(rel, mode=mode, uid=st.st_uid, gid=st.st_gid, mtime=mt(st),
                                typeflag=tarfmt.CHR if stat.S_ISCHR(mode) else tarfmt.BLK,
                                devmajor=os.major(st.st_rdev), devminor=os.minor(st.st_rdev),
                                xattrs=xattrs))
        elif stat.S_ISFIFO(mode):
            o.add(tarfmt.header(rel, mode=mode, uid=st.st_uid, gid=st.st_gid, mtime=mt(st),
                                typeflag=tarfmt.FIFO, xattrs=xattrs))
    o.add(tarfmt.END)
    o.flush()
    return TarResult(o.h.digest, o.h.size)


def _copy_file(path: bytes, size: int, o: _Out) -> None:
    """Exactly `size` bytes (the header's promise): a file that shrank meanwhile is an error."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        left = size
        while left:
            data = os.read(fd, min(left, CHUNK))  # fresh bytes: a threaded sink may keep them
            if not data:
                raise StoreError(f"{os.fsdecode(path)}: file changed size while writing the layer")
            o.big(data)
            left -= len(data)
    finally:
        os.close(fd)


def is_empty_dir(dir) -> bool:
    with os.scandir(dir) as it:
        return next(it, None) is None


def extract(tar, dest, *, whiteouts: str = "overlay", devices: bool | None = None) -> str:
    """Unpack the (possibly compressed) layer stream `tar` into `dest`, never writing outside it.
    whiteouts="overlay": store them in overlay format (0/0 char device, opaque xattr), for a
    layer dir at rest; "apply": delete what they name, to flatten layers onto one rootfs.
    Returns the diff_id (sha256 of the uncompressed tar)."""
    from cache.extract import extract_stream
    return extract_stream(tar, dest, whiteouts=whiteouts, devices=devices)
