"""Safe layer extraction: every parent path is resolved inside the destination by
cache.fspath's fd walk (symlinks followed as if the destination were `/`), and the final
component is never followed. So no entry -- `..`, absolute names, links pointing out, a symlink
laid down earlier and written through later, whiteouts naming parents -- can touch anything
outside. (containerd's TestBreakouts is the list.)

Two uses, one extractor. A layer tar unpacks into a fresh layer dir (`whiteouts="overlay"`:
`.wh.` entries become overlay whiteouts and opaque markers) or onto a tree (`"apply"`). ADD of a
local tar (`untar`) merges into an existing directory of the image as go-archive's Untar and
BuildKit's unpack do: `.wh.` entries are plain files there (which the layer writer then refuses),
names and hardlink targets that climb out of the destination are errors, implied parents are 0755
root, --chown's ids replace every entry's, and a hardlink entry takes its header's owner and mode.
Either way only `overlayfmt.layer_xattr` xattrs are set: overlay's own never come from a tar.

Reading uses stdlib tarfile in stream mode as a header parser only; what is written, and how,
is decided here, never by tarfile's extract().
"""
from __future__ import annotations

import os
import shutil
import stat
import tarfile

from cache import fspath
from cache import overlayfmt as ofmt
from cache.compress import CHUNK, HashingWriter, open_decompressed
from cache.errors import StoreError
from cache.fspath import clean

_PATH_MAX = 4096  # Linux: what a path given to a system call may hold, NUL included


class _HashingReader:
    def __init__(self, raw, hashed: bool = True):
        self.raw = raw
        self.h = HashingWriter() if hashed else None

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(CHUNK if n is None or n < 0 else n)
        if self.h is not None:
            self.h.write(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


def _in_userns() -> bool:
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split() != ["0", "0", "4294967295"]
    except OSError:
        return True


class _Root:
    """Directory fds resolved inside `dest` (a path or a directory fd; cache.fspath's walk)."""

    def __init__(self, dest, implied: tuple[int, tuple[int, int]] | None = None, label="layer entry"):
        self.fd = (os.dup(dest) if isinstance(dest, int)
                   else os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
        self.mode, self.owner = implied or (None, None)
        self.label = label

    def close(self) -> None:
        os.close(self.fd)

    def open_dir(self, comps: list[str], create: bool, what: str) -> int | None:
        """An fd of the directory `comps` names, symlinks followed in-root; missing dirs made
        when `create`, else None. The caller closes the fd."""
        return fspath.open_dir(self.fd, comps, create=create, what=f"{self.label} {what!r}",
                               mode=self.mode, owner=self.owner)


def _remove(parent: int, name: str) -> None:
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=parent)
    else:
        os.unlink(name, dir_fd=parent)


def _xattrs(m: tarfile.TarInfo) -> dict[str, bytes]:
    out = {}
    for k, v in m.pax_headers.items():
        if not k.startswith("SCHILY.xattr."):
            continue
        n = k[len("SCHILY.xattr."):]
        if ofmt.layer_xattr(n):
            out[n] = v.encode("utf-8", "surrogateescape")
    return out


class _Extractor:
    def __init__(self, dest, whiteouts: str, devices: bool | None,
                 owner: tuple[int, int] | None = None):
        if whiteouts not in ("overlay", "apply", "untar"):
            raise ValueError(whiteouts)
        self.overlay = whiteouts == "overlay"
        self.untar = whiteouts == "untar"
        self.owner = owner
        self.root = (_Root(dest, (0o755, (0, 0)), "archive entry") if self.untar else _Root(dest))
        where = (os.readlink(f"/proc/self/fd/{self.root.fd}") if isinstance(dest, int)
                 else os.path.abspath(dest))   # the path later walks of this tree start from
        self.room = _PATH_MAX - 1 - len(os.fsencode(where))  # bytes below dest
        self.is_root = os.geteuid() == 0
        self.devices = (self.is_root and not _in_userns()) if devices is None else devices
        self.created: dict[tuple[int, int], set[str]] = {}
        self.dirs: list[tuple[list[str], int, int]] = []

    def _mark(self, parent: int, name: str) -> None:
        st = os.fstat(parent)
        self.created.setdefault((st.st_dev, st.st_ino), set()).add(name)

    def _made_here(self, parent: int, name: str) -> bool:
        st = os.fstat(parent)
        return name in self.created.get((st.st_dev, st.st_ino), ())

    def entry(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        if not self.untar:
            return self._entry(tf, m)
        if fspath.climbs(m.name):
            raise StoreError(f"{m.name!r} is outside of the destination")
        if m.islnk() and fspath.climbs(m.linkname):
            raise StoreError(f"invalid hardlink {m.name!r} -> {m.linkname!r}: outside of the "
                             "destination")
        if self.owner is not None:
            m.uid, m.gid = self.owner
        try:
            self._entry(tf, m)
        except OSError as e:
            raise StoreError(f"{m.name}: {e.strerror}") from None

    def _entry(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        comps = clean(m.name)
        if not comps:
            return  # the root itself: its attributes belong to whoever owns dest
        if len(os.fsencode("/".join(comps))) > self.room:
            raise StoreError(f"{self.root.label} {m.name[:40]!r}...: path too long for the store "
                             f"(more than {_PATH_MAX - 1} bytes with the layer dir's own)")
        *pcomps, base = comps
        if base.startswith(ofmt.WH_PREFIX) and not self.untar:
            return self.whiteout(m.name, pcomps, base)
        parent = self.root.open_dir(pcomps, True, m.name)
        try:
            self.create(tf, m, parent, base, comps)
        finally:
            os.close(parent)

    def whiteout(self, raw: str, pcomps: list[str], base: str) -> None:
        if base == ofmt.WH_OPAQUE:
            parent = self.root.open_dir(pcomps, self.overlay, raw)
            if parent is None:
                return
            try:
                if self.overlay:
                    ofmt.set_opaque(parent)
                else:
                    keep = self.created.get((os.fstat(parent).st_dev, os.fstat(parent).st_ino), set())
                    for n in os.listdir(parent):
                        if n not in keep:
                            _remove(parent, n)
            finally:
                os.close(parent)
            return
        name = base[len(ofmt.WH_PREFIX):]
        if name in ("", ".", "..") or "/" in name:
            raise StoreError(f"invalid whiteout entry {raw!r} in layer")
        if name.startswith(ofmt.WH_PREFIX):
            return  # AUFS metadata (.wh..wh.plnk etc.): not a path
        parent = self.root.open_dir(pcomps, self.overlay, raw)
        if parent is None:
            return  # nothing there to delete
        try:
            if self.overlay:
                if self._made_here(parent, name):
                    return  # a file and its whiteout in one layer: the file stays (image-spec)
                _remove(parent, name)
                ofmt.make_whiteout(name, dir_fd=parent)
                self._mark(parent, name)
            else:
                _remove(parent, name)
        finally:
            os.close(parent)

    def create(self, tf, m: tarfile.TarInfo, parent: int, name: str, comps: list[str]) -> None:
        try:
            old = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            old = None
        if m.isdir():
            if old is not None and not stat.S_ISDIR(old.st_mode):
                _remove(parent, name)
                old = None
            if old is None:
                os.mkdir(name, 0o700, dir_fd=parent)
            fd = os.open(name, fspath.DIR_FLAGS, dir_fd=parent)
            try:
                self._owner_xattrs(fd, m)
            finally:
                os.close(fd)
            self.dirs.append((comps, m.mode, int(m.mtime)))
            self._mark(parent, name)
            return
        if m.islnk():
            return self.hardlink(m, parent, name, old)
        if (m.ischr() or m.isblk()) and not self.devices:
            return  # not allowed here (rootless or in a user namespace): skipped like docker
        if old is not None:
            _remove(parent, name)
        mtime_ns = int(m.mtime) * 1_000_000_000
        if m.isreg():
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600, dir_fd=parent)
            try:
                src = tf.extractfile(m)
                left = m.size
                while left:
                    data = src.read(min(left, CHUNK))
                    if not data:
                        raise StoreError(f"truncated layer: {m.name!r} is shorter than its header says")
                    _write_all(fd, data)
                    left -= len(data)
                self._owner_xattrs(fd, m)
                os.chmod(fd, m.mode & 0o7777)
                os.utime(fd, ns=(mtime_ns, mtime_ns))
            finally:
                os.close(fd)
        elif m.issym():
            os.symlink(m.linkname, name, dir_fd=parent)
            if self.is_root:
                _try(os.chown, name, m.uid, m.gid, dir_fd=parent, follow_symlinks=False)
            os.utime(name, ns=(mtime_ns, mtime_ns), dir_fd=parent, follow_symlinks=False)
        elif m.ischr() or m.isblk() or m.isfifo():
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK if m.isblk() else stat.S_IFIFO
            dev = os.makedev(m.devmajor, m.devminor) if kind != stat.S_IFIFO else 0
            os.mknod(name, kind | 0o600, dev, dir_fd=parent)
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            try:
                proc = f"/proc/self/fd/{fd}"  # the inode we just made, not a path to resolve
                if self.is_root:
                    _try(os.chown, proc, m.uid, m.gid)
                os.chmod(proc, m.mode & 0o7777)
                os.utime(proc, ns=(mtime_ns, mtime_ns))
            finally:
                os.close(fd)
        elif self.untar:
            raise StoreError(f"{m.name!r}: unhandled tar header type {m.type!r}")
        else:
            return  # unknown types (sparse/GNU extensions) are not created
        self._mark(parent, name)

    def hardlink(self, m, parent: int, name: str, old) -> None:
        tcomps = clean(m.linkname)
        if not tcomps:
            raise StoreError(f"{self.root.label} {m.name!r}: hardlink to the root directory")
        *tp, tbase = tcomps
        tparent = self.root.open_dir(tp, False, m.linkname)
        if tparent is None:
            raise StoreError(f"{self.root.label} {m.name!r}: hardlink target {m.linkname!r} does not exist")
        try:
            try:
                tst = os.stat(tbase, dir_fd=tparent, follow_symlinks=False)
            except FileNotFoundError:
                raise StoreError(f"{self.root.label} {m.name!r}: hardlink target {m.linkname!r} does not "
                                 "exist") from None
            if stat.S_ISDIR(tst.st_mode):
                raise StoreError(f"{self.root.label} {m.name!r}: hardlink to a directory")
            if old is not None:
                if (old.st_dev, old.st_ino) == (tst.st_dev, tst.st_ino):
                    return
                _remove(parent, name)
            os.link(tbase, name, src_dir_fd=tparent, dst_dir_fd=parent, follow_symlinks=False)
            self._mark(parent, name)
            if self.untar:   # the header's owner and mode, as go-archive applies them
                os.chown(name, m.uid, m.gid, dir_fd=parent, follow_symlinks=False)
                if not stat.S_ISLNK(tst.st_mode):
                    os.chmod(name, m.mode & 0o7777, dir_fd=parent)
        finally:
            os.close(tparent)

    def _owner_xattrs(self, fd: int, m) -> None:
        if self.is_root:
            _try(os.chown, fd, m.uid, m.gid)
        for k, v in _xattrs(m).items():
            _try(os.setxattr, fd, k, v)

    def finish(self) -> None:
        for comps, mode, mtime in reversed(self.dirs):
            fd = self.root.open_dir(comps, False, "/".join(comps))
            if fd is None:
                continue
            try:
                os.chmod(fd, mode & 0o7777)
                os.utime(fd, ns=(mtime * 1_000_000_000,) * 2)
            finally:
                os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _try(fn, *args, **kw) -> None:
    try:
        fn(*args, **kw)
    except OSError:
        pass  # ownership/xattrs the kernel refuses here (userns, fs without xattrs)


class _MemberData:
    def __init__(self, f, name: str):
        self.f, self.name = f, name

    def read(self, n: int = CHUNK) -> bytes:
        try:
            return self.f.read(n)
        except (tarfile.TarError, EOFError) as e:
            raise StoreError(f"corrupt or truncated layer tar at {self.name!r} ({e})") from None


class LayerReader:
    """The one reader of layer tars (extraction here, `pybuild diff`): a binary stream,
    gzip/zstd/plain sniffed, parsed by stdlib tarfile in stream mode as a header parser only,
    hashed as it goes (the diff_id). Iterating yields each member once; members are not kept
    (tarfile's own list would grow with every entry of a large layer). `close()` reads to the
    end and returns the diff_id (None with `hashed=False`: the source checks it itself). Every
    fault is a StoreError."""

    def __init__(self, tar, *, hashed: bool = True):
        self.reader = _HashingReader(open_decompressed(tar), hashed)
        try:
            self.tf = tarfile.open(fileobj=self.reader, mode="r|")  # noqa: SIM115 - close()
        except tarfile.ReadError as e:
            raise StoreError(f"not a tar archive ({e})") from None

    def __iter__(self):
        tf = self.tf
        while True:
            try:
                m = tf.next()
            except (tarfile.TarError, EOFError) as e:
                raise StoreError(f"corrupt or truncated layer tar ({e})") from None
            if m is None:
                return
            tf.members.clear()  # nothing here looks a member up again (hardlinks: by name)
            yield m

    def data(self, m: tarfile.TarInfo):
        """The content of the regular-file member `m` (the one just yielded): read(n) only."""
        return _MemberData(self.tf.extractfile(m), m.name)

    def close(self) -> str | None:
        self.tf.close()
        self.reader.drain()
        return None if self.reader.h is None else self.reader.h.digest


def extract_stream(tar, dest, *, whiteouts: str = "overlay", devices: bool | None = None,
                   owner: tuple[int, int] | None = None) -> str:
    """See cache.layers.extract. `tar` is a binary file object (gzip/zstd/plain sniffed);
    `dest` a path or a directory fd. `whiteouts="untar"` is ADD's mode (module doc), where
    `owner` (--chown) replaces every entry's uid/gid."""
    layer = LayerReader(tar)
    ex = _Extractor(dest, whiteouts, devices, owner)
    try:
        try:
            for m in layer:
                ex.entry(layer.tf, m)
        except (tarfile.TarError, EOFError) as e:
            raise StoreError(f"corrupt or truncated layer tar ({e})") from None
        finally:
            layer.tf.close()
        ex.finish()
        return layer.close()
    finally:
        ex.root.close()
