"""Go's ``filepath.Match`` patterns as regexes: the one glob compiler of pybuild.

COPY/ADD source wildcards match with it (``builder.context``) and ``.dockerignore`` checks
its patterns' syntax with it (moby/patternmatcher validates with ``filepath.Match`` before
adding its own ``**``). ``*`` and ``?`` never match ``/``; ``[^a-z]`` classes and ``\\``
escapes as in Go; a reversed range (``[b-a]``) is valid and matches nothing, as in Go.
"""

from __future__ import annotations

import re

_cache: dict[str, re.Pattern] = {}


def _class_char(pattern: str, i: int) -> tuple[str, int]:
    n = len(pattern)
    if i >= n or pattern[i] in "-]":
        raise ValueError(pattern)
    if pattern[i] == "\\":
        if i + 1 >= n:
            raise ValueError(pattern)
        return pattern[i + 1], i + 2
    return pattern[i], i + 1


def compile_match(pattern: str) -> re.Pattern:
    """The regex of a ``filepath.Match`` pattern (anchored); ValueError if it is malformed."""
    rx = _cache.get(pattern)
    if rx is not None:
        return rx
    out = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                raise ValueError(pattern)
            out.append(re.escape(pattern[i + 1]))
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            i += 1
            neg = i < n and pattern[i] == "^"
            if neg:
                i += 1
            items = []
            first = True
            while True:
                if i >= n:
                    raise ValueError(pattern)
                if pattern[i] == "]" and not first:
                    i += 1
                    break
                first = False
                lo, i = _class_char(pattern, i)
                if i < n and pattern[i] == "-":
                    hi, i = _class_char(pattern, i + 1)
                    if lo <= hi:  # Go accepts a reversed range; it matches nothing
                        items.append(re.escape(lo) + "-" + re.escape(hi))
                else:
                    items.append(re.escape(lo))
            if items:
                out.append("[" + ("^" if neg else "") + "".join(items) + "]")
            else:
                out.append("(?s:.)" if neg else "(?!)")
        else:
            out.append(re.escape(c))
            i += 1
    rx = re.compile("".join(out) + r"\Z", re.DOTALL)
    _cache[pattern] = rx
    return rx


def match(pattern: str, name: str) -> bool:
    """Go's ``filepath.Match(pattern, name)``; ValueError for a malformed pattern."""
    return compile_match(pattern).match(name) is not None
