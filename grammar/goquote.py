"""Go-compatible string quoting (``strconv.Quote`` / ``%q``), for BuildKit-identical output."""

from __future__ import annotations

_SIMPLE = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
           "\v": "\\v", "\\": "\\\\", '"': '\\"'}

#: Go's unicode.IsSpace set (Python's str.isspace is broader: it includes \x1c-\x1f).
GO_SPACES = frozenset("\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
                      "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")


def go_quote(s: str) -> str:
    """``s`` as Go's ``strconv.Quote`` prints it (printable non-ASCII kept literally)."""
    out = ['"']
    for ch in s:
        esc = _SIMPLE.get(ch)
        if esc is not None:
            out.append(esc)
        elif ch == " " or (ch.isprintable() and ch != "\ufffd") or ch == "\ufffd":
            out.append(ch)
        else:
            o = ord(ch)
            if o < 0x80:
                out.append(f"\\x{o:02x}")
            elif 0xD800 <= o <= 0xDFFF:
                out.append("\\ufffd" if o < 0xDC80 or o > 0xDCFF else f"\\x{o - 0xDC00:02x}")
            elif o < 0x10000:
                out.append(f"\\u{o:04x}")
            else:
                out.append(f"\\U{o:08x}")
    out.append('"')
    return "".join(out)


def go_quote_list(items) -> str:
    """``%q`` of a Go ``[]string``: ``["a" "b"]``."""
    return "[" + " ".join(go_quote(i) for i in items) + "]"
