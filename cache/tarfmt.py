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


def header(name: bytes, *, mode: int, uid: int = 0, gid: int = 0, size: int = 0, mtime: int = 0,
           typeflag: bytes = REG, linkname: bytes = b"", devmajor: int = 0, devminor: int = 0,
           xattrs: dict[bytes, bytes] | None = None) -> bytes:
    """The bytes of one entry's header(s); the caller writes `size` bytes of data and pad()."""
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
