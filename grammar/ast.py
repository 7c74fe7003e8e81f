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

from dataclasses import dataclass, field, fields

# Every instruction is a frozen, keyword-only dataclass with a docstring (without one,
# @dataclass makes one from inspect.signature: ~0.1 ms a class) whose __eq__, __hash__ and
# __repr__ are Instruction's, written once below: what @dataclass would generate for each class
# (the same results), without compiling three more functions per class (dataclass execs each
# one's source: ~40% of importing this module, which every full build does).
_instruction = dataclass(frozen=True, kw_only=True, eq=False, repr=False)
_FIELDS: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in fields(cls))
    return names


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


@_instruction
class Instruction:
    """Fields every instruction has (see the module docstring)."""

    def __eq__(self, other):
        if other.__class__ is self.__class__:
            names = _field_names(self.__class__)
            return tuple(getattr(self, n) for n in names) == tuple(getattr(other, n) for n in names)
        return NotImplemented

    def __hash__(self):
        return hash(tuple(getattr(self, n) for n in _field_names(self.__class__)))

    def __repr__(self):
        return f"{self.__class__.__qualname__}(" + ", ".join(
            f"{n}={getattr(self, n)!r}" for n in _field_names(self.__class__)) + ")"

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


@_instruction
class From(Instruction):
    """``FROM [--platform=...] image [AS name]``."""

    image: str = ""
    name: str | None = None


@_instruction
class Run(Instruction):
    """``RUN [--mount=... ...] command`` (shell or exec form, heredocs)."""

    command: Command = Command(False, ("",))
    heredocs: tuple[Heredoc, ...] = ()


@_instruction
class Cmd(Instruction):
    """``CMD command``: the image's default command."""

    command: Command = Command(False, ("",))


@_instruction
class Entrypoint(Instruction):
    """``ENTRYPOINT command``."""

    command: Command = Command(False, ("",))


@_instruction
class Shell(Instruction):
    """``SHELL ["executable", "param"...]``."""

    shell: tuple[str, ...] = ()
    exec_form: bool = True


@_instruction
class Label(Instruction):
    """``LABEL key=value...``."""

    pairs: tuple[KeyValue, ...] = ()


@_instruction
class Env(Instruction):
    """``ENV key=value...`` (or the legacy ``ENV key value``)."""

    pairs: tuple[KeyValue, ...] = ()


@_instruction
class Arg(Instruction):
    """``ARG name[=default]...``."""

    pairs: tuple[KeyValue, ...] = ()


@_instruction
class Maintainer(Instruction):
    """``MAINTAINER name`` (deprecated; a label)."""

    maintainer: str = ""


@_instruction
class Expose(Instruction):
    """``EXPOSE port[/proto]...``."""

    ports: tuple[str, ...] = ()


@_instruction
class Copy(Instruction):
    """``COPY [--from=... --chown=... ...] src... dest``."""

    sources: tuple[str, ...] = ()
    dest: str = ""
    exec_form: bool = False
    heredocs: tuple[Heredoc, ...] = ()


@_instruction
class Add(Instruction):
    """``ADD [--checksum=... ...] src... dest``."""

    sources: tuple[str, ...] = ()
    dest: str = ""
    exec_form: bool = False
    heredocs: tuple[Heredoc, ...] = ()


@_instruction
class Volume(Instruction):
    """``VOLUME path...``."""

    paths: tuple[str, ...] = ()
    exec_form: bool = False


@_instruction
class User(Instruction):
    """``USER user[:group]``."""

    user: str = ""


@_instruction
class Workdir(Instruction):
    """``WORKDIR path``."""

    path: str = ""


@_instruction
class StopSignal(Instruction):
    """``STOPSIGNAL signal``."""

    signal: str = ""


@_instruction
class Healthcheck(Instruction):
    """``HEALTHCHECK [options] CMD command`` or ``HEALTHCHECK NONE``."""

    kind: str = ""
    command: Command | None = None


@_instruction
class Onbuild(Instruction):
    """``ONBUILD instruction``: kept for images built FROM this one."""

    instruction: Instruction | None = None
    expression: str = ""


@_instruction
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
