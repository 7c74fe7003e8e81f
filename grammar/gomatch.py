"""Go's ``filepath.Match`` patterns as regexes: the one glob compiler of pybuild.

COPY/ADD source wildcards match with it (``builder.context``); ``.dockerignore`` builds its
patterns from its fragments (``grammar.dockerignore`` adds patternmatcher's ``**``).
``*`` and ``?`` never match ``/``; ``[^a-z]`` classes and ``\\`` escapes as in Go; a reversed
range (``[b-a]``) is valid and matches nothing, as in Go.

``patternmatcher=True`` is for .dockerignore: moby/patternmatcher checks a pattern with
``filepath.Match`` but then matches with a Go regexp it builds by copying ``[``/``]`` and
``\\x`` into it, so RE2 reads what Go's glob would not: it rejects a reversed range and an
escaped letter it does not know (``syntax error in pattern`` at the first match), and reads
``\\d``, ``[[:alpha:]]``, ``[*]`` as a regexp. Those are refused here, with the reason.
"""

from __future__ import annotations

import re

_cache: dict[str, re.Pattern] = {}


def _escaped(pattern: str, i: int, strict: bool) -> str:
    """The character escaped by the ``\\`` at ``i``."""
    if i + 1 >= len(pattern):
        raise ValueError("trailing backslash")
    c = pattern[i + 1]
    if strict and (c.isalnum() or not c.isascii()):  # Go's regexp: only punctuation is literal
        raise ValueError(f"\\{c} is a regexp escape to BuildKit (or an invalid one), not {c!r}")
    return c


def _class_char(pattern: str, i: int, strict: bool) -> tuple[str, int]:
    n = len(pattern)
    if i >= n or pattern[i] in "-]":
        raise ValueError("bad character class")
    c = pattern[i]
    if c == "\\":
        return _escaped(pattern, i, strict), i + 2
    if strict and c in "*?":
        raise ValueError(f"an unescaped {c} in a character class is a regular expression to BuildKit")
    if strict and c == "[" and pattern[i + 1:i + 2] == ":":
        raise ValueError("[: in a character class is a POSIX class to BuildKit")
    return c, i + 1


def _class(pattern: str, i: int, strict: bool) -> tuple[str, int]:
    """The regex of the class opening at ``i`` (after the ``[``) and the index after it."""
    n = len(pattern)
    neg = i < n and pattern[i] == "^"
    if neg:
        i += 1
    items = []
    first = True
    while True:
        if i >= n:
            raise ValueError("unclosed character class")
        if pattern[i] == "]" and not first:
            i += 1
            break
        first = False
        lo, i = _class_char(pattern, i, strict)
        if i < n and pattern[i] == "-":
            hi, i = _class_char(pattern, i + 1, strict)
            if lo <= hi:
                items.append(re.escape(lo) + "-" + re.escape(hi))
            elif strict:
                raise ValueError(f"reversed range {lo}-{hi}: an invalid regexp class to BuildKit")
            # Go's filepath.Match accepts a reversed range; it matches nothing
        else:
            items.append(re.escape(lo))
    if items:
        return "[" + ("^" if neg else "") + "".join(items) + "]", i
    return ("(?s:.)" if neg else "(?!)"), i


def translate(pattern: str, *, patternmatcher: bool = False) -> str:
    """The unanchored regex of a ``filepath.Match`` pattern; ValueError (with the reason) if
    it is malformed, or, with ``patternmatcher``, if .dockerignore's regexp would differ."""
    out = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            out.append(re.escape(_escaped(pattern, i, patternmatcher)))
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            rx, i = _class(pattern, i + 1, patternmatcher)
            out.append(rx)
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def compile_match(pattern: str) -> re.Pattern:
    """The regex of a ``filepath.Match`` pattern (anchored); ValueError if it is malformed."""
    rx = _cache.get(pattern)
    if rx is None:
        rx = _cache[pattern] = re.compile(translate(pattern) + r"\Z", re.DOTALL)
    return rx


def match(pattern: str, name: str) -> bool:
    """Go's ``filepath.Match(pattern, name)``; ValueError for a malformed pattern."""
    return compile_match(pattern).match(name) is not None
