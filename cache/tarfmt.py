"""PAX/ustar header bytes written by hand, because stdlib tarfile's writer is not deterministic
enough for layers (float mtimes, host uname/gname, 10240-byte record padding).

Our headers: ustar magic, numeric uid/gid, empty uname/gname, integer mtime, no atime/ctime;
a field that does not fit goes into a PAX `x` record (keys sorted, as Go writes them).
"""
from __future__ import annotations

BLOCK = 512
END = b"\0" * (2 * BLOCK)  # two zero blocks, like Go's tar.Writer.Close (no record padding)

REG, LNK, SYM, CHR, BLK, DIR, FIFO, PAX = b"0", b"1", b"2", b"3", b"4", b"5", b"6", b"x"
_PAX_NAME = b"././@PaxHeader"


def _num(value: int, width: int) -> bytes | None:
    """Octal, NUL-terminated; None if it does not fit (the caller then uses a PAX record)."""
    if value < 0:
        return None
    s = b"%0*o" % (width - 1, value)
    return s + b"\0" if len(s) == width - 1 else None


def _pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(b"%d" % n) + len(body) != n:
        n += 1
    return b"%d" % n + body


def _raw_header(name: bytes, mode: int, uid: int, gid: int, size: int, mtime: int,
                typeflag: bytes, linkname: bytes, devmajor: int, devminor: int) -> bytes:
    h = bytearray(BLOCK)
    h[0:len(name)] = name
    h[100:108] = _num(mode, 8)
    h[108:116] = _num(uid, 8)
    h[116:124] = _num(gid, 8)
    h[124:136] = _num(size, 12)
    h[136:148] = _num(mtime, 12)
    h[148:156] = b"        "
    h[156:157] = typeflag
    h[157:157 + len(linkname)] = linkname
    h[257:265] = b"ustar\x0000"
    h[329:337] = _num(devmajor, 8)
    h[337:345] = _num(devminor, 8)
    chk = sum(h)
    h[148:156] = b"%06o\0 " % chk
    return bytes(h)


def _pad(n: int) -> bytes:
    return b"\0" * (-n % BLOCK)


# A plain header (name and link target ASCII and <= 100 bytes, every number fits, no xattrs:
# nearly every entry of a layer) is built from pieces: the fields that layer entries mostly
# share (mode, owner, mtime, type, device) once per distinct set, with their share of the
# checksum, so an entry costs one join and the sums of its name, link target and size field.
_MAX7, _MAX11 = 0o7777777, 0o77777777777
_fixed: dict[tuple, tuple[bytes, bytes, bytes, bytes, int]] = {}
_sizes: dict[int, tuple[bytes, int]] = {}


def _fixed_part(mode: int, uid: int, gid: int, mtime: int, typeflag: bytes, devmajor: int,
                devminor: int) -> tuple[bytes, bytes, bytes, bytes, int]:
    key = (mode, uid, gid, mtime, typeflag, devmajor, devminor)
    got = _fixed.get(key)
    if got is None:
        ids = b"%07o\0%07o\0%07o\0" % (mode, uid, gid)               # [100:124]
        mt = b"%011o\0" % mtime                                       # [136:148]
        tail = (b"ustar\x0000" + bytes(64) + b"%07o\0%07o\0" % (devmajor, devminor)
                + bytes(BLOCK - 345))                                 # [257:512]
        got = (ids, mt, typeflag, tail, sum(ids) + sum(mt) + typeflag[0] + sum(tail) + 8 * 32)
        if len(_fixed) > 4096:
            _fixed.clear()
        _fixed[key] = got
    return got


def _size_field(size: int) -> tuple[bytes, int]:
    """The size field [124:136] and its byte sum, kept for the first 4096 sizes seen."""
    field = b"%011o\0" % size
    sz = (field, sum(field))
    if len(_sizes) < 4096:
        _sizes[size] = sz
    return sz


def _plain(name: bytes, mode: int, uid: int, gid: int, size: int, mtime: int, typeflag: bytes,
           linkname: bytes, devmajor: int, devminor: int) -> bytes:
    """`_raw_header`'s bytes, from the shared pieces (the caller checked that all fit:
    `mode` is its permission bits only)."""
    ids, mt, tf, tail, fixed_sum = _fixed_part(mode, uid, gid, mtime, typeflag, devmajor, devminor)
    sz = _sizes.get(size) or _size_field(size)
    chk = fixed_sum + sz[1] + sum(name)
    if linkname:
        chk += sum(linkname)
    return b"".join((name.ljust(100, b"\0"), ids, sz[0], mt, b"%06o\0 " % chk, tf,
                     linkname.ljust(100, b"\0"), tail))


def plain_maker(typeflag: bytes):
    """`_plain` for a writer's entries of one type without a link target, as a function of
    (name, permission bits, uid, gid, size, mtime) that keeps its own pieces per (mode, uid,
    gid, mtime): the layer writer's per-file header (the caller checks what `header` checks)."""
    pieces: dict[tuple[int, int, int, int], tuple[bytes, bytes, bytes, int]] = {}
    sizes = _sizes
    after_name = bytes(100)

    def make(name: bytes, mode: int, uid: int, gid: int, size: int, mtime: int) -> bytes:
        got = pieces.get((mode, uid, gid, mtime))
        if got is None:
            ids, mt, tf, tail, fixed_sum = _fixed_part(mode, uid, gid, mtime, typeflag, 0, 0)
            got = pieces[mode, uid, gid, mtime] = (ids, mt, tf + after_name + tail, fixed_sum)
        sz = sizes.get(size) or _size_field(size)
        return b"".join((name.ljust(100, b"\0"), got[0], sz[0], got[1],
                         b"%06o\0 " % (got[3] + sz[1] + sum(name)), got[2]))
    return make


def header(name: bytes, *, mode: int, uid: int = 0, gid: int = 0, size: int = 0, mtime: int = 0,
           typeflag: bytes = REG, linkname: bytes = b"", devmajor: int = 0, devminor: int = 0,
           xattrs: dict[bytes, bytes] | None = None) -> bytes:
    """The bytes of one entry's header(s); the caller writes `size` bytes of data and pad()."""
    if (not xattrs and len(name) <= 100 and len(linkname) <= 100 and name.isascii()
            and linkname.isascii() and 0 <= uid <= _MAX7 and 0 <= gid <= _MAX7
            and 0 <= size <= _MAX11 and 0 <= mtime <= _MAX11 and 0 <= devmajor <= _MAX7
            and 0 <= devminor <= _MAX7):
        return _plain(name, mode & 0o7777, uid, gid, size, mtime, typeflag, linkname, devmajor,
                      devminor)
    pax: dict[bytes, bytes] = {}
    if len(name) > 100 or not name.isascii():
        pax[b"path"] = name
        name = name[:100] if name.isascii() else b"PaxHeaders.0/longname"
    if len(linkname) > 100 or not linkname.isascii():
        pax[b"linkpath"] = linkname
        linkname = b""
    fields = {"uid": (uid, 8), "gid": (gid, 8), "size": (size, 12), "mtime": (mtime, 12)}
    vals = {}
    for key, (value, width) in fields.items():
        if _num(value, width) is None:
            pax[key.encode()] = b"%d" % value
            vals[key] = 0
        else:
            vals[key] = value
    for k in sorted(xattrs or ()):
        pax[b"SCHILY.xattr." + k] = xattrs[k]
    out = b""
    if pax:
        body = b"".join(_pax_record(k, pax[k]) for k in sorted(pax))
        out = _raw_header(_PAX_NAME, 0o644, 0, 0, len(body), 0, PAX, b"", 0, 0) + body + _pad(len(body))
    return out + _raw_header(name, mode & 0o7777, vals["uid"], vals["gid"], vals["size"],
                             vals["mtime"], typeflag, linkname, devmajor, devminor)


pad = _pad
