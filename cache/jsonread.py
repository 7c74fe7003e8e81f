"""`loads`: json.loads without importing json (json imports re, re imports enum: ~8 ms a run).

It drives the C scanner json.loads itself uses (`_json.make_scanner`) with json's default
decoder settings, so the values are json.loads's. Any input json.loads refuses (bad JSON, extra
data, a BOM in a str) is handed to json.loads, which raises its own error (a ValueError:
json.JSONDecodeError, or UnicodeDecodeError for bytes that do not decode): the error path pays
for the import, the common one does not.
"""
from __future__ import annotations

try:
    from _json import make_scanner as _make_scanner
except ImportError:  # an interpreter without the C accelerator: json.loads does it all
    _make_scanner = None

_WS = " \t\n\r"     # json.decoder.WHITESPACE
_CONSTANTS = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}


class _Context:
    """The attributes make_scanner reads off a json.JSONDecoder(), at their defaults."""
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__
    memo: dict = {}


_scan = _make_scanner(_Context()) if _make_scanner is not None else None


def _encoding(b) -> str:
    """json.detect_encoding (RFC 8259 / 4627: a BOM, else the pattern of zero bytes)."""
    if b[:4] in (b"\x00\x00\xfe\xff", b"\xff\xfe\x00\x00"):
        return "utf-32"
    if b[:2] in (b"\xfe\xff", b"\xff\xfe"):
        return "utf-16"
    if b[:3] == b"\xef\xbb\xbf":
        return "utf-8-sig"
    if len(b) >= 4:
        if not b[0]:
            return "utf-16-be" if b[1] else "utf-32-be"
        if not b[1]:
            return "utf-16-le" if b[2] or b[3] else "utf-32-le"
    elif len(b) == 2:
        if not b[0]:
            return "utf-16-be"
        if not b[1]:
            return "utf-16-le"
    return "utf-8"


def _json_loads(s):
    import json
    return json.loads(s)


def loads(s):
    """json.loads(s) for a str, bytes or bytearray: the same value, or the same error."""
    given = s
    if _scan is None:
        return _json_loads(given)
    if isinstance(s, (bytes, bytearray)):
        s = s.decode(_encoding(s), "surrogatepass")
    elif not isinstance(s, str) or s.startswith("\ufeff"):
        return _json_loads(given)
    try:
        value, end = _scan(s, len(s) - len(s.lstrip(_WS)))
    except StopIteration:   # "Expecting value": json.loads says where
        return _json_loads(given)
    if end != len(s) and s[end:].lstrip(_WS):   # "Extra data"
        return _json_loads(given)
    return value
