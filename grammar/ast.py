"""Typed Dockerfile AST: one frozen dataclass per instruction.

Every value here is *raw*: quotes, ``$var`` references and escapes are kept exactly as
written, because expansion needs the environment of the point where the instruction runs,
which only the builder knows (use ``grammar.lexer.ShellLex`` there).

Fields common to every instruction (``Instruction``):

- ``line`` / ``end_line``: 1-based physical lines of the first and the last line of the
  instruction (continuations and heredoc terminators included).
- ``keyword``: the instruction as written (``run``, ``Run``...); class tells the kind.
- ``flags``: tuple of ``Flag(name, value)`` in source order; ``name`` has no leading
  ``--``; ``value`` is None for a bare ``--link``, ``""`` for ``--link=``. A repeatable
  flag (``--mount``, ``--exclude``) appears once per occurrence.
- ``original``: the logical line as written (continuations joined, comments inside
  continuations dropped, heredoc bodies not included).
- ``args``: BuildKit's AST values for the instruction after the flags (what the dump
  prints): shell form = one raw string, exec form = the JSON strings, ENV/LABEL = flat
  key/value/sep triples, FROM/EXPOSE = whitespace-split words, ARG = raw words.

Per instruction:

- ``From(image, name)``: ``image`` raw reference; ``name`` the stage name after ``AS``,
  lowercased as BuildKit stores it (None without ``AS``). ``--platform`` is in ``flags``.
- ``Run(command, heredocs)``, ``Cmd(command)``, ``Entrypoint(command)``: a ``Command``.
- ``Shell(shell)``: the JSON list (exec form is mandatory; see ``exec_form``).
- ``Label(pairs)`` / ``Env(pairs)``: ``KeyValue(key, value, legacy)``; ``legacy`` is the
  ``ENV k v`` form (value = rest of line). ``Arg(pairs)``: ``value`` None when no default.
- ``Maintainer(maintainer)``, ``User(user)``, ``Workdir(path)``, ``StopSignal(signal)``: one raw string.
- ``Expose(ports)``: raw words. ``Volume(paths, exec_form)``.
- ``Copy(sources, dest, exec_form, heredocs)`` / ``Add(...)``: heredoc sources appear in
  ``sources`` as their ``<<NAME`` word and in ``heredocs`` with their bodies.
- ``Onbuild(instruction, expression)``: the parsed inner instruction and its raw text.
- ``Healthcheck(kind, command)``: ``kind`` is ``"NONE"``, ``"CMD"`` (with ``command``) or,
  until ``grammar.validate`` rejects it, whatever word was written (``""`` when none).
- ``Dockerfile(directives, instructions, escape, filename, warnings)``: ``directives`` maps
  lowercased keys (``syntax``, ``escape``, ``check``) to values.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Flag:
    """One ``--name[=value]`` flag; ``value`` is None when written without ``=``."""

    name: str
    value: str | None


@dataclass(frozen=True)
class Heredoc:
    """A heredoc body. ``content`` is raw (incl. line endings; tabs not yet stripped).

    ``expand`` is False when any part of the delimiter was quoted; ``chomp`` is True for
    ``<<-`` (strip leading tabs when used: see ``Heredoc.text``); ``fd`` is the optional
    file-descriptor prefix (``3<<EOF``), 0 when absent.
    """

    name: str
    content: str
    expand: bool = True
    chomp: bool = False
    fd: int = 0

    def text(self) -> str:
        """The body as the instruction will see it (leading tabs removed when ``chomp``)."""
        if not self.chomp:
            return self.content
        return "".join(ln.lstrip("\t") for ln in self.content.splitlines(keepends=True))


@dataclass(frozen=True)
class Command:
    """A command in shell form (``exec_form=False``, one string) or exec/JSON form."""

    exec_form: bool
    args: tuple[str, ...]


@dataclass(frozen=True)
class KeyValue:
    """One ``key=value`` (or legacy ``key value``) pair; ``value`` None = ARG without default."""

    key: str
    value: str | None
    legacy: bool = False


@dataclass(frozen=True, kw_only=True)
class Instruction:
    """Fields every instruction has (see the module docstring)."""

    line: int
    end_line: int
    keyword: str
    flags: tuple[Flag, ...] = ()
    original: str = ""
    args: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        """Instruction name upper-cased (``RUN``, ``COPY``...). Note: ``Healthcheck.kind`` is a
        field (its ``NONE``/``CMD`` type) and shadows this; ``keyword.upper()`` always works."""
        return self.keyword.upper()

    def flag(self, name: str) -> str | None:
        """Value of the last occurrence of ``--name`` (None when absent or bare)."""
        val = None
        for f in self.flags:
            if f.name == name:
                val = f.value
        return val

    def flag_values(self, name: str) -> tuple[str | None, ...]:
        """All values of a repeatable flag (``--mount``, ``--exclude``) in order."""
        return tuple(f.value for f in self.flags if f.name == name)

    def has_flag(self, name: str) -> bool:
        """True when ``--name`` was given at all."""
        return any(f.name == name for f in self.flags)


@dataclass(frozen=True, kw_only=True)
class From(Instruction):
    image: str = ""
    name: str | None = None


@dataclass(frozen=True, kw_only=True)
class Run(Instruction):
    command: Command = Command(False, ("",))
    heredocs: tuple[Heredoc, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Cmd(Instruction):
    command: Command = Command(False, ("",))


@dataclass(frozen=True, kw_only=True)
class Entrypoint(Instruction):
    command: Command = Command(False, ("",))


@dataclass(frozen=True, kw_only=True)
class Shell(Instruction):
    shell: tuple[str, ...] = ()
    exec_form: bool = True


@dataclass(frozen=True, kw_only=True)
class Label(Instruction):
    pairs: tuple[KeyValue, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Env(Instruction):
    pairs: tuple[KeyValue, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Arg(Instruction):
    pairs: tuple[KeyValue, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Maintainer(Instruction):
    maintainer: str = ""


@dataclass(frozen=True, kw_only=True)
class Expose(Instruction):
    ports: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Copy(Instruction):
    sources: tuple[str, ...] = ()
    dest: str = ""
    exec_form: bool = False
    heredocs: tuple[Heredoc, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Add(Instruction):
    sources: tuple[str, ...] = ()
    dest: str = ""
    exec_form: bool = False
    heredocs: tuple[Heredoc, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Volume(Instruction):
    paths: tuple[str, ...] = ()
    exec_form: bool = False


@dataclass(frozen=True, kw_only=True)
class User(Instruction):
    user: str = ""


@dataclass(frozen=True, kw_only=True)
class Workdir(Instruction):
    path: str = ""


@dataclass(frozen=True, kw_only=True)
class StopSignal(Instruction):
    signal: str = ""


@dataclass(frozen=True, kw_only=True)
class Healthcheck(Instruction):
    kind: str = ""
    command: Command | None = None


@dataclass(frozen=True, kw_only=True)
class Onbuild(Instruction):
    instruction: Instruction | None = None
    expression: str = ""


@dataclass(frozen=True, kw_only=True)
class Unknown(Instruction):
    """An unknown keyword, kept only by ``parse(..., strict=False)``; args are dropped."""


@dataclass(frozen=True)
class Dockerfile:
    """A parsed Dockerfile: directives, instructions in order, the escape char in force."""

    directives: dict[str, str]
    instructions: tuple[Instruction, ...]
    escape: str = "\\"
    filename: str = "Dockerfile"
    warnings: tuple[str, ...] = field(default=())


#: Instruction keyword (upper case) -> dataclass.
INSTRUCTIONS: dict[str, type[Instruction]] = {
    "FROM": From, "RUN": Run, "CMD": Cmd, "LABEL": Label, "MAINTAINER": Maintainer,
    "EXPOSE": Expose, "ENV": Env, "ADD": Add, "COPY": Copy, "ENTRYPOINT": Entrypoint,
    "VOLUME": Volume, "USER": User, "WORKDIR": Workdir, "ARG": Arg, "ONBUILD": Onbuild,
    "STOPSIGNAL": StopSignal, "HEALTHCHECK": Healthcheck, "SHELL": Shell,
}
