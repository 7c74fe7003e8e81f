"""Go's text/template, the part `docker ... --format` users write, over JSON-like data.

`render(text, data, strict=())` parses and executes a template the way Go does for docker's
formatters: text and `{{ }}` actions with `{{-`/`-}}` trimming and `{{/* */}}` comments;
pipelines with `|`; fields `.A.B` (on `.`, `$` and `$var`); variables `$x := ...`; string
(interpreted and raw), number, bool and nil literals; `if`/`else if`/`else`, `range` (with
`$i, $v :=`, over lists and maps in key order) and `with`, each with `end`. Functions: Go's
and, or, not, len, index, slice, print, printf, println, eq, ne, lt, le, gt, ge, and docker's
json, join, split, lower, upper, title, pad, truncate. Values print as Go's fmt %v prints
them (`[a b]`, `map[k:v]`, `<no value>` for a missing map key, `<nil>`). A callable in the data
is a method: `{{.Label "k"}}` calls it with its arguments.

A template that does not parse, names an unknown function or fails while running raises
TemplateError with Go's message (`template: :1: function "foo" not defined`); `strict` names
the fields `.` has when it stands for a Go struct (docker's ps/images rows), so a misspelt
one fails as Go's "can't evaluate field" does instead of printing `<no value>`.
"""
from __future__ import annotations

import json


class TemplateError(Exception):
    pass


class _Missing:
    """A missing map key: prints `<no value>`, is false, and its own fields are missing too."""

    def __repr__(self) -> str:
        return "<no value>"


MISSING = _Missing()

# ------------------------------------------------------------------------------- lexing


def _split(text: str) -> list[tuple[str, str, int]]:
    """[(kind, value, line)]: kind "text" or "action" (the inside of {{ }}, trimmed markers
    applied to the neighbouring text)."""
    out: list[tuple[str, str, int]] = []
    i, n, line = 0, len(text), 1
    while i < n:
        j = text.find("{{", i)
        if j < 0:
            out.append(("text", text[i:], line))
            break
        out.append(("text", text[i:j], line))
        line += text.count("\n", i, j)
        k = j + 2
        if text.startswith(("- ", "-\t", "-\n"), k):
            out[-1] = ("text", out[-1][1].rstrip(" \t\r\n"), out[-1][2])
            k += 1
        end = _action_end(text, k, line)
        inner = text[k:end]
        after = end + 2
        if inner.endswith((" -", "\t-", "\n-")):
            inner = inner[:-1]
            while after < n and text[after] in " \t\r\n":
                after += 1
        out.append(("action", inner, line))
        line += text.count("\n", j, after)
        i = after
    return out


def _action_end(text: str, k: int, line: int) -> int:
    """Where the action starting at k ends ("}}" outside quotes)."""
    i, n = k, len(text)
    while i < n:
        c = text[i]
        if c in "\"'`":
            close = text.find(c, i + 1) if c == "`" else _close_quote(text, i)
            if close < 0:
                raise TemplateError(f"template: :{line}: unterminated quoted string")
            i = close + 1
            continue
        if text.startswith("}}", i):
            return i
        i += 1
    raise TemplateError(f"template: :{line}: unclosed action")


def _close_quote(text: str, i: int) -> int:
    q, j = text[i], i + 1
    while j < len(text):
        if text[j] == "\\":
            j += 2
            continue
        if text[j] == q:
            return j
        if text[j] == "\n":
            return -1
        j += 1
    return -1


_PUNCT = {"(", ")", "|", ",", "="}


def _tokens(src: str, line: int) -> list[tuple[str, object]]:
    """The words of one action: ("field", [names]) for .A.B, ("var", (name, [names])),
    ("ident", name), ("lit", value), ("punct", c), (":=", None)."""
    toks: list[tuple[str, object]] = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if c in " \t\r\n":
            i += 1
            continue
        if src.startswith(":=", i):
            toks.append((":=", None))
            i += 2
            continue
        if c in _PUNCT:
            toks.append(("punct", c))
            i += 1
            continue
        if c == '"':
            j = _close_quote(src, i)
            if j < 0:
                raise TemplateError(f"template: :{line}: unterminated quoted string")
            toks.append(("lit", _unquote(src[i + 1:j], src[i:j + 1], line)))
            i = j + 1
            continue
        if c == "`":
            j = src.find("`", i + 1)
            if j < 0:
                raise TemplateError(f"template: :{line}: unterminated raw quoted string")
            toks.append(("lit", src[i + 1:j]))
            i = j + 1
            continue
        if c == "'":
            j = _close_quote(src, i)
            if j < 0:
                raise TemplateError(f"template: :{line}: unterminated character constant")
            body = _unquote(src[i + 1:j], src[i:j + 1], line)
            if len(body) != 1:
                raise TemplateError(f"template: :{line}: malformed character constant: "
                                    f"{src[i:j + 1]}")
            toks.append(("lit", ord(body)))
            i = j + 1
            continue
        j = i + 1
        while j < n and src[j] not in " \t\r\n()|,=" and not src.startswith(":=", j):
            j += 1
        word = src[i:j]
        i = j
        if word == ".":
            toks.append(("field", []))
        elif word.startswith("."):
            toks.append(("field", _names(word[1:], line)))
        elif word.startswith("$"):
            name, _, rest = word.partition(".")
            toks.append(("var", (name, _names(rest, line) if rest else [])))
        elif word in ("true", "false"):
            toks.append(("lit", word == "true"))
        elif word == "nil":
            toks.append(("lit", None))
        elif word[0].isdigit() or (word[0] in "+-" and len(word) > 1):
            toks.append(("lit", _number(word, line)))
        elif word.replace("_", "").isalnum():
            toks.append(("ident", word))
        else:
            raise TemplateError(f"template: :{line}: unexpected {word!r} in command")
    return toks


_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
            "\\": "\\", "'": "'", '"': '"'}


def _unquote(body: str, quoted: str, line: int) -> str:
    """Go's strconv.Unquote of a string or character literal's inside: the escapes a, b, f,
    n, r, t, v, backslash, quotes, xHH, ooo (octal), uHHHH and UHHHHHHHH after a backslash;
    anything else is Go's syntax error."""
    out, i, n = [], 0, len(body)
    try:
        while i < n:
            c = body[i]
            if c != "\\":
                out.append(c)
                i += 1
                continue
            e = body[i + 1]
            if e in _ESCAPES:
                out.append(_ESCAPES[e])
                i += 2
            elif e in "xuU":
                width = {"x": 2, "u": 4, "U": 8}[e]
                digits = body[i + 2:i + 2 + width]
                if len(digits) != width:
                    raise ValueError
                code = int(digits, 16)
                out.append(chr(code) if e != "x" else bytes([code]).decode("latin-1"))
                i += 2 + width
            elif e in "01234567":
                out.append(chr(int(body[i + 1:i + 4], 8)))
                i += 4
            else:
                raise ValueError
    except (ValueError, IndexError, OverflowError):
        raise TemplateError(f"template: :{line}: invalid syntax: {quoted}") from None
    return "".join(out)


def _names(chain: str, line: int) -> list[str]:
    names = chain.split(".")
    if not all(p and p.replace("_", "").isalnum() for p in names):
        raise TemplateError(f"template: :{line}: bad character in field .{chain}")
    return names


def _number(word: str, line: int):
    try:
        return int(word, 0)
    except ValueError:
        try:
            return float(word)
        except ValueError:
            raise TemplateError(f"template: :{line}: bad number syntax: {word!r}") from None

# ------------------------------------------------------------------------------- parsing


class _Pipe:
    def __init__(self, decl: list[str], cmds: list[list], line: int, assign: bool = False):
        self.decl, self.cmds, self.line, self.assign = decl, cmds, line, assign


def _pipeline(toks: list, line: int, allow_decl: bool = True) -> _Pipe:
    decl: list[str] = []
    assign = False
    if allow_decl:
        # $x := ... ; $i, $v := ... ; $x = ...
        k = 0
        names = []
        while k < len(toks) and toks[k][0] == "var" and not toks[k][1][1]:
            names.append(toks[k][1][0])
            if k + 1 < len(toks) and toks[k + 1] == ("punct", ","):
                k += 2
                continue
            k += 1
            break
        if names and k < len(toks) and (toks[k][0] == ":=" or toks[k] == ("punct", "=")):
            decl, assign = names, toks[k] == ("punct", "=")
            toks = toks[k + 1:]
    cmds: list[list] = [[]]
    i = 0
    while i < len(toks):
        kind, val = toks[i]
        if (kind, val) == ("punct", "|"):
            if not cmds[-1]:
                raise TemplateError(f"template: :{line}: missing command")
            cmds.append([])
            i += 1
            continue
        if (kind, val) == ("punct", "("):
            depth, j = 1, i + 1
            while j < len(toks) and depth:
                if toks[j] == ("punct", "("):
                    depth += 1
                elif toks[j] == ("punct", ")"):
                    depth -= 1
                j += 1
            if depth:
                raise TemplateError(f"template: :{line}: unclosed left paren")
            sub = _pipeline(toks[i + 1:j - 1], line, allow_decl=False)
            chain: list[str] = []
            if j < len(toks) and toks[j][0] == "field" and toks[j][1]:
                chain = toks[j][1]
                j += 1
            cmds[-1].append(("pipe", (sub, chain)))
            i = j
            continue
        if kind in ("punct", ":="):
            raise TemplateError(f"template: :{line}: unexpected {val or ':='!r} in operand")
        cmds[-1].append((kind, val))
        i += 1
    if not cmds[-1]:
        raise TemplateError(f"template: :{line}: missing value for command")
    return _Pipe(decl, cmds, line, assign)


def parse(text: str) -> list:
    """The template's node list: ("text", s), ("action", pipe), (if|range|with, pipe, body,
    else-body)."""
    pieces = _split(text)
    pos = 0

    def nodes_until(stop: tuple[str, ...]) -> tuple[list, str, list]:
        """Nodes up to one of the `stop` words (end/else): (nodes, word, its other tokens)."""
        nonlocal pos
        nodes: list = []
        while pos < len(pieces):
            kind, src, line = pieces[pos]
            pos += 1
            if kind == "text":
                if src:
                    nodes.append(("text", src))
                continue
            s = src.strip()
            if s.startswith("/*"):
                if not s.endswith("*/"):
                    raise TemplateError(f"template: :{line}: unclosed comment")
                continue
            toks = _tokens(s, line)
            if not toks:
                raise TemplateError(f"template: :{line}: missing value for command")
            word = toks[0][1] if toks[0][0] == "ident" else None
            if word in ("end", "else"):
                if word not in stop:
                    raise TemplateError(f"template: :{line}: unexpected {{{{{word}}}}}")
                return nodes, word, toks[1:]
            if word in ("if", "range", "with"):
                nodes.append(control(word, _pipeline(toks[1:], line), line))
            elif word in ("define", "template", "block", "break", "continue"):
                raise TemplateError(f"template: :{line}: {{{{{word}}}}} is not supported by pybuild")
            else:
                nodes.append(("action", _pipeline(toks, line)))
        if stop:
            raise TemplateError(f"template: :{pieces[-1][2] if pieces else 1}: unexpected EOF")
        return nodes, "", []

    def control(word: str, pipe: _Pipe, line: int) -> tuple:
        body, ended, rest = nodes_until(("end", "else"))
        other: list = []
        if ended == "else":
            if word == "if" and rest and rest[0] == ("ident", "if"):
                # {{else if X}}: an if in the else branch that shares this {{end}}
                other = [control("if", _pipeline(rest[1:], line), line)]
            elif rest:
                raise TemplateError(f"template: :{line}: unexpected {_word(rest[0])!r} after else")
            else:
                other, _, _ = nodes_until(("end",))
        return (word, pipe, body, other)

    nodes, _, _ = nodes_until(())
    return nodes


def _word(tok: tuple) -> str:
    """A token as its source word, for error lines."""
    kind, val = tok
    if kind == "field":
        return "." + ".".join(val)
    if kind == "var":
        return val[0] + "".join("." + p for p in val[1])
    if kind == "lit":
        return json.dumps(val) if isinstance(val, str) else go_str(val)
    return ":=" if kind == ":=" else str(val)

# ------------------------------------------------------------------------------- values


def go_str(v) -> str:
    """Go's fmt %v of a JSON-like value."""
    if isinstance(v, str):
        return v
    if v is MISSING:
        return "<no value>"
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return _go_float(v)
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(go_str(x) for x in v) + "]"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{go_str(x)}" for k, x in sorted(v.items())) + "]"
    return str(v)


def _go_float(f: float) -> str:
    """strconv.FormatFloat(f, 'g', -1, 64): the shortest digits, %e from an exponent of 21."""
    if f != f:
        return "NaN"
    if f in (float("inf"), float("-inf")):
        return "+Inf" if f > 0 else "-Inf"
    if f == int(f) and abs(f) < 1e21:
        return str(int(f))
    r = repr(f)
    if "e" in r:
        mant, _, exp = r.partition("e")
        e = int(exp)
        return f"{mant}e{'-' if e < 0 else '+'}{abs(e):02d}"
    return r


def truth(v) -> bool:
    """Go template truth: false, 0, nil, empty string/list/map (and a missing key) are false."""
    if v is MISSING or v is None:
        return False
    if isinstance(v, (bool, int, float, str, list, tuple, dict)):
        return bool(v)
    return True


def _field(v, names: list[str], line: int, strict, at: str):
    """`strict`: (the struct, its fields, its Go type, whether a missing map key is an error)."""
    for i, name in enumerate(names):
        if isinstance(v, dict):
            if strict[1] is not None and i == 0 and v is strict[0] and name not in strict[1]:
                raise TemplateError(f'template: :{line}: executing "" at <{at}>: can\'t evaluate '
                                    f"field {name} in type {strict[2]}")
            if name not in v and strict[3]:
                raise TemplateError(f'template: :{line}: executing "" at <{at}>: map has no '
                                    f'entry for key "{name}"')
            v = v.get(name, MISSING)
        elif v is MISSING or v is None:
            return MISSING
        else:
            raise TemplateError(f'template: :{line}: executing "" at <{at}>: can\'t evaluate '
                                f"field {name} in type {_go_type(v)}")
    return v


def _go_type(v) -> str:
    return {str: "string", bool: "bool", int: "int", float: "float64", list: "[]interface {}"}.get(
        type(v), "interface {}")

# ------------------------------------------------------------------------------- functions


def _index(item, *keys):
    for k in keys:
        if isinstance(item, dict):
            item = item.get(k, MISSING) if isinstance(k, str) else MISSING
        elif isinstance(item, (list, tuple, str)):
            if not isinstance(k, int) or isinstance(k, bool):
                raise TemplateError(f"cannot index slice/array with type {_go_type(k)}")
            if not 0 <= k < len(item):
                raise TemplateError(f"index out of range: {k}")
            item = item[k]
        elif item is MISSING or item is None:
            raise TemplateError("index of untyped nil")
        else:
            raise TemplateError(f"can't index item of type {_go_type(item)}")
    return item


def _len(v):
    if isinstance(v, (str, list, tuple, dict)):
        return len(v)
    raise TemplateError(f"len of type {_go_type(v)}")


def _slice(v, *ix):
    if not isinstance(v, (str, list, tuple)):
        raise TemplateError(f"can't slice item of type {_go_type(v)}")
    a = ix[0] if ix else 0
    b = ix[1] if len(ix) > 1 else len(v)
    if not 0 <= a <= b <= len(v):
        raise TemplateError(f"slice index out of range: {a}:{b}")
    return v[a:b]


def _cmp(op):
    def f(a, *bs):
        if op == "eq":
            if not bs:
                raise TemplateError("missing argument for comparison")
            return any(_basic(a) == _basic(b) for b in bs)
        b = bs[0] if bs else None
        a, b = _basic(a), _basic(b)
        if type(a) is not type(b) and not (isinstance(a, (int, float)) and isinstance(b, (int, float))):
            raise TemplateError("incompatible types for comparison")
        return {"ne": a != b, "lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b}[op]
    return f


def _basic(v):
    if isinstance(v, (dict, list, tuple)) or v is MISSING:
        raise TemplateError("invalid type for comparison")
    return v


def _printf(fmt, *args):
    if not isinstance(fmt, str):
        raise TemplateError("printf: the format must be a string")
    out, i, a = [], 0, 0
    while i < len(fmt):
        c = fmt[i]
        if c != "%":
            out.append(c)
            i += 1
            continue
        j = i + 1
        while j < len(fmt) and fmt[j] in "-+# 0123456789.":
            j += 1
        if j >= len(fmt):
            out.append("%!(NOVERB)")
            break
        flags, verb = fmt[i + 1:j], fmt[j]
        i = j + 1
        if verb == "%":
            out.append("%")
            continue
        if a >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        v = args[a]
        a += 1
        if verb in "sv":
            out.append(("%" + flags + "s") % go_str(v))
        elif verb == "q":
            out.append(("%" + flags + "s") % json.dumps(go_str(v), ensure_ascii=False))
        elif ((verb in "dxXo" and isinstance(v, int))
              or (verb in "feEgG" and isinstance(v, (int, float)))):
            out.append(("%" + flags + verb) % v)
        elif verb == "t" and isinstance(v, bool):
            out.append(go_str(v))
        else:
            out.append(f"%!{verb}({_go_type(v)}={go_str(v)})")
    if a < len(args):
        out.append("%!(EXTRA " + ", ".join(f"{_go_type(x)}={go_str(x)}" for x in args[a:]) + ")")
    return "".join(out)


def _print(*args):
    # Go's Sprint: spaces between operands when neither is a string
    out = []
    for i, v in enumerate(args):
        if i and not isinstance(v, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(go_str(v))
    return "".join(out)


def _json(v):
    if v is MISSING:
        return "null"
    if isinstance(v, dict):         # a struct's methods are not in its JSON
        v = {k: x for k, x in v.items() if not callable(x)}
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


def _s(v) -> str:
    if not isinstance(v, str):
        raise TemplateError(f"wrong type for value; expected string; got {_go_type(v)}")
    return v

FUNCS = {
    "and": None, "or": None,             # short-circuit: evaluated in _call
    "not": lambda v: not truth(v),
    "len": _len, "index": _index, "slice": _slice,
    "print": _print, "printf": _printf, "println": lambda *a: " ".join(go_str(x) for x in a) + "\n",
    "eq": _cmp("eq"), "ne": _cmp("ne"), "lt": _cmp("lt"), "le": _cmp("le"), "gt": _cmp("gt"),
    "ge": _cmp("ge"),
    "json": _json,
    "join": lambda items, sep: _s(sep).join(go_str(x) for x in (items or [])),
    "split": lambda s, sep: _s(s).split(_s(sep)),
    "lower": lambda s: _s(s).lower(), "upper": lambda s: _s(s).upper(),
    "title": lambda s: " ".join(w[:1].upper() + w[1:] for w in _s(s).split(" ")),
    "pad": lambda s, left, right: " " * left + _s(s) + " " * right,
    "truncate": lambda s, n: _s(s)[:n],
}

# ------------------------------------------------------------------------------- execution


def _exec(nodes: list, dot, scope: list[dict], out: list[str], strict) -> None:
    for node in nodes:
        kind = node[0]
        if kind == "text":
            out.append(node[1])
        elif kind == "action":
            pipe = node[1]
            v = _run(pipe, dot, scope, strict)
            if not pipe.decl:
                out.append(go_str(v))
        elif kind == "if":
            _, pipe, body, other = node
            scope.append({})
            try:
                branch = body if truth(_run(pipe, dot, scope, strict)) else other
                _exec(branch, dot, scope, out, strict)
            finally:
                scope.pop()
        elif kind == "with":
            _, pipe, body, other = node
            scope.append({})
            try:
                v = _run(pipe, dot, scope, strict)
                if truth(v):
                    _exec(body, v, scope, out, strict)
                else:
                    _exec(other, dot, scope, out, strict)
            finally:
                scope.pop()
        elif kind == "range":
            _, pipe, body, other = node
            scope.append({})
            try:
                v = _run(pipe, dot, scope, strict, bind=False)
                if isinstance(v, dict):
                    items = [(k, v[k]) for k in sorted(v)]
                elif isinstance(v, (list, tuple)):
                    items = list(enumerate(v))
                elif v is None or v is MISSING:
                    items = []
                else:
                    raise TemplateError(f"template: :{pipe.line}: range can't iterate over "
                                        f"{go_str(v)}")
                for k, x in items:
                    if len(pipe.decl) == 1:
                        scope[-1][pipe.decl[0]] = x
                    elif len(pipe.decl) == 2:
                        scope[-1][pipe.decl[0]], scope[-1][pipe.decl[1]] = k, x
                    _exec(body, x, scope, out, strict)
                if not items:
                    _exec(other, dot, scope, out, strict)
            finally:
                scope.pop()


def _lookup_var(name: str, scope: list[dict], line: int):
    for frame in reversed(scope):
        if name in frame:
            return frame[name]
    raise TemplateError(f"template: :{line}: undefined variable: {name}")


def _run(pipe: _Pipe, dot, scope: list[dict], strict, bind: bool = True):
    v = None
    first = True
    for cmd in pipe.cmds:
        v = _command(cmd, dot, scope, strict, pipe.line, None if first else (v,))
        first = False
    if pipe.decl and bind:
        if pipe.assign:
            for frame in reversed(scope):
                if pipe.decl[0] in frame:
                    frame[pipe.decl[0]] = v
                    break
            else:
                raise TemplateError(f"template: :{pipe.line}: undefined variable: {pipe.decl[0]}")
        else:
            scope[-1][pipe.decl[0]] = v
    return v


def _operand(op, dot, scope, strict, line):
    kind, val = op
    if kind == "lit":
        return val
    if kind == "field":
        return _field(dot, val, line, strict, "." + ".".join(val))
    if kind == "var":
        name, chain = val
        base = _lookup_var(name, scope, line)
        return _field(base, chain, line, (None, None, "", strict[3]),
                      name + "".join("." + p for p in chain))
    if kind == "pipe":
        sub, chain = val
        return _field(_run(sub, dot, scope, strict), chain, line, (None, None, "", strict[3]),
                      "." + ".".join(chain))
    if kind == "ident":
        if val not in FUNCS:
            raise TemplateError(f'template: :{line}: function "{val}" not defined')
        return _call(val, [], dot, scope, strict, line)
    raise TemplateError(f"template: :{line}: unexpected {val!r}")


def _command(cmd: list, dot, scope, strict, line, piped):
    head = cmd[0]
    if head[0] == "ident":
        name = head[1]
        if name not in FUNCS:
            raise TemplateError(f'template: :{line}: function "{name}" not defined')
        args = list(cmd[1:])
        extra = list(piped) if piped else []
        return _call(name, args, dot, scope, strict, line, extra)
    if head[0] in ("field", "var") and (len(cmd) > 1 or piped):
        method = _operand(head, dot, scope, strict, line)
        if callable(method):        # a method with arguments: {{.Label "com.example"}}
            args = [_operand(a, dot, scope, strict, line) for a in cmd[1:]] + list(piped or ())
            return method(*args)
    if len(cmd) > 1 or piped:
        raise TemplateError(f"template: :{line}: can't give argument to non-function "
                            f"{_word(head)}")
    return _operand(head, dot, scope, strict, line)


def _call(name, args, dot, scope, strict, line, extra=()):
    if name in ("and", "or"):
        ops = [lambda a=a: _operand(a, dot, scope, strict, line) for a in args]
        ops += [lambda e=e: e for e in extra]
        if not ops:
            raise TemplateError(f"template: :{line}: wrong number of args for {name}: want at "
                                "least 1 got 0")
        v = None
        for get in ops:
            v = get()
            if truth(v) != (name == "and"):
                return v
        return v
    values = [_operand(a, dot, scope, strict, line) for a in args] + list(extra)
    try:
        return FUNCS[name](*values)
    except TemplateError as e:
        raise TemplateError(f'template: :{line}: executing "" at <{name}>: error calling '
                            f"{name}: {e}") from None
    except TypeError:
        raise TemplateError(f"template: :{line}: wrong number of args for {name}: got "
                            f"{len(values)}") from None


_PARSED: dict[str, list] = {}


def render(text: str, data, *, strict: tuple[set, str] | None = None,
           missing_key_error: bool = False) -> str:
    """Execute the template `text` on `data`. `strict` = (field names, Go type name) makes `.`
    a struct with only those fields; `missing_key_error` is Go's missingkey=error (what
    `docker inspect -f` uses on its JSON maps)."""
    try:
        nodes = _PARSED.get(text)
        if nodes is None:           # a listing renders one template per row: parse it once
            nodes = _PARSED[text] = parse(text)
        out: list[str] = []
        fields, type_name = strict if strict is not None else (None, "")
        _exec(nodes, data, [{"$": data}], out, (data, fields, type_name, missing_key_error))
    except RecursionError:
        raise TemplateError("template: exceeded maximum template depth") from None
    return "".join(out)
