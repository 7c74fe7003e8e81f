"""BuildKit's shell-word lexer: quote removal, escapes and ``$var``/``${var...}`` expansion.

The builder runs every expandable Dockerfile word through ``ShellLex`` with the environment
of that point (stage ENV + declared ARGs). Behaviour follows BuildKit's
``frontend/dockerfile/shell`` lexer, checked against its envVarTest/wordsTest tables:

- ``$name`` / ``${name}``; names are letters/digits/``_`` (Unicode letters too);
  ``$1``.. and ``$@ $* $# $? $- $$ $! $0`` are recognised and unset; a ``$`` with no name is literal.
- ``${v:-w} ${v-w} ${v:+w} ${v+w} ${v:?m} ${v?m}``, prefix/suffix strip ``# ## % %%``
  and replace ``/p/r`` ``//p/r`` with ``*``/``?`` patterns; words nest (``${a:-${b}}``) to any
  depth (``_drive`` keeps the nesting off the Python stack).
- single quotes are literal; in double quotes the escape char escapes only ``"`` ``$`` and
  itself; elsewhere it escapes any char; a trailing lone escape char is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .errors import ExpansionError
from .goquote import GO_SPACES, go_quote

_EOF = ""
_SPECIAL = frozenset("@*#?-$!0")


class _LexError(Exception):
    pass


def _is_name_char(ch: str) -> bool:
    return ch == "_" or ch.isalpha() or ch.isdecimal()


def _pattern_to_regex(pattern: str, greedy: bool, anchored: bool) -> re.Pattern:
    out = ["^"] if anchored else []
    star = ".*" if greedy else ".*?"
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            out.append(star)
        elif ch == "?":
            out.append(".")
        elif ch == "\\":
            nxt = pattern[i] if i < n else _EOF
            if nxt in ("}", "/"):
                continue
            i += 1
            if nxt not in ("*", "?", "\\"):
                raise _LexError(f"invalid escape '\\{nxt or '%!c(int32=-1)'}'")
            out.append("\\" + nxt)
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out))


def _reverse_pattern(p: str) -> str:
    chars = list(p)
    out = [""] * len(chars)
    last = len(chars) - 1
    i = 0
    while i <= last:
        tok = chars[i]
        j = last - i
        if tok == "\\" and i != last:
            out[j - 1] = tok
            out[j] = chars[i + 1]
            i += 2
        else:
            out[j] = tok
            i += 1
    return "".join(out)


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    try:
        rx = _pattern_to_regex(pattern, greedy, True)
    except _LexError as e:
        raise _LexError(f"invalid pattern ({pattern}) in substitution: {e}") from None
    m = rx.search(value)
    return value[m.end():] if m else value


def _trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    return _trim_prefix(_reverse_pattern(pattern), value[::-1], greedy)[::-1]


def _drive(gen):
    """Run a lexer generator to its value on an explicit stack.

    The lexer's methods nest as the word does (``${a:-${b:-...}}``, quotes in defaults); each
    is a generator that yields the generator of a nested call and is sent its value, so the
    nesting depth lives in this list, not in Python frames: 3,000 levels work as in BuildKit.
    """
    stack = [gen]
    value = None
    error: BaseException | None = None
    while stack:
        top = stack[-1]
        try:
            sub = top.throw(error) if error is not None else top.send(value)
        except StopIteration as done:
            stack.pop()
            value, error = done.value, None
            continue
        except BaseException as e:  # handed to the caller's frame, as a raise would be
            stack.pop()
            if not stack:
                raise
            value, error = None, e
            continue
        stack.append(sub)
        value, error = None, None
    return value


class _Words:
    __slots__ = ("buf", "in_word", "words")

    def __init__(self):
        self.buf: list[str] = []
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if ch in GO_SPACES:
            if self.in_word and self.buf:
                self.words.append("".join(self.buf))
                self.buf.clear()
                self.in_word = False
        else:
            self.buf.append(ch)
            self.in_word = True

    def add_raw_char(self, ch: str) -> None:
        self.buf.append(ch)
        self.in_word = True

    def add_string(self, s: str) -> None:
        for ch in s:
            self.add_char(ch)

    def add_raw_string(self, s: str) -> None:
        self.buf.append(s)
        self.in_word = True

    def get(self) -> list[str]:
        if self.buf:
            self.words.append("".join(self.buf))
            self.buf.clear()
            self.in_word = False
        return self.words


class ShellLex:
    """A BuildKit-compatible word lexer for one escape character (``\\`` or a backtick).

    The mode switches mirror BuildKit's and are used by the parser itself (heredoc
    detection): ``raw_quotes`` keeps quote characters, ``raw_escapes`` keeps escape
    characters, ``skip_unset_env`` leaves references to unset variables as written,
    ``skip_process_quotes`` treats quotes as ordinary characters. ``windows`` makes
    variable names case-insensitive.
    """

    def __init__(self, escape: str = "\\", *, raw_quotes: bool = False, raw_escapes: bool = False,
                 skip_unset_env: bool = False, skip_process_quotes: bool = False,
                 windows: bool = False):
        self.escape = escape
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.skip_unset_env = skip_unset_env
        self.skip_process_quotes = skip_process_quotes
        self.windows = windows

    def process_word(self, word: str, env: Mapping[str, str]) -> str:
        """Expand and unquote ``word`` into one string (ENV values, WORKDIR, COPY paths...)."""
        return _Run(self, word, env).run()[0]

    def process_words(self, word: str, env: Mapping[str, str]) -> list[str]:
        """Expand and unquote ``word``, splitting on unquoted whitespace (EXPOSE, heredoc
        detection); whitespace that comes from a variable's value also splits."""
        return _Run(self, word, env).run()[1]

    def process_word_with_matches(self, word: str, env: Mapping[str, str]):
        """``(result, matched, unmatched)``: the expansion plus the variable names that were
        set / unset when referenced (for "undefined variable" hints and ARG usage)."""
        r = _Run(self, word, env)
        result, _ = r.run()
        return result, r.matched, r.unmatched


class _Run:
    """One pass of the lexer over one word (state lives here, not on ShellLex)."""

    def __init__(self, lex: ShellLex, word: str, env: Mapping[str, str]):
        self.lex = lex
        self.src = word
        self.pos = 0
        self.env = env
        self.raw_escapes = lex.raw_escapes
        self.matched: set[str] = set()
        self.unmatched: set[str] = set()
        if lex.windows:
            self.env = {k.upper(): v for k, v in env.items()}

    def run(self) -> tuple[str, list[str]]:
        try:
            return _drive(self._stop_on(_EOF, self.raw_escapes))
        except _LexError as e:
            raise ExpansionError(f"failed to process {go_quote(self.src)}: {e}") from None

    # scanner primitives
    def _peek(self) -> str:
        return self.src[self.pos] if self.pos < len(self.src) else _EOF

    def _next(self) -> str:
        if self.pos < len(self.src):
            ch = self.src[self.pos]
            self.pos += 1
            return ch
        return _EOF

    def _get_env(self, name: str) -> tuple[str, bool]:
        key = name.upper() if self.lex.windows else name
        v = self.env.get(key)
        if v is not None:
            self.matched.add(name)
            return v, True
        self.unmatched.add(name)
        return "", False

    def _stop_on_closed(self, stop: str, raw_escapes: bool, missing: str) -> str:
        """`_stop_on` for a delimiter that must be there: running out of input is `missing`."""
        try:
            return (yield self._stop_on(stop, raw_escapes))[0]
        except _LexError:
            if self._peek() == _EOF:
                raise _LexError(missing) from None
            raise

    def _stop_on(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        saved = self.raw_escapes
        self.raw_escapes = raw_escapes
        try:
            return (yield from self._stop_on_inner(stop))
        finally:
            self.raw_escapes = saved

    def _stop_on_inner(self, stop: str) -> tuple[str, list[str]]:
        result: list[str] = []
        words = _Words()
        esc = self.lex.escape
        quotes = not self.lex.skip_process_quotes
        src = self.src
        n = len(src)
        while self.pos < n:
            ch = src[self.pos]
            if stop and ch == stop:
                self.pos += 1
                return "".join(result), words.get()
            if ch == "$":
                braced = src[self.pos + 1:self.pos + 2] == "{"
                tmp = (yield self._dollar()) if braced else self._plain_dollar()
                result.append(tmp)
                words.add_string(tmp)
            elif ch == "<":
                tmp = self._possible_heredoc()
                result.append(tmp)
                words.add_raw_string(tmp)
            elif quotes and ch == "'":
                tmp = self._single_quote()
                result.append(tmp)
                words.add_raw_string(tmp)
            elif quotes and ch == '"':
                tmp = yield self._double_quote()
                result.append(tmp)
                words.add_raw_string(tmp)
            else:
                self.pos += 1
                if ch == esc:
                    if self.raw_escapes:
                        words.add_raw_char(ch)
                        result.append(ch)
                    if self.pos >= n:
                        break
                    ch = src[self.pos]
                    self.pos += 1
                    words.add_raw_char(ch)
                else:
                    words.add_char(ch)
                result.append(ch)
        if stop:
            raise _LexError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.get()

    def _single_quote(self) -> str:
        out = []
        ch = self._next()
        if self.lex.raw_quotes:
            out.append(ch)
        while True:
            ch = self._next()
            if ch == _EOF:
                raise _LexError("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                if self.lex.raw_quotes:
                    out.append(ch)
                return "".join(out)
            out.append(ch)

    def _double_quote(self) -> str:
        out = []
        ch = self._next()
        if self.lex.raw_quotes:
            out.append(ch)
        esc = self.lex.escape
        while True:
            p = self._peek()
            if p == _EOF:
                raise _LexError("unexpected end of statement while looking for matching double-quote")
            if p == '"':
                ch = self._next()
                if self.lex.raw_quotes:
                    out.append(ch)
                return "".join(out)
            if p == "$":
                out.append((yield self._dollar()) if self.src[self.pos + 1:self.pos + 2] == "{"
                           else self._plain_dollar())
                continue
            ch = self._next()
            if ch == esc:
                if self.raw_escapes:
                    out.append(ch)
                nxt = self._peek()
                if nxt == _EOF:
                    continue
                if nxt in ('"', "$", esc):
                    ch = self._next()
            out.append(ch)

    def _name(self) -> str:
        name: list[str] = []
        while True:
            ch = self._peek()
            if ch == _EOF:
                break
            if not name and ch.isdecimal():
                while self._peek() != _EOF and self._peek().isdecimal():
                    name.append(self._next())
                return "".join(name)
            if not name and ch in _SPECIAL:
                return self._next()
            if not _is_name_char(ch):
                break
            name.append(self._next())
        return "".join(name)

    def _plain_dollar(self) -> str:
        """``$name`` (no brace): nothing nests, so a plain call, not a generator."""
        self._next()
        name = self._name()
        if not name:
            return "$"
        value, found = self._get_env(name)
        if not found and self.lex.skip_unset_env:
            return "$" + name
        return value

    def _dollar(self) -> str:
        """``${...}``: a generator (see ``_drive``), as its words nest."""
        self._next()
        self._next()
        p = self._peek()
        if p == _EOF:
            raise _LexError("syntax error: missing '}'")
        if p in ("{", "}", ":"):
            raise _LexError("syntax error: bad substitution")
        name = self._name()
        ch = self._next()
        if ch == _EOF:  # BuildKit says "unsupported modifier (\ufffd)"; this is clearer
            raise _LexError("syntax error: missing '}'")
        chs = ch
        null_is_unset = False
        if ch == "}":
            value, found = self._get_env(name)
            if not found and self.lex.skip_unset_env:
                return f"${{{name}}}"
            return value
        if ch == ":":
            null_is_unset = True
            ch = self._next()
            chs += ch
        if ch in ("+", "-", "?", "#", "%") or null_is_unset:
            raw = ch in ("#", "%")
            if null_is_unset and raw:
                raise _LexError(f"unsupported modifier ({chs}) in substitution")
            word = yield self._stop_on_closed("}", raw, "syntax error: missing '}'")
            value, found = self._get_env(name)
            if self.lex.skip_unset_env and not found:
                return f"${{{name}{chs}{word}}}"
            if ch == "-":
                return word if (not found or (null_is_unset and value == "")) else value
            if ch == "+":
                return "" if (not found or (null_is_unset and value == "")) else word
            if ch == "?":
                if not found:
                    raise _LexError(f"{name}: {word or 'is not allowed to be unset'}")
                if null_is_unset and value == "":
                    raise _LexError(f"{name}: {word or 'is not allowed to be empty'}")
                return value
            if ch in ("%", "#"):
                greedy = False
                if word and word[0] == ch:
                    greedy = True
                    word = word[1:]
                if ch == "%":
                    return _trim_suffix(word, value, greedy)
                return _trim_prefix(word, value, greedy)
            raise _LexError(f"unsupported modifier ({chs}) in substitution")
        if ch == "/":
            replace_all = self._peek() == "/"
            if replace_all:
                self._next()
            pattern = yield self._stop_on_closed("/", True, "syntax error: missing '/' in ${}")
            repl = yield self._stop_on_closed("}", True, "syntax error: missing '}'")
            value, found = self._get_env(name)
            if self.lex.skip_unset_env and not found:
                return f"${{{name}/{pattern}/{repl}}}"
            try:
                rx = _pattern_to_regex(pattern, True, False)
            except _LexError as e:
                raise _LexError(f"invalid pattern ({pattern}) in substitution: {e}") from None
            if replace_all:
                return rx.sub(lambda _m: repl, value)
            m = rx.search(value)
            if m:
                value = value[:m.start()] + repl + value[m.end():]
            return value
        raise _LexError(f"unsupported modifier ({chs}) in substitution")

    def _possible_heredoc(self) -> str:
        self._next()
        if self._peek() != "<":
            return "<"
        self._next()
        space = []
        while self._peek() in ("\t", "\r", " ") and self._peek() != _EOF:
            space.append(self._next())
        return "<<" + "".join(space)


def expand_heredoc(content: str, env: Mapping[str, str]) -> str:
    """An unquoted COPY/ADD heredoc body after expansion, as BuildKit's ``ExpandRaw`` makes it
    (dockerfile2llb ``dispatch``): a lexer with ``\\`` as escape whatever the ``escape``
    directive says, quote processing off: quotes stay as written, ``${v:-w}`` works, a ``\\``
    is dropped before any character (``\\$`` keeps a ``$``). RUN heredocs are left to the shell."""
    return ShellLex("\\", skip_process_quotes=True).process_word(content, env)
