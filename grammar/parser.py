"""Dockerfile text -> ``ast.Dockerfile``, the way BuildKit's parser reads it.

Two layers (research notes §7): a hand-written line reader handles what a context-free
grammar cannot — parser directives, the escape character they select, continuation
lines, comments and blank lines inside them, heredoc bodies, BOM and CRLF — and emits one
logical line per instruction with its line range. ``dockerfile.lark`` then splits every
logical line into keyword, flags and rest in one LALR pass, and the shapers below turn
the rest into the instruction's values (exec/JSON form with BuildKit's fallback, ENV/LABEL
pairs, HEALTHCHECK type, ONBUILD's inner instruction).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import ast
from .errors import DockerfileError, ExpansionError, with_suggestion

_DIRECTIVE_RE = re.compile(r"^([a-zA-Z][a-zA-Z0-9]*)[ \t\n\f\r]*=[ \t\n\f\r]*(.+?)[ \t\n\f\r]*\Z")
_DIRECTIVES = ("syntax", "escape", "check")
_HEREDOC_RE = re.compile(r"^(\d*)<<(-?)[ \t\n\f\r]*([^<]*)\Z")
_WS_SPLIT = re.compile(r"[\t\v\f\r ]+")
_HEREDOC_KEYWORDS = frozenset(("RUN", "COPY", "ADD"))
_MAX_LINE = 65535

_parsers: dict[str, object] = {}


def _lark(escape: str):
    """The compiled line grammar for one escape char (built once per process)."""
    p = _parsers.get(escape)
    if p is None:
        import lark  # lazy: keeps `pybuild --version` fast

        text = (Path(__file__).with_name("dockerfile.lark")).read_text(encoding="utf-8")
        text = text.replace("@ESC@", re.escape(escape))
        p = lark.Lark(text, parser="lalr", lexer="contextual", cache=_cache_file(text, lark.__version__))
        _parsers[escape] = p
    return p


#: Where lark may keep its compiled LALR tables (a pickle); set by the caller that owns a
#: private cache dir (builder.parsecache). None: no cache, grammar/ does no I/O of its own.
CACHE_DIR: str | None = None


def _cache_file(grammar: str, version: str) -> str | bool:
    """The cache file for this grammar text and lark version, or False when there is no dir."""
    if not CACHE_DIR:
        return False
    import hashlib
    import os

    h = hashlib.sha256(f"{version}\0{grammar}".encode()).hexdigest()[:24]
    return os.path.join(CACHE_DIR, f"dockerfile-grammar-{h}.lark-cache")


@dataclass
class _Logical:
    """One logical line (continuations joined), its first and last line, its heredocs."""

    text: str
    start: int
    end: int
    heredocs: list[ast.Heredoc] = field(default_factory=list)


def _continuation_re(escape: str) -> re.Pattern:
    e = re.escape(escape)
    return re.compile(rf"([^{e}]){e}[ \t]*\Z|^{e}[ \t]*\Z")


def _trim_newline(s: str) -> str:
    return s.rstrip("\r\n")


def _lstrip(s: str) -> str:
    return s.lstrip("\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
                    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")


def _is_comment(s: str) -> bool:
    return _lstrip(s).startswith("#")


class _Reader:
    """Physical lines -> logical lines, directives, escape char, warnings."""

    def __init__(self, text: str, filename: str):
        self.filename = filename
        text = text.removeprefix("\ufeff")
        self._ends_nl = text.endswith("\n")
        self.lines = text.split("\n")
        if self.lines and self.lines[-1] == "":
            self.lines.pop()
        self.escape = "\\"
        self.cont = _continuation_re("\\")
        self.directives: dict[str, str] = {}
        self.directives_done = False
        self.warnings: list[str] = []

    def err(self, line: int, msg: str) -> DockerfileError:
        return DockerfileError(self.filename, line, msg)

    def _directive(self, line: str, lineno: int) -> bool:
        """Handle a possible parser directive; True if the line was one."""
        if self.directives_done:
            return False
        if not line.startswith("#"):
            self.directives_done = True
            return False
        m = _DIRECTIVE_RE.match(_lstrip(line[1:]))
        if not m or m.group(1).lower() not in _DIRECTIVES:
            self.directives_done = True
            return False
        key, value = m.group(1).lower(), m.group(2)
        if key in self.directives:
            raise self.err(lineno, f"only one {key} parser directive can be used")
        self.directives[key] = value
        if key == "escape":
            if value not in ("`", "\\"):
                raise self.err(lineno, f"invalid escape token '{value}' does not match ` or \\")
            self.escape = value
            self.cont = _continuation_re(value)
        return True

    def _trim_cont(self, s: str) -> tuple[str, bool]:
        m = self.cont.search(s)
        if m:
            return s[:m.start()] + (m.group(1) or ""), False
        return s, True

    def read(self) -> list[_Logical]:
        out: list[_Logical] = []
        lines = self.lines
        n = len(lines)
        i = 0
        while i < n:
            raw = lines[i]
            if len(raw) > _MAX_LINE:
                raise self.err(i + 1, f"dockerfile line greater than max allowed size of {_MAX_LINE}")
            i += 1
            start = i
            s = _lstrip(_trim_newline(raw))
            self._directive(s, start)
            if s.startswith("#"):
                continue
            s, eol = self._trim_cont(s)
            if eol and not s:
                continue
            buf = [s]
            empty_cont = False
            while not eol and i < n:
                raw = lines[i]
                i += 1
                if self.directives_done is False:
                    self._directive(_trim_newline(raw), i)
                if _is_comment(raw):
                    continue
                t = _trim_newline(raw)
                if not _lstrip(t):
                    empty_cont = True
                    continue
                t, eol = self._trim_cont(t)
                buf.append(t)
            text = "".join(buf).lstrip()
            if empty_cont:
                self.warnings.append(f"{self.filename}:{i}: Empty continuation line found in: {text}")
            logical = _Logical(text, start, i)
            if "<<" in text and self._may_have_heredoc(text):
                i = self._read_heredocs(logical, i)
            if text.strip():
                out.append(logical)
        return out

    def _may_have_heredoc(self, text: str) -> bool:
        words = text.split(None, 2)
        kw = words[0].upper() if words else ""
        if kw == "ONBUILD" and len(words) > 1:
            kw = words[1].upper()
            text = text.split(None, 1)[1]
        if kw not in _HEREDOC_KEYWORDS:
            return False
        if "[" not in text:  # cannot be exec form: skip splitting the line
            return True
        _, _, rest = _split_line(text, self.escape)
        return not _is_json_array(rest)

    def _read_heredocs(self, logical: _Logical, i: int) -> int:
        try:
            docs = heredocs_from_line(logical.text)
        except ExpansionError as e:
            raise self.err(logical.start, e.message) from None
        lines = self.lines
        for name, fd, expand, chomp in docs:
            body = []
            terminated = False
            while i < len(lines):
                raw = lines[i]
                i += 1
                cand = _trim_newline(raw)
                if chomp:
                    cand = cand.lstrip("\t")
                if cand == name:
                    terminated = True
                    break
                body.append(raw + "\n" if i < len(lines) or self._ends_nl else raw)
            if not terminated:
                raise self.err(logical.start, "unterminated heredoc")
            logical.heredocs.append(ast.Heredoc(name, "".join(body), expand, chomp, fd))
        logical.end = i
        return i


def parse_heredoc(word: str):
    """``(name, fd, expand, chomp)`` if ``word`` is a heredoc marker (``<<EOF``,
    ``3<<-'EOF'``), else None. Raises ExpansionError for an unterminated quote."""
    from .lexer import ShellLex

    m = _HEREDOC_RE.match(word)
    if not m:
        return None
    fd = int(m.group(1)) if m.group(1) else 0
    chomp = m.group(2) == "-"
    rest = m.group(3)
    if not rest:
        return None
    words = ShellLex("\\", skip_unset_env=True).process_words(rest, {})
    if len(words) != 1:
        return None
    raw = ShellLex("\\", skip_unset_env=True, raw_quotes=True).process_words(rest, {})
    if len(raw) != 1:
        raise ExpansionError(f"internal lexing of heredoc produced inconsistent results: {rest}")
    name = words[0]
    quotes = name.count("'") + name.count('"')
    raw_quotes = raw[0].count("'") + raw[0].count('"')
    return name, fd, quotes == raw_quotes, chomp


def heredocs_from_line(line: str) -> list[tuple[str, int, bool, bool]]:
    """Every heredoc marker on an instruction line, in order (BuildKit's heredocsFromLine)."""
    from .lexer import ShellLex

    try:
        words = ShellLex("\\", raw_quotes=True, raw_escapes=True, skip_unset_env=True).process_words(line, {})
    except ExpansionError:
        return []
    docs = []
    for w in words:
        h = parse_heredoc(w)
        if h is not None:
            docs.append(h)
    return docs


# ---------------------------------------------------------------- line splitting

def _split_line(text: str, escape: str) -> tuple[str, list[str], str]:
    """(keyword, flag words, rest) for one logical line, via the lark grammar."""
    tree = _lark(escape).parse(text + "\n")
    return _split_tree(tree.children[0], text, 0, escape)


def _split_tree(inst, doc: str, line_end_unused: int, escape: str) -> tuple[str, list[str], str]:
    toks = inst.children
    keyword = str(toks[0])
    flags: list[str] = []
    rest = ""
    for tok in toks[1:]:
        if tok.type == "FLAG":
            word = _unquote_flag(tok.value.lstrip(), escape)
            if word == "--":
                end = doc.find("\n", tok.end_pos)
                rest = doc[tok.end_pos:end if end >= 0 else len(doc)]
                break
            flags.append(word)
        else:
            rest = tok.value
    return keyword, flags, rest.strip()


def _unquote_flag(word: str, escape: str) -> str:
    """BuildKit's extractBuilderFlags word: quotes removed, escape char escapes the next char."""
    if "'" not in word and '"' not in word and escape not in word:
        return word
    out = []
    quote = ""
    i, n = 0, len(word)
    while i < n:
        ch = word[i]
        if quote:
            if ch == quote:
                quote = ""
            elif ch == escape:
                if i + 1 < n:
                    i += 1
                    out.append(word[i])
            else:
                out.append(ch)
        elif ch in ("'", '"'):
            quote = ch
        elif ch == escape:
            if i + 1 < n:
                i += 1
                out.append(word[i])
        else:
            out.append(ch)
        i += 1
    return "".join(out)


# ---------------------------------------------------------------- shapers

class _NotJSON(Exception):
    pass


class _NotStrings(ValueError):
    """Valid JSON array with a non-string element: a hard error, not a fallback."""


def _reject_constant(name):
    raise ValueError(name)


def _parse_json(rest: str) -> list[str]:
    """Exec form: the strings of a JSON array; _NotJSON when BuildKit would fall back."""
    rest = _lstrip(rest)
    if not rest.startswith("["):
        raise _NotJSON
    try:
        val = json.loads(rest, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise _NotJSON from None
    if not isinstance(val, list):
        raise _NotJSON
    for v in val:
        if not isinstance(v, str):
            raise _NotStrings("when using JSON array syntax, arrays must be comprised of strings only")
    return val


def _is_json_array(rest: str) -> bool:
    try:
        _parse_json(rest)
        return True
    except (_NotJSON, ValueError):
        return False


def parse_words(rest: str, escape: str) -> list[str]:
    """BuildKit's parseWords: split on whitespace, keeping quotes and escapes as written."""
    words: list[str] = []
    buf: list[str] = []
    blank_ok = False
    quote = ""
    in_word = False
    i, n = 0, len(rest)
    from .goquote import GO_SPACES
    while i < n:
        ch = rest[i]
        if not in_word:
            if ch in GO_SPACES:
                i += 1
                continue
            in_word = True
        if quote:
            if ch == quote:
                quote = ""
            elif ch == escape and quote != "'":
                if i + 1 == n:
                    i += 1
                    continue
                buf.append(ch)
                i += 1
                ch = rest[i]
            buf.append(ch)
            i += 1
            continue
        if ch in GO_SPACES:
            in_word = False
            if blank_ok or buf:
                words.append("".join(buf))
            buf = []
            blank_ok = False
            i += 1
            continue
        if ch in ("'", '"'):
            quote = ch
            blank_ok = True
        if ch == escape:
            if i + 1 == n:
                i += 1
                continue
            buf.append(ch)
            i += 1
            ch = rest[i]
        buf.append(ch)
        i += 1
    if in_word and (blank_ok or buf):
        words.append("".join(buf))
    return words


def _ws_split(rest: str) -> list[str]:
    if not rest:
        return []
    return _WS_SPLIT.split(rest)


def _maybe_json(rest: str) -> tuple[list[str], bool]:
    if not rest:
        return [], False
    try:
        return _parse_json(rest), True
    except _NotJSON:
        return [rest], False


def _maybe_json_list(rest: str) -> tuple[list[str], bool]:
    try:
        return _parse_json(rest), True
    except _NotJSON:
        return _ws_split(rest), False


def _name_val(rest: str, key: str, escape: str) -> tuple[list[str], list[ast.KeyValue]]:
    words = parse_words(rest, escape)
    if not words:
        return [], []
    if "=" not in words[0]:
        parts = _WS_SPLIT.split(rest, maxsplit=1)
        if len(parts) < 2:
            raise ValueError(f"{key} must have two arguments")
        return [parts[0], parts[1], ""], [ast.KeyValue(parts[0], parts[1], legacy=True)]
    args: list[str] = []
    pairs = []
    for w in words:
        if "=" not in w:
            from .goquote import go_quote
            raise ValueError(f"Syntax error - can't find = in {go_quote(w)}. Must be of the form: name=value")
        k, v = w.split("=", 1)
        args += [k, v, "="]
        pairs.append(ast.KeyValue(k, v))
    return args, pairs


def _command(args: list[str], is_json: bool) -> ast.Command:
    return ast.Command(is_json, tuple(args))


class _Builder:
    """Turns (keyword, flags, rest) into a typed instruction."""

    def __init__(self, filename: str, escape: str, strict: bool = True):
        self.filename = filename
        self.escape = escape
        self.strict = strict

    def build(self, keyword: str, flag_words: list[str], rest: str, original: str,
              start: int, end: int, heredocs: list[ast.Heredoc]) -> ast.Instruction:
        kw = keyword.upper()
        cls = ast.INSTRUCTIONS.get(kw)
        if cls is None and not self.strict:
            return ast.Unknown(line=start, end_line=end, keyword=keyword, original=original)
        if cls is None:
            msg = with_suggestion(f"unknown instruction: {keyword}", keyword, ast.INSTRUCTIONS)
            raise DockerfileError(self.filename, start, msg)
        flags = tuple(_flag(w) for w in flag_words)
        common = {"line": start, "end_line": end, "keyword": keyword, "flags": flags, "original": original}
        try:
            return self._shape(kw, cls, rest, common, heredocs)
        except ValueError as e:
            raise DockerfileError(self.filename, start, str(e)) from None

    def _shape(self, kw, cls, rest, common, heredocs):
        esc = self.escape
        if kw in ("RUN", "CMD", "ENTRYPOINT", "SHELL"):
            args, js = _maybe_json(rest)
            if kw == "SHELL":
                return cls(args=tuple(args), shell=tuple(args), exec_form=js, **common)
            extra = {"heredocs": tuple(heredocs)} if kw == "RUN" and not js else {}
            return cls(args=tuple(args), command=_command(args, js), **extra, **common)
        if kw in ("COPY", "ADD", "VOLUME"):
            args, js = _maybe_json_list(rest)
            if kw == "VOLUME":
                return cls(args=tuple(args), paths=tuple(args), exec_form=js, **common)
            return cls(args=tuple(args), sources=tuple(args[:-1]), dest=args[-1] if args else "",
                       exec_form=js, heredocs=tuple(heredocs) if not js else (), **common)
        if kw in ("ENV", "LABEL"):
            args, pairs = _name_val(rest, kw, esc)
            return cls(args=tuple(args), pairs=tuple(pairs), **common)
        if kw == "ARG":
            words = parse_words(rest, esc)
            pairs = []
            for w in words:
                k, eq, v = w.partition("=")
                pairs.append(ast.KeyValue(k, v if eq else None))
            return cls(args=tuple(words), pairs=tuple(pairs), **common)
        if kw in ("FROM", "EXPOSE"):
            args = _ws_split(rest)
            if kw == "EXPOSE":
                return cls(args=tuple(args), ports=tuple(args), **common)
            name = args[2].lower() if len(args) >= 3 and args[1].lower() == "as" else None
            return cls(args=tuple(args), image=args[0] if args else "", name=name, **common)
        if kw in ("MAINTAINER", "USER", "WORKDIR", "STOPSIGNAL"):
            args = (rest,) if rest else ()
            field_name = {"MAINTAINER": "maintainer", "USER": "user", "WORKDIR": "path",
                          "STOPSIGNAL": "signal"}[kw]
            return cls(args=args, **{field_name: rest}, **common)
        if kw == "HEALTHCHECK":
            return self._health(cls, rest, common)
        if kw == "ONBUILD":
            return self._onbuild(cls, rest, common, heredocs)
        raise AssertionError(kw)  # pragma: no cover - INSTRUCTIONS and shapers agree

    def _health(self, cls, rest, common):
        parts = re.split(r"(\s+)", rest, maxsplit=1) if rest else []
        if not parts or not parts[0]:
            return cls(args=(), kind="", command=None, **common)
        typ = parts[0]
        tail = parts[2] if len(parts) > 2 else ""
        args, js = _maybe_json(tail)
        command = _command(args, js) if typ.upper() == "CMD" and (args or js) else None
        return cls(args=(typ, *args), kind=typ.upper(), command=command, **common)

    def _onbuild(self, cls, rest, common, heredocs):
        """A chain (`ONBUILD ONBUILD ... RUN a`) is unrolled in a loop, not by recursion, so
        any length parses; validation then refuses the chain on its line, as BuildKit does."""
        chain = []  # (expression, common) of each ONBUILD, outermost first
        while True:
            if not rest:
                inner = cls(args=(), instruction=None, expression="", **common)
                break
            chain.append((rest, common))
            keyword, flags, inner_rest = _split_line(rest, self.escape)
            if keyword.upper() != "ONBUILD":
                inner = self.build(keyword, flags, inner_rest, rest, common["line"], common["end_line"],
                                   heredocs)
                break
            common = {**common, "keyword": keyword, "flags": tuple(_flag(w) for w in flags), "original": rest}
            rest = inner_rest
        for expression, c in reversed(chain):
            inner = cls(args=(), instruction=inner, expression=expression, **c)
        return inner


def _flag(word: str) -> ast.Flag:
    body = word.removeprefix("--")
    name, eq, value = body.partition("=")
    return ast.Flag(name, value if eq else None)


def _parse_doc(doc: str, escape: str, filename: str, logical: list[_Logical]):
    import lark

    try:
        return _lark(escape).parse(doc)
    except lark.exceptions.LarkError as e:  # the grammar accepts every logical line
        line = getattr(e, "line", 1) or 1
        where = logical[min(line, len(logical)) - 1].start
        raise DockerfileError(filename, where, f"cannot parse instruction: {e}") from None


def parse(text: str | bytes, filename: str = "Dockerfile", *, strict: bool = True) -> ast.Dockerfile:
    """Parse Dockerfile ``text``; raises ``DockerfileError`` with the line of the mistake.

    ``strict=False`` keeps unknown instructions as ``ast.Unknown`` (BuildKit's AST level,
    for tools and conformance) instead of raising ``unknown instruction``.

    Only the syntax level is checked here (as BuildKit's parser does); instruction
    arguments, flags and their values are checked by ``grammar.validate``.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    reader = _Reader(text, filename)
    logical = reader.read()
    if not logical:
        raise DockerfileError(filename, len(reader.lines) if reader.lines else 0, "file with no instructions")
    escape = reader.escape
    doc = "\n".join(ll.text for ll in logical) + "\n"
    tree = _parse_doc(doc, escape, filename, logical)
    builder = _Builder(filename, escape, strict)
    instructions = []
    for ll, inst in zip(logical, tree.children, strict=True):
        keyword, flags, rest = _split_tree(inst, doc, 0, escape)
        instructions.append(builder.build(keyword, flags, rest, ll.text, ll.start, ll.end, ll.heredocs))
    return ast.Dockerfile(dict(reader.directives), tuple(instructions), escape, filename,
                          tuple(reader.warnings))
