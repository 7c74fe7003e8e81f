"""docker's flag rules (spf13/pflag, as docker's cobra commands use it) for `run` and `create`.

argparse, with gettext, locale and re behind it, and the ~50 actions of run's flags were a sixth
of a `pybuild run`; a command here is a table of Flag rows read by one loop. pflag's forms:
`--flag value`, `--flag=value`, `-e K=V`, `-eK=V`, `-e=K=V`, bools grouped (`-dit`) with a value
flag last taking the rest of the group or the next word (`-itp80:80`, `-itp 80:80`), a bool's
`--rm=false` (Go's strconv.ParseBool words); `--` ends the flags and, as docker run's
SetInterspersed(false), so does the first positional: what follows is the command's, verbatim.
Errors are FlagError in pflag's and docker's words; the caller adds `See '... --help'.`.
No `re` here (start-up).
"""
from __future__ import annotations

KINDS = ("bool", "str", "append", "int", "choice")
_TYPE_WORD = {"bool": "", "str": "string", "append": "list", "int": "int", "choice": "string"}
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


class FlagError(Exception):
    """A command line the flags refuse: one line in docker's words."""


class Flag:
    """One flag: --long (and --aliases, -short), its kind and where its value goes (dest)."""

    __slots__ = ("long", "short", "aliases", "kind", "dest", "default", "help", "metavar",
                 "choices", "convert")

    def __init__(self, long: str, kind: str = "str", *, short: str = "", aliases=(),
                 dest: str | None = None, default=None, help: str = "", metavar: str = "",
                 choices=(), convert=None):
        if kind not in KINDS:
            raise ValueError(f"--{long}: unknown kind {kind!r}")
        self.long, self.short, self.aliases, self.kind = long, short, tuple(aliases), kind
        self.dest = dest or long.replace("-", "_")
        self.default = False if kind == "bool" and default is None else default
        self.help, self.metavar, self.choices, self.convert = help, metavar, tuple(choices), convert

    def name(self) -> str:
        """The flag as pflag's value errors name it: `-e, --env` or `--name`."""
        return f"-{self.short}, --{self.long}" if self.short else f"--{self.long}"


HELP = Flag("help", "bool", short="h", help="Print usage")
HELP_LONG_ONLY = Flag("help", "bool", help="Print usage")


class Command:
    """A command's flags and positionals: `path` is how errors and help name it ("pybuild run");
    `positionals` take a word each (all required), `rest` gets the words after them."""

    __slots__ = ("path", "usage", "description", "flags", "positionals", "rest", "defaults",
                 "_long", "_short")

    def __init__(self, path: str, usage: str, description: str, flags, positionals=(),
                 rest: str | None = None, defaults: dict | None = None):
        self.path, self.usage, self.description = path, usage, description
        # -h is help unless a flag takes it (docker run's -h is --hostname; cobra then leaves
        # help to --help alone)
        self.flags = (*flags, HELP if all(f.short != "h" for f in flags) else HELP_LONG_ONLY)
        self.positionals, self.rest, self.defaults = tuple(positionals), rest, dict(defaults or {})
        self._long: dict[str, Flag] = {}
        self._short: dict[str, Flag] = {}
        for f in self.flags:
            for long in (f.long, *f.aliases):
                if long in self._long:
                    raise ValueError(f"{path}: --{long} twice")
                self._long[long] = f
            if f.short:
                if f.short in self._short:
                    raise ValueError(f"{path}: -{f.short} twice")
                self._short[f.short] = f


class Args:
    """The parsed command line: an attribute per dest (argparse's Namespace, without argparse)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def __repr__(self) -> str:
        return "Args(" + ", ".join(f"{k}={v!r}" for k, v in sorted(vars(self).items())) + ")"

    def __eq__(self, other) -> bool:
        return isinstance(other, Args) and vars(self) == vars(other)


def parse(cmd: Command, argv: list[str]) -> Args:
    """argv (the words after the command's name) -> Args, every dest set (defaults included).
    --help (and -h, unless a flag has it) sets `help`: the caller prints usage() before any
    positional is required."""
    values = {f.dest: list(f.default or ()) if f.kind == "append" else f.default
              for f in cmd.flags}
    values.update(cmd.defaults)
    rest: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        i += 1
        if len(word) < 2 or word[0] != "-":
            rest = argv[i - 1:]       # the first positional ends the flags (SetInterspersed(false))
            break
        if word == "--":
            rest = argv[i:]
            break
        i = (_long if word[1] == "-" else _shorts)(cmd, word, argv, i, values)
    args = Args(**values)
    if args.help:
        return args
    if len(rest) < len(cmd.positionals):
        n = len(cmd.positionals)
        raise FlagError(f'"{cmd.path}" requires at least {n} argument{"s" if n > 1 else ""}.')
    for dest, word in zip(cmd.positionals, rest, strict=False):
        setattr(args, dest, word)
    if cmd.rest is not None:
        setattr(args, cmd.rest, rest[len(cmd.positionals):])
    elif len(rest) > len(cmd.positionals):
        n = len(cmd.positionals)
        raise FlagError(f'"{cmd.path}" accepts at most {n} argument{"s" if n != 1 else ""}.')
    return args


def _long(cmd: Command, word: str, argv: list[str], i: int, values: dict) -> int:
    """pflag's parseLongArg: --name, --name=value, --name value."""
    name, eq, value = word[2:].partition("=")
    if not name or name[0] == "-":
        raise FlagError(f"bad flag syntax: {word}")
    flag = cmd._long.get(name)
    if flag is None:
        raise FlagError(f"unknown flag: --{name}")
    if not eq:
        if flag.kind == "bool":
            value = "true"
        elif i < len(argv):
            value, i = argv[i], i + 1
        else:
            raise FlagError(f"flag needs an argument: {word}")
    _set(flag, value, values)
    return i


def _shorts(cmd: Command, word: str, argv: list[str], i: int, values: dict) -> int:
    """pflag's parseShortArg: a group of letters, each a bool, until one takes a value (the rest
    of the group, after an optional `=`, or else the next word)."""
    letters = word[1:]
    while letters:
        c, after = letters[0], letters[1:]
        flag = cmd._short.get(c)
        if flag is None:
            raise FlagError(f"unknown shorthand flag: {_go_char(c)} in -{letters}")
        if len(letters) > 2 and after[0] == "=":
            value, after = after[1:], ""
        elif flag.kind == "bool":
            value = "true"
        elif after:
            value, after = after, ""
        elif i < len(argv):
            value, i = argv[i], i + 1
        else:
            raise FlagError(f"flag needs an argument: {_go_char(c)} in -{letters}")
        _set(flag, value, values)
        letters = after
    return i


def _go_char(c: str) -> str:
    """Go's %q of a byte: 'z' (a quote or backslash escaped)."""
    return "'" + ("\\" + c if c in "'\\" else c) + "'"


def _go_quote(s: str) -> str:
    """Go's %q of a plain string, for the words of pflag's errors."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _set(flag: Flag, text: str, values: dict) -> None:
    kind = flag.kind
    try:
        if kind == "bool":
            value = parse_bool(text)
        elif kind == "int":
            value = parse_int(text)
        elif kind == "choice" and text not in flag.choices:
            *most, last = (_go_quote(c) for c in flag.choices)
            raise ValueError(f"must be one of {', '.join(most)} or {last}")
        else:
            value = flag.convert(text) if flag.convert else text
    except ValueError as e:
        raise FlagError(f"invalid argument {_go_quote(text)} for {_go_quote(flag.name())} flag: "
                        f"{e}") from None
    if kind == "append":
        values[flag.dest].append(value)
    else:
        values[flag.dest] = value


def parse_bool(text: str) -> bool:
    """Go's strconv.ParseBool, whose words a pflag bool takes after `=`."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"strconv.ParseBool: parsing {_go_quote(text)}: invalid syntax")


def parse_int(text: str) -> int:
    """Go's strconv.ParseInt(text, 0, 64), which a pflag int uses: a sign, then 0x/0o/0b or a
    leading 0 (octal) for the base, `_` between digits."""
    body = text[1:] if text[:1] in ("+", "-") else text
    base, digits = 10, body
    if body[:2].lower() in ("0x", "0o", "0b"):
        base, digits = {"x": 16, "o": 8, "b": 2}[body[1].lower()], body[2:]
    elif body[:1] == "0" and len(body) > 1:
        base, digits = 8, body[1:]
    allowed = "0123456789abcdefABCDEF"[:base + (base > 10) * (base - 10)] + "_"
    ok = bool(digits.strip("_")) and all(ch in allowed for ch in digits) \
        and "__" not in digits and not digits.endswith("_") \
        and (not digits.startswith("_") or base != 10)
    if not ok:
        raise ValueError(f"strconv.ParseInt: parsing {_go_quote(text)}: invalid syntax")
    value = int(digits.replace("_", ""), base)
    value = -value if text[0] == "-" else value
    if not -(1 << 63) <= value < 1 << 63:
        raise ValueError(f"strconv.ParseInt: parsing {_go_quote(text)}: value out of range")
    return value


def usage(cmd: Command, width: int = 80) -> str:
    """--help in docker's layout: the Usage line, the description, the Options in pflag's
    columns (`-x, --long type   help`, sorted by long name), help wrapped to width."""
    rows = []
    for f in sorted(cmd.flags, key=lambda f: f.long):
        left = (f"-{f.short}, " if f.short else "    ") + f"--{f.long}"
        word = f.metavar or _TYPE_WORD[f.kind]
        left += f" {word}" if word else ""
        text = f.help
        if f.aliases:
            text += " (also " + ", ".join(f"--{a}" for a in f.aliases) + ")"
        if f.kind in ("str", "choice") and isinstance(f.default, str) and f.default:
            text += f" (default {_go_quote(f.default)})"
        elif f.kind == "int" and f.default:
            text += f" (default {f.default})"
        rows.append((left, text))
    col = max(len(left) for left, _ in rows) + 3
    out = [f"Usage:  {cmd.path} {cmd.usage}", "", *_wrap(cmd.description, max(width - 1, 30)), "",
           "Options:"]
    for left, text in rows:
        lines = _wrap(text, max(width - 2 - col, 30))
        out.append(f"  {left.ljust(col)}{lines[0]}".rstrip())
        out += [" " * (col + 2) + ln for ln in lines[1:]]
    return "\n".join(out) + "\n"


def _wrap(text: str, width: int) -> list[str]:
    """Words into lines of at most width (a longer word alone on its line); textwrap imports re."""
    lines, line = [], ""
    for w in text.split():
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}" if line else w
    return [*lines, line]


def kv_map(items: list[str]) -> dict[str, str]:
    """docker's opts.ConvertKVStringsToMap: `K=V` words (a bare `K`: an empty value), the last
    of a key winning; what `volume create --label` and `network create --label` keep."""
    out = {}
    for kv in items:
        k, _, v = kv.partition("=")
        out[k] = v
    return out
