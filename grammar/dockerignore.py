""".dockerignore reading and matching with BuildKit's (moby/patternmatcher) semantics.

Patterns are anchored at the context root (``*.log`` is top level only; ``**/*.log``
is everywhere), ``*``/``?`` never cross ``/``, ``**`` spans any number of directories,
a pattern that matches a directory also matches everything below it, ``!pattern``
re-includes, and the last matching pattern wins. The ``**`` handling and patternmatcher's
exact/prefix/suffix shortcuts are here; everything between ``**``s (``*``, ``?``, classes,
escapes) is compiled by ``grammar.gomatch`` in its ``patternmatcher`` mode.
"""

from __future__ import annotations

import re

from .errors import DockerfileError
from .gomatch import translate
from .gopath import clean as go_clean


class IgnoreError(DockerfileError):
    """A malformed .dockerignore pattern (reported against the ignore file)."""


def ignore_file_names(dockerfile: str = "Dockerfile") -> list[str]:
    """Ignore files to look for, best first: ``<Dockerfile path>.dockerignore`` then the
    context's ``.dockerignore`` (the builder reads the first that exists)."""
    return [f"{dockerfile}.dockerignore", ".dockerignore"]


def parse_ignore(text: str | bytes) -> list[str]:
    """The patterns of a .dockerignore file, normalised as BuildKit's ``ReadAll`` does:
    ``#`` comments only in column 0, blank lines skipped, spaces trimmed, paths cleaned,
    one leading ``/`` dropped, ``!`` kept as an exception marker."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = text.removeprefix("\ufeff")
    out = []
    for line in text.split("\n"):
        line = line.removesuffix("\r")
        if line.startswith("#"):
            continue
        pat = line.strip()
        if not pat:
            continue
        invert = pat.startswith("!")
        if invert:
            pat = pat[1:].strip()
        if pat:
            pat = go_clean(pat)
            if len(pat) > 1 and pat.startswith("/"):
                pat = pat[1:]
        out.append("!" + pat if invert else pat)
    return out


def _split_doublestar(p: str) -> list[str | None]:
    """``p`` as glob chunks with ``None`` for each ``**`` (a ``/`` right after it is eaten, as
    patternmatcher does). Escapes and classes are skipped whole, so ``\\**`` is no ``**``."""
    parts: list[str | None] = []
    chunk = []
    i, n = 0, len(p)
    while i < n:
        c = p[i]
        if c == "*" and p[i + 1:i + 2] == "*":
            if chunk:
                parts.append("".join(chunk))
                chunk = []
            parts.append(None)
            i += 3 if p[i + 2:i + 3] == "/" else 2
            continue
        j = i + 2 if c == "\\" else i + 1
        if c == "[":  # a checked pattern: the class ends at the first unescaped ] after one char
            j = i + 2 if p[i + 1:i + 2] != "^" else i + 3
            while p[j] != "]":
                j += 2 if p[j] == "\\" else 1
            j += 1
        chunk.append(p[i:j])
        i = j
    if chunk:
        parts.append("".join(chunk))
    return parts


class _Pattern:
    """One pattern as patternmatcher compiles it: exact, ``prefix**``, ``**suffix`` or a regex
    whose ``**`` is ours and whose glob chunks are ``grammar.gomatch``'s."""

    __slots__ = ("exclusion", "kind", "ndirs", "regex", "text")

    def __init__(self, text: str, exclusion: bool):
        self.text = text
        self.exclusion = exclusion
        self.ndirs = len(text.split("/"))
        self.regex: re.Pattern | None = None
        self.kind = self._compile(text)

    def _compile(self, p: str) -> str:
        translate(p, patternmatcher=True)  # syntax first: ValueError with the reason
        parts = _split_doublestar(p)
        globs = [c for c in parts if c is not None]
        # patternmatcher's rule (a `]` too makes it a regex: `**]` is no suffix match)
        literal = not any(ch in c for c in globs for ch in "*?[]\\")
        stars = parts.count(None)
        if not stars and literal:
            return "exact"
        if literal and stars == 1 and parts[0] is None:
            return "suffix"  # also a lone **: the empty suffix
        if literal and stars == 1 and parts[-1] is None:
            return "prefix"
        out = []
        for k, c in enumerate(parts):
            if c is not None:
                out.append(translate(c, patternmatcher=True))
            else:
                out.append(".*" if k == len(parts) - 1 else "(.*/)?")
        self.regex = re.compile("^" + "".join(out) + r"\Z")
        return "regex"

    def match(self, path: str) -> bool:
        kind = self.kind
        if kind == "exact":
            return path == self.text
        if kind == "prefix":
            return path.startswith(self.text[:-2])
        if kind == "suffix":
            suffix = self.text[2:]
            if path.endswith(suffix):
                return True
            return suffix.startswith("/") and path == suffix[1:]
        return self.regex.match(path) is not None


class IgnoreMatcher:
    """Compiled .dockerignore patterns. ``matches(relpath)`` is True when the path is
    excluded from the build context. Raises ``IgnoreError`` for a malformed pattern."""

    def __init__(self, patterns, filename: str = ".dockerignore"):
        self.patterns: list[_Pattern] = []
        self.has_exceptions = False
        for raw in patterns:
            p = raw.strip()
            if not p:
                continue
            p = go_clean(p)
            exclusion = p.startswith("!")
            if exclusion:
                if len(p) == 1:
                    raise IgnoreError(filename, 0, 'illegal exclusion pattern: "!"')
                p = p[1:]
                self.has_exceptions = True
            try:
                self.patterns.append(_Pattern(p, exclusion))
            except ValueError as e:
                raise IgnoreError(filename, 0, f"syntax error in pattern: {raw} ({e})") from None

    @staticmethod
    def _prepare(path: str) -> str | None:
        path = go_clean(path)
        return None if path == "." else path

    def matches(self, path: str) -> bool:
        """True if ``path`` (``/``-separated, relative to the context) or any of its parent
        directories is excluded, after exceptions (last match wins)."""
        def any_parent(pat, parents):
            return any(pat.match("/".join(parents[: i + 1])) for i in range(len(parents)))
        return self._match(path, any_parent)

    def matches_legacy(self, path: str) -> bool:
        """patternmatcher's deprecated ``Matches``: only the ancestor at the pattern's own
        depth is tried. Kept for conformance with the upstream tables, not for builds."""
        def parent_at_depth(pat, parents):
            return pat.ndirs <= len(parents) and pat.match("/".join(parents[: pat.ndirs]))
        return self._match(path, parent_at_depth)

    def _match(self, path: str, parent_matches) -> bool:
        """Last match wins; `parent_matches(pat, parents)` says whether an ancestor counts."""
        path = self._prepare(path)
        if path is None:
            return False
        parent = path.rsplit("/", 1)[0] if "/" in path else "."
        parents = parent.split("/")
        matched = False
        for pat in self.patterns:
            if pat.exclusion != matched:
                continue
            if pat.match(path) or (parent != "." and parent_matches(pat, parents)):
                matched = not pat.exclusion
        return matched
