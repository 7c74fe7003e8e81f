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

import errno
import hashlib
import os
import stat
from dataclasses import dataclass

from cache import overlayfmt, tarfmt
from cache.compress import CHUNK
from cache.errors import StoreError
from cache.fspath import open_file
from cache.overlayfmt import REDIRECT_XATTRS, is_opaque, is_whiteout, layer_xattr

WH_PREFIX = os.fsencode(overlayfmt.WH_PREFIX)
WH_OPAQUE = os.fsencode(overlayfmt.WH_OPAQUE)


class TarIndex:
    """Where each entry of a layer tar starts (`write_tar(index=...)`): `rels[i]` (the walk's
    name: a whiteout keeps its own) begins at byte `offs[i]`, the end marker at `end`.
    `special`: the tar has a whiteout, an opaque marker or a hardlink, which a layer made as a
    delta over this one (cache.layerdelta) does not handle."""

    __slots__ = ("rels", "offs", "end", "special")

    def __init__(self):
        self.rels: list[bytes] = []
        self.offs: list[int] = []
        self.end = 0
        self.special = False


@dataclass(frozen=True)
class TarResult:
    """What writing a layer tar made: its diff_id, its size, the settled dir's fingerprint."""

    diff_id: str | None  # sha256 of the uncompressed tar (None: not hashed)
    size: int            # its length in bytes
    fingerprint: str | None = None  # with settle=True: `fingerprint(dir)` after the settling


def _kept_xattrs(path, is_link: bool, shown: bytes | None = None,
                 names: list[str] | None = None) -> dict[bytes, bytes]:
    """The layer xattrs of `path` (a path, or an fd: then `shown` names it in an error and
    `names` may be its listxattr, already read)."""
    nofollow = {} if isinstance(path, int) else {"follow_symlinks": False}
    if names is None:
        try:
            names = os.listxattr(path, **nofollow)
        except OSError:
            return {}
    out = {}
    for n in names:
        if n in REDIRECT_XATTRS:
            where = os.fsdecode(path if shown is None else shown)
            raise StoreError(f"{where}: overlay redirect_dir entries cannot be written "
                             "as a layer (mount the overlay with redirect_dir=off)")
        if layer_xattr(n):
            if is_link:
                continue
            try:
                out[n.encode()] = os.getxattr(path, n, **nofollow)
            except OSError:
                pass
    return out


def _listxattr(fd: int) -> list[str]:
    try:
        return os.listxattr(fd)
    except OSError:
        return []


class _Out:
    """The tar stream as CHUNK-sized blocks: headers are copied and file data read straight into
    the block (no bytes object per read, no joins), each full block hashed (diff_id) and handed
    on. A pipelined sink (compress.ThreadedWriter) lends its own blocks, so a block is not
    reused before the compressor is done with it; any other sink gets a memoryview that is only
    valid during its write() call."""

    def __init__(self, out, hash_tar: bool = True):
        self.sha = hashlib.sha256() if hash_tar else None
        self.size = 0
        self.out = out
        self.lends = hasattr(out, "write_block")
        self.block = out.block() if self.lends else bytearray(CHUNK)
        self.mv = memoryview(self.block)
        self.pos = 0

    def add(self, data: bytes) -> None:
        n = len(data)
        if self.pos + n <= CHUNK:
            self.mv[self.pos:self.pos + n] = data
            self.pos += n
            if self.pos == CHUNK:
                self.flush()
            return
        view = memoryview(data)
        while view:
            k = min(len(view), CHUNK - self.pos)
            self.mv[self.pos:self.pos + k] = view[:k]
            self.pos += k
            view = view[k:]
            if self.pos == CHUNK:
                self.flush()

    def read_file(self, fd: int, size: int) -> bool:
        """Read exactly `size` bytes of `fd` into the stream; False if the file ended early."""
        left = size
        while left:
            k = min(left, CHUNK - self.pos)
            n = os.readv(fd, [self.mv[self.pos:self.pos + k]])
            if not n:
                return False
            self.pos += n
            left -= n
            if self.pos == CHUNK:
                self.flush()
        return True

    def flush(self) -> None:
        if not self.pos:
            return
        data = self.mv[:self.pos]
        if self.sha is not None:
            self.sha.update(data)
        self.size += self.pos
        if self.lends:
            self.out.write_block(self.block, self.pos)
            self.block = self.out.block()
            self.mv = memoryview(self.block)
        elif self.out is not None:
            self.out.write(data)
        self.pos = 0

    @property
    def digest(self) -> str | None:
        return None if self.sha is None else "sha256:" + self.sha.hexdigest()


def _walk(root: bytes, top: bytes | None = None):
    """Yield (tar name, full path, lstat) in layer order; whiteout devices keep their own name
    here (the caller renames), but sort by the tar name they will have. `top`: `root` itself
    is the first entry, named `top`, and its tree goes under `top/`."""
    if top is not None:
        st = os.lstat(root)
        yield top, root, st
        if not stat.S_ISDIR(st.st_mode):
            return
    stack = [(b"" if top is None else top + b"/", root + b"/", iter(_sorted_children(root)))]
    while stack:
        prefix, where, it = stack[-1]
        nxt = next(it, None)
        if nxt is None:
            stack.pop()
            continue
        _sort_name, name, st = nxt
        full = where + name
        rel = prefix + name
        yield rel, full, st
        if stat.S_ISDIR(st.st_mode):
            stack.append((rel + b"/", full + b"/", iter(_sorted_children(full))))


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


def write_tar(dir, out=None, *, epoch: int | None = 0, hash_tar: bool = True,
              top: str | None = None, settle: bool = False,
              index: TarIndex | None = None) -> TarResult:
    """Write the layer tar of `dir` (overlay format) to `out` (None: only hash it). `out` gets
    memoryviews valid only during its write() call, unless it lends its own buffers (a
    compress.ThreadedWriter). `hash_tar=False` skips the diff_id (for a layer whose diff_id is
    known and whose `fingerprint` is checked instead). `top` (`pybuild cp`'s archive): `dir`,
    which may be any file, is the first entry under that name, its tree below it.

    `settle=True` (a dir about to become a built layer; received layers are never rewritten):
    every entry also gets, by utimensat(AT_SYMLINK_NOFOLLOW), the mtime and atime its header
    has (whole seconds, clamped to `epoch`), so a later step, `pybuild run` (layer dirs) and a
    saved or pushed copy (the tar) see one time; and the result carries the dir's
    `fingerprint` as it is afterwards, made in the same walk. Setting an entry's times never
    moves its parent's, so each is settled as it is written; whiteouts and sockets, which the
    tar does not carry as such, are left as they are. `index` gets where each entry starts."""
    root = os.fsencode(os.path.abspath(dir))
    o = _Out(out, hash_tar)
    fp = hashlib.sha256() if settle else None
    try:
        _write_entries(root, o, epoch, None if top is None else os.fsencode(top), fp, index)
        if index is not None:
            index.end = o.size + o.pos
        o.add(tarfmt.END)
        o.flush()
    except BaseException:
        if o.lends:
            out.abort()  # its compress thread must not wait for more
        raise
    if o.lends:
        out.give_back(o.block)
    return TarResult(o.digest, o.size, None if fp is None else "sha256:" + fp.hexdigest())


def fingerprint(dir) -> str:
    """sha256 over the stat identity of every entry below `dir`: name, inode, size, mode,
    owner, link count, rdev, mtime and ctime of each. A committed layer dir that still has the
    fingerprint it had at commit holds the same bytes, so its tar needs no second hash when
    its blob is made. It sees a write, a chmod or chown, a rename, a link, an added or removed
    entry and anything else that moves a ctime (an xattr, a utime). The root itself is left
    out: moving the dir into the store changes its own ctime."""
    h = hashlib.sha256()
    for rel, _full, st in _walk(os.fsencode(os.path.abspath(dir))):
        _fingerprint_entry(h, rel, st)
    return "sha256:" + h.hexdigest()


def _fingerprint_entry(h, rel: bytes, st) -> None:
    """One entry of `fingerprint` (its rule is there). A fingerprint recorded under another
    rule no longer matches: that layer's tar is hashed once more when a blob of it is made,
    which is the safe way round."""
    h.update(b"%s\0%d %d %d %d %d %d %d %d %d %d\n" % (
        rel, st.st_dev, st.st_ino, st.st_size, st.st_mode, st.st_uid, st.st_gid, st.st_nlink,
        st.st_rdev, st.st_mtime_ns, st.st_ctime_ns))


def settled_ns(mtime_ns: int, epoch: int | None) -> int:
    """The mtime (ns) an entry of this mtime has in a built layer dir once committed: its tar
    header's whole seconds, clamped to `epoch` (`write_tar(settle=True)`)."""
    m = mtime_ns // 1_000_000_000
    return (min(m, epoch) if epoch is not None else m) * 1_000_000_000


_DIR_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_DIRECTORY
_S_IFMT, _S_IFREG, _S_IFDIR, _S_IFLNK = 0o170000, stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK
_SMALL = 1 << 16      # a file up to this size is read with one read(), header and data in one add
_MAX_OPEN_DIRS = 64   # open dir fds kept along the walk's path; deeper parents are reopened
_MAX7, _MAX11 = 0o7777777, 0o77777777777


def _write_entries(root: bytes, o: _Out, epoch: int | None, top: bytes | None = None,
                   fp=None, index: TarIndex | None = None) -> None:
    """The entries of `write_tar`, in `_sorted_children`'s order; with `fp` (a sha256), each
    entry is settled to its header's time and fed to `_fingerprint_entry` afterwards.

    The per-entry cost is what a commit of 100,000 files pays 100,000 times, so the common
    kinds (regular files, dirs, symlinks) work on a name relative to their dir's open fd:
    a regular file is opened once and its xattrs listed, read, settled (futimens) and
    re-stat'ed on that fd; a dir's fd gives its xattrs and opaque marker and is the base of
    its children's opens. Plain headers come from `tarfmt._plain`'s shared pieces. The bytes
    are `_write_entry`'s, which still writes the rare kinds (whiteouts, devices, fifos,
    hardlinks, names that need PAX) and `top`'s first entry. With `index`, each entry's start
    is noted before its bytes."""
    seen: dict[tuple[int, int], bytes] = {}
    settled: dict[tuple[int, int], os.stat_result] = {}  # hard-linked inodes done once
    settle = fp is not None
    fpe = _fingerprint_entry
    plain = tarfmt._plain
    file_header, dir_header = tarfmt.plain_maker(tarfmt.REG), tarfmt.plain_maker(tarfmt.DIR)
    add = o.add
    read_file = o.read_file
    pads = [b"\0" * (-n % tarfmt.BLOCK) for n in range(tarfmt.BLOCK)]
    opq = overlayfmt.opaque_xattr()
    dflags = _DIR_FLAGS
    utime, fstat, osopen, close, oread, listxattr = (os.utime, os.fstat, os.open, os.close,
                                                     os.read, os.listxattr)
    # `settled_ns`'s rule in seconds (whole seconds, clamped to the epoch), specialised here
    # and inline in the loop below: it runs once per entry
    if epoch is None:
        def mt(st) -> int:
            return st.st_mtime_ns // 1_000_000_000
    else:
        def mt(st) -> int:
            m = st.st_mtime_ns // 1_000_000_000
            return m if m < epoch else epoch

    def settle_rare(rel: bytes, full: bytes, st):
        """`write_tar`'s settle of an entry `_write_entry` wrote, by path."""
        if st.st_nlink > 1 and (st.st_dev, st.st_ino) in settled:
            return settled[st.st_dev, st.st_ino]
        if not (stat.S_ISSOCK(st.st_mode) or is_whiteout(st)):
            t = mt(st) * 1_000_000_000
            if st.st_mtime_ns != t:
                os.utime(full, ns=(t, t), follow_symlinks=False)
                st = os.lstat(full)
            if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                settled[st.st_dev, st.st_ino] = st
        return st

    if top is not None:
        st = os.lstat(root)
        _write_entry(o, seen, mt, top, root, st)
        if settle:
            fpe(fp, top, settle_rare(top, root, st))
        if not stat.S_ISDIR(st.st_mode):
            return
        prefix0 = top + b"/"
    else:
        prefix0 = b""
    # a frame: [rel prefix, dir path + "/", its sorted children's iterator, dir fd or None]
    stack = [[prefix0, root + b"/", iter(_sorted_children(root)), osopen(root, dflags)]]
    try:
        while stack:
            frame = stack[-1]
            prefix, where, it, dfd = frame
            if dfd is None:
                dfd = frame[3] = osopen(where, dflags)
            for _sort_name, name, st in it:
                rel = prefix + name
                if index is not None:
                    index.rels.append(rel)
                    index.offs.append(o.size + o.pos)
                mode = st.st_mode
                kind = mode & _S_IFMT
                simple = (len(rel) < 100 and rel.isascii() and 0 <= st.st_uid <= _MAX7
                          and 0 <= st.st_gid <= _MAX7 and not name.startswith(WH_PREFIX))
                m = st.st_mtime_ns // 1_000_000_000
                if epoch is not None and m > epoch:
                    m = epoch
                if not (0 <= m <= _MAX11):
                    simple = False
                if kind == _S_IFREG and simple:
                    if st.st_nlink > 1:  # the first of its names in this layer: the rest link to it
                        key = (st.st_dev, st.st_ino)
                        if index is not None:
                            index.special = True
                        if key in seen:
                            full = where + name
                            _write_entry(o, seen, mt, rel, full, st)
                            if settle:
                                fpe(fp, rel, settle_rare(rel, full, st))
                            continue
                        seen[key] = rel
                    size = st.st_size
                    try:
                        fd = open_file(name, st, dir_fd=dfd)
                    except OSError as e:
                        if e.errno != errno.ESTALE:
                            raise
                        raise StoreError(f"{os.fsdecode(where + name)}: file changed while "
                                         "writing the layer") from None
                    try:
                        try:
                            names = listxattr(fd)
                        except OSError:
                            names = None
                        xattrs = _kept_xattrs(fd, False, where + name, names) if names else None
                        if xattrs or size > _MAX11:
                            hdr = tarfmt.header(rel, mode=mode, uid=st.st_uid, gid=st.st_gid,
                                                size=size, mtime=m, typeflag=tarfmt.REG,
                                                xattrs=xattrs)
                        else:
                            hdr = file_header(rel, mode & 0o7777, st.st_uid, st.st_gid, size, m)
                        if size <= _SMALL:
                            data = oread(fd, size) if size else b""
                            if len(data) != size:
                                raise StoreError(f"{os.fsdecode(where + name)}: file changed size "
                                                 "while writing the layer")
                            add(hdr + data + pads[size % tarfmt.BLOCK])
                        else:
                            add(hdr)
                            if not read_file(fd, size):
                                raise StoreError(f"{os.fsdecode(where + name)}: file changed size "
                                                 "while writing the layer")
                            if size % tarfmt.BLOCK:
                                add(pads[size % tarfmt.BLOCK])
                        if settle:
                            t = m * 1_000_000_000
                            if st.st_mtime_ns != t:
                                utime(fd, ns=(t, t))
                                st = fstat(fd)  # its ctime moved
                            if st.st_nlink > 1:
                                settled[st.st_dev, st.st_ino] = st
                    finally:
                        close(fd)
                    if settle:
                        fpe(fp, rel, st)
                    continue
                if kind == _S_IFDIR and simple:
                    full = where + name
                    try:
                        sub = osopen(name, dflags, dir_fd=dfd)
                    except OSError as e:
                        if e.errno not in (errno.ENOTDIR, errno.ELOOP):
                            raise
                        # no longer a dir (a live tree, `pybuild cp`): written as what it
                        # is now, as a walk that came later would have seen it; never followed
                        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                        _write_entry(o, seen, mt, rel, full, st)
                        if settle:
                            fpe(fp, rel, settle_rare(rel, full, st))
                        continue
                    try:
                        names = _listxattr(sub)
                        xattrs = _kept_xattrs(sub, False, full, names) if names else None
                        if xattrs:
                            hdr = tarfmt.header(rel + b"/", mode=mode, uid=st.st_uid, gid=st.st_gid,
                                                mtime=m, typeflag=tarfmt.DIR, xattrs=xattrs)
                        else:
                            hdr = dir_header(rel + b"/", mode & 0o7777, st.st_uid, st.st_gid, 0, m)
                        add(hdr)
                        if opq in names and _getxattr(sub, opq) == b"y":
                            if index is not None:
                                index.special = True
                            add(tarfmt.header(rel + b"/" + WH_OPAQUE, mode=0o600,
                                              typeflag=tarfmt.REG))
                        if settle:
                            t = m * 1_000_000_000
                            if st.st_mtime_ns != t:
                                utime(sub, ns=(t, t))
                                st = fstat(sub)
                            fpe(fp, rel, st)
                        children = _sorted_children(full)
                    except BaseException:
                        close(sub)
                        raise
                    if len(stack) >= _MAX_OPEN_DIRS:
                        close(dfd)
                        frame[3] = None
                    stack.append([rel + b"/", full + b"/", iter(children), sub])
                    break
                if kind == _S_IFLNK and simple:
                    target = os.readlink(name, dir_fd=dfd)
                    if len(target) <= 100 and target.isascii():
                        add(plain(rel, mode & 0o7777, st.st_uid, st.st_gid, 0, m, tarfmt.SYM,
                                  target, 0, 0))
                    else:
                        add(tarfmt.header(rel, mode=mode, uid=st.st_uid, gid=st.st_gid, mtime=m,
                                          typeflag=tarfmt.SYM, linkname=target))
                    if settle:
                        t = m * 1_000_000_000
                        if st.st_mtime_ns != t:
                            utime(name, ns=(t, t), dir_fd=dfd, follow_symlinks=False)
                            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                        fpe(fp, rel, st)
                    continue
                # the rare kinds, by path, as written before
                full = where + name
                if index is not None and (is_whiteout(st) or (st.st_nlink > 1 and kind != _S_IFDIR)
                                          or (kind == _S_IFDIR and is_opaque(full))):
                    index.special = True
                _write_entry(o, seen, mt, rel, full, st)
                if settle:
                    fpe(fp, rel, settle_rare(rel, full, st))
                if kind == _S_IFDIR:
                    if len(stack) >= _MAX_OPEN_DIRS:
                        close(dfd)
                        frame[3] = None
                    stack.append([rel + b"/", full + b"/", iter(_sorted_children(full)),
                                  osopen(full, dflags)])
                    break
            else:
                stack.pop()
                close(dfd)
    finally:
        for frame in stack:
            if frame[3] is not None:
                close(frame[3])


def _getxattr(fd: int, name: str) -> bytes | None:
    try:
        return os.getxattr(fd, name)
    except OSError:     # gone meanwhile, or not readable: not opaque, as is_opaque says
        return None


def _write_entry(o: _Out, seen: dict, mt, rel: bytes, full: bytes, st) -> None:
    """One entry's header (and data) in layer order, by path: the kinds and names the fast
    loop of `_write_entries` leaves to it."""
    mode = st.st_mode
    parent, _, base = rel.rpartition(b"/")
    if base.startswith(WH_PREFIX) and not is_whiteout(st):
        raise StoreError(f"/{os.fsdecode(rel)}: names starting with .wh. cannot be stored in a layer "
                         "(OCI layers use them for deletions)")
    if is_whiteout(st):
        name = (parent + b"/" if parent else b"") + WH_PREFIX + base
        o.add(tarfmt.header(name, mode=0o600, typeflag=tarfmt.REG))
        return
    if stat.S_ISDIR(mode):
        o.add(tarfmt.header(rel + b"/", mode=mode, uid=st.st_uid, gid=st.st_gid, mtime=mt(st),
                            typeflag=tarfmt.DIR, xattrs=_kept_xattrs(full, False)))
        if is_opaque(full):
            o.add(tarfmt.header(rel + b"/" + WH_OPAQUE, mode=0o600, typeflag=tarfmt.REG))
        return
    if stat.S_ISLNK(mode):
        o.add(tarfmt.header(rel, mode=mode, uid=st.st_uid, gid=st.st_gid, mtime=mt(st),
                            typeflag=tarfmt.SYM, linkname=os.readlink(full)))
        return
    if stat.S_ISSOCK(mode):
        return
    if st.st_nlink > 1:
        key = (st.st_dev, st.st_ino)
        first = seen.get(key)
        if first is not None:
            o.add(tarfmt.header(rel, mode=mode, uid=st.st_uid, gid=st.st_gid, mtime=mt(st),
                                typeflag=tarfmt.LNK, linkname=first))
            return
        seen[key] = rel
    xattrs = _kept_xattrs(full, False)
    if stat.S_ISREG(mode):
        size = st.st_size
        o.add(tarfmt.header(rel, mode=mode, uid=st.st_uid, gid=st.st_gid, size=size,
                            mtime=mt(st), typeflag=tarfmt.REG, xattrs=xattrs))
        _copy_file(full, size, o, st)
        if size % tarfmt.BLOCK:
            o.add(tarfmt.pad(size))
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        o.add(tarfmt.header(rel, mode=mode, uid=st.st_uid, gid=st.st_gid, mtime=mt(st),
                            typeflag=tarfmt.CHR if stat.S_ISCHR(mode) else tarfmt.BLK,
                            devmajor=os.major(st.st_rdev), devminor=os.minor(st.st_rdev),
                            xattrs=xattrs))
    elif stat.S_ISFIFO(mode):
        o.add(tarfmt.header(rel, mode=mode, uid=st.st_uid, gid=st.st_gid, mtime=mt(st),
                            typeflag=tarfmt.FIFO, xattrs=xattrs))


def _copy_file(path: bytes, size: int, o: _Out, st=None) -> None:
    """Exactly `size` bytes (the header's promise): a file that shrank meanwhile is an error."""
    try:
        fd = open_file(path, st)
    except OSError as e:
        if e.errno != errno.ESTALE:
            raise
        raise StoreError(f"{os.fsdecode(path)}: file changed while writing the layer") from None
    try:
        if not o.read_file(fd, size):
            raise StoreError(f"{os.fsdecode(path)}: file changed size while writing the layer")
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
