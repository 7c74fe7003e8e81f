"""Whole-Dockerfile checks that run before any build step (BuildKit's instruction-level errors).

``pybuild build`` calls ``validate(df, build_args)`` right after ``parse``: a bad flag on
line 40 then fails in milliseconds instead of after 39 steps. Everything reported here is a
``DockerfileError`` at the instruction's first line, worded like BuildKit's message.
Values that contain ``$`` are checked for substitution *syntax* only; their final value
depends on the environment at that point and is checked again by the builder.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from . import ast, mountspec, values
from .errors import FROM_EXPANSION, DockerfileError, ExpansionError, with_suggestion
from .goquote import go_quote
from .lexer import ShellLex

_STRING, _BOOL, _MULTI = "string", "bool", "multi"

FLAGS: dict[str, dict[str, str]] = {
    "FROM": {"platform": _STRING},
    "RUN": {"mount": _MULTI, "network": _STRING, "security": _STRING},
    "COPY": {"chown": _STRING, "from": _STRING, "chmod": _STRING, "link": _BOOL, "exclude": _MULTI,
             "parents": _BOOL},
    "ADD": {"chown": _STRING, "chmod": _STRING, "link": _BOOL, "keep-git-dir": _BOOL, "checksum": _STRING,
            "unpack": _BOOL, "exclude": _MULTI},
    "HEALTHCHECK": {"interval": _STRING, "timeout": _STRING, "start-period": _STRING,
                    "start-interval": _STRING, "retries": _STRING},
}

_STAGE_NAME = re.compile(r"^[a-z][a-z0-9\-_.]*\Z")
_CHMOD_SYMBOLIC = re.compile(r"^[ugoa]*(?:[-+=](?:[rwxXst]*|[ugo]))+\Z")


class _AlwaysSet(dict):
    """An environment where every variable is set (to "x"), so a syntax check reaches every
    modifier and pattern without tripping on ``${v:?}``."""

    def get(self, key, default=None):
        return "x"


_ALWAYS_SET = _AlwaysSet()


class _Checker:
    def __init__(self, df: ast.Dockerfile, build_args: Mapping[str, str]):
        self.df = df
        self.filename = df.filename
        self.build_args = build_args
        self.syntax_lex = ShellLex(df.escape)
        self.lex = ShellLex(df.escape)
        self.line = 0

    def fail(self, msg: str) -> DockerfileError:
        return DockerfileError(self.filename, self.line, msg)

    # ------------------------------------------------------------ helpers
    def value(self, parse, *args):
        """A ``grammar.values`` parser's result; its ValueError becomes this line's error."""
        try:
            return parse(*args)
        except ValueError as e:
            raise self.fail(str(e)) from None

    def word(self, value: str | None) -> None:
        """Check substitution syntax (``${a`` unterminated, ``${a:=b}``, bad quotes)."""
        if not value:
            return
        try:
            self.syntax_lex.process_word(value, _ALWAYS_SET)
        except ExpansionError as e:
            raise self.fail(e.message) from None

    def flags(self, inst: ast.Instruction, kind: str) -> dict[str, list[str | None]]:
        spec = FLAGS.get(kind, {})
        seen: dict[str, list[str | None]] = {}
        for f in inst.flags:
            typ = spec.get(f.name)
            if typ is None:
                msg = with_suggestion(f"unknown flag: --{f.name}", f.name, spec, case_sensitive=True)
                raise self.fail(msg.replace("did you mean ", "did you mean --"))
            if f.name in seen and typ != _MULTI:
                raise self.fail(f"duplicate flag specified: --{f.name}")
            if typ == _BOOL:
                if f.value is not None and f.value.lower() not in ("true", "false"):
                    if f.value == "":
                        raise self.fail(f"missing a value on flag: --{f.name}")
                    raise self.fail(f"expecting boolean value for flag --{f.name}, not: {f.value}")
            elif not f.value:
                raise self.fail(f"missing a value on flag: --{f.name}")
            seen.setdefault(f.name, []).append(f.value)
        return seen

    # ------------------------------------------------------------ whole file
    def run(self) -> None:
        stages: dict[str, int] = {}
        global_env = dict(self.build_args)
        in_stage = False
        for inst in self.df.instructions:
            self.line = inst.line
            if isinstance(inst, ast.Unknown):
                raise self.fail(f"unknown instruction: {inst.keyword}")
            if not in_stage and isinstance(inst, ast.Arg):
                self.instruction(inst)
                for kv in inst.pairs:
                    if kv.key not in self.build_args:
                        val = self.expand(kv.value, global_env) if kv.value is not None else None
                        if val is not None:
                            global_env[kv.key] = val
                continue
            if isinstance(inst, ast.From):
                in_stage = True
                self.from_(inst, stages, global_env)
                continue
            if not in_stage:
                raise self.fail("no build stage in current context")
            self.instruction(inst)
        if not in_stage:
            self.line = self.df.instructions[-1].line if self.df.instructions else 0
            raise self.fail("dockerfile contains no stages to build")

    def expand(self, word: str, env: Mapping[str, str]) -> str:
        try:
            return self.lex.process_word(word, env)
        except ExpansionError as e:
            raise self.fail(e.message) from None

    def from_(self, inst: ast.From, stages: dict[str, int], global_env: Mapping[str, str]) -> None:
        self.flags(inst, "FROM")
        args = inst.args
        if len(args) not in (1, 3) or (len(args) == 3 and args[1].lower() != "as"):
            raise self.fail("FROM requires either one or three arguments")
        platform = inst.flag("platform")
        if platform:
            self.expand(platform, global_env)
        if not self.expand(inst.image, global_env).strip():
            raise self.fail(f"base name ({inst.image}) should not be blank")
        if len(args) == 3:
            name = args[2]
            if not _STAGE_NAME.match(name.lower()):
                raise self.fail(f"invalid name for build stage: {go_quote(name)}, name can't start with a "
                                "number or contain symbols")
            if name.lower() in stages:
                raise self.fail(f"duplicate stage name {go_quote(name.lower())} (first defined on line "
                                f"{stages[name.lower()]})")
            stages[name.lower()] = inst.line

    # ------------------------------------------------------------ per instruction
    def instruction(self, inst: ast.Instruction, onbuild: bool = False) -> None:
        kind = inst.keyword.upper()  # not .kind: Healthcheck.kind is its NONE/CMD type
        method = getattr(self, "i_" + kind.lower(), None)
        if kind not in FLAGS or kind == "FROM":
            self.flags(inst, kind)
        if method is not None:
            method(inst)

    def i_from(self, inst: ast.From) -> None:  # only reached inside ONBUILD
        raise self.fail("FROM isn't allowed as an ONBUILD trigger")

    def i_run(self, inst: ast.Run) -> None:
        fl = self.flags(inst, "RUN")
        if not inst.args and not inst.command.exec_form:
            raise self.fail("RUN requires at least one argument")
        net = fl.get("network", [None])[-1]
        if net is not None and net not in ("default", "none", "host"):
            raise self.fail(f"invalid network mode {go_quote(net)}")
        sec = fl.get("security", [None])[-1]
        if sec is not None and sec not in ("sandbox", "insecure"):
            raise self.fail(f"security {go_quote(sec)} is not valid")
        for m in fl.get("mount", []):
            self.mount(m or "")

    def mount(self, spec: str) -> None:
        """The spec's syntax now; values holding ``$`` are checked when the builder expands them."""
        def later(value: str) -> str | None:
            self.word(value)
            return None if "$" in value else value

        self.value(mountspec.parse_mount, spec, later)

    def i_shell(self, inst: ast.Shell) -> None:
        if not inst.shell:
            raise self.fail("SHELL requires at least one argument")
        if not inst.exec_form:
            raise self.fail("SHELL requires the arguments to be in JSON form")

    def _pairs(self, inst, kind: str) -> None:
        if not inst.pairs:
            raise self.fail(f"{kind} requires at least one argument")
        for kv in inst.pairs:
            if not kv.key:
                raise self.fail(f"{kind} names can not be blank")
            self.word(kv.key)
            self.word(kv.value)

    def i_env(self, inst: ast.Env) -> None:
        self._pairs(inst, "ENV")

    def i_label(self, inst: ast.Label) -> None:
        self._pairs(inst, "LABEL")

    def i_arg(self, inst: ast.Arg) -> None:
        self._pairs(inst, "ARG")

    def _one(self, inst, kind: str, value: str, expand: bool = True) -> None:
        if len(inst.args) != 1:
            raise self.fail(f"{kind} requires exactly one argument")
        if expand:
            self.word(value)

    def i_maintainer(self, inst: ast.Maintainer) -> None:
        self._one(inst, "MAINTAINER", inst.maintainer, expand=False)

    def i_user(self, inst: ast.User) -> None:
        self._one(inst, "USER", inst.user)

    def i_workdir(self, inst: ast.Workdir) -> None:
        self._one(inst, "WORKDIR", inst.path)

    def i_stopsignal(self, inst: ast.StopSignal) -> None:
        self._one(inst, "STOPSIGNAL", inst.signal)
        if "$" not in inst.signal:
            self.value(values.stop_signal, inst.signal)

    def i_expose(self, inst: ast.Expose) -> None:
        if not inst.ports:
            raise self.fail("EXPOSE requires at least one argument")
        for p in inst.ports:
            self.word(p)
            if "$" not in p:
                self.value(values.expose_ports, p)

    def i_volume(self, inst: ast.Volume) -> None:
        if not inst.paths:
            raise self.fail("VOLUME requires at least one argument")
        for v in inst.paths:
            if not v.strip():
                raise self.fail("VOLUME specified can not be an empty string")
            self.word(v)

    def _copy(self, inst, kind: str) -> None:
        fl = self.flags(inst, kind)
        if len(inst.args) < 2:
            raise self.fail(f"{kind} requires at least two arguments, but only one was provided. "
                            "Destination could not be determined")
        if _heredoc_word(inst.dest):
            raise self.fail(f"{kind} cannot accept a heredoc as a destination")
        sources = [s for s in inst.sources if not _heredoc_word(s)] if not inst.exec_form else inst.sources
        for s in (*sources, inst.dest):
            self.word(s)
        for name in ("chown", "chmod", "checksum"):
            for v in fl.get(name, []):
                self.word(v)
        chmod = fl.get("chmod", [None])[-1]
        if chmod is not None and "$" not in chmod and not _valid_chmod(chmod):
            raise self.fail(f"invalid chmod parameter: '{chmod}'. "
                            "it should be octal string and between 0 and 07777")
        frm = fl.get("from", [None])[-1]
        if frm is not None and "$" in frm:
            raise self.fail(FROM_EXPANSION)
        for e in fl.get("exclude", []):
            from .dockerignore import IgnoreError, IgnoreMatcher
            try:
                IgnoreMatcher([e or ""], filename=self.filename)
            except IgnoreError as err:
                raise self.fail(f"invalid --exclude pattern: {err.message}") from None
        is_url = [bool(re.match(r"(?i)^(https?://|git@|git://)", s)) for s in sources]
        if kind == "COPY" and any(is_url):
            raise self.fail("source can't be a URL for COPY")
        checksum = fl.get("checksum", [None])[-1]
        if checksum is not None:
            if len(inst.sources) != 1:
                raise self.fail("checksum can't be specified for multiple sources")
            if not all(is_url):
                raise self.fail("checksum requires HTTP(S) or Git sources")

    def i_copy(self, inst: ast.Copy) -> None:
        self._copy(inst, "COPY")

    def i_add(self, inst: ast.Add) -> None:
        self._copy(inst, "ADD")

    def i_healthcheck(self, inst: ast.Healthcheck) -> None:
        if not inst.args:
            raise self.fail("HEALTHCHECK requires at least one argument")
        if inst.kind == "NONE":
            if len(inst.args) > 1:
                raise self.fail("HEALTHCHECK NONE takes no arguments")
            return
        fl = self.flags(inst, "HEALTHCHECK")
        if inst.kind != "CMD":
            raise self.fail(f"Unknown type {go_quote(inst.kind)} in HEALTHCHECK (try CMD)")
        if inst.command is None or not inst.command.args:
            raise self.fail("Missing command after HEALTHCHECK CMD")
        for name in values.HEALTHCHECK_DURATIONS:
            for v in fl.get(name, []):
                self.value(values.healthcheck_duration, name, v or "")
        for v in fl.get("retries", []):
            self.value(values.healthcheck_retries, v or "")

    def i_onbuild(self, inst: ast.Onbuild) -> None:
        inner = inst.instruction
        if inner is None:
            raise self.fail("ONBUILD requires at least one argument")
        if isinstance(inner, ast.Onbuild):
            raise self.fail("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
        if isinstance(inner, (ast.From, ast.Maintainer)):
            raise self.fail(f"{inner.keyword.upper()} isn't allowed as an ONBUILD trigger")
        if isinstance(inner, ast.Unknown):
            raise self.fail(f"unknown instruction: {inner.keyword}")
        self.instruction(inner, onbuild=True)


def _heredoc_word(word: str) -> bool:
    from .parser import parse_heredoc

    try:
        return parse_heredoc(word) is not None
    except ExpansionError:
        return False


def _valid_chmod(v: str) -> bool:
    if re.fullmatch(r"[0-7]+", v):
        return int(v, 8) <= 0o7777
    return all(_CHMOD_SYMBOLIC.match(part) for part in v.split(","))


def validate(df: ast.Dockerfile, build_args: Mapping[str, str] | None = None) -> None:
    """Raise ``DockerfileError`` (file:line: message) for the first mistake a build would hit.

    Checks: unknown instructions and flags (with "did you mean"), flag values (RUN
    --network/--security/--mount, COPY/ADD --chmod/--chown/--from/--checksum/--exclude,
    HEALTHCHECK durations and retries), argument counts, STOPSIGNAL and EXPOSE syntax,
    stage names and duplicates, instruction order (only ARG before the first FROM), blank
    base images after meta-ARG expansion, and ``${...}`` syntax wherever the builder expands.
    """
    _Checker(df, build_args or {}).run()
