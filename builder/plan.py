"""Planning: a parsed Dockerfile -> stages, their dependencies and the order to build them.

Only the stages the target needs are planned (BuildKit prunes the rest): the target's base
chain, `COPY --from` and `RUN --mount from=` sources. Meta ARGs (before the first FROM) and the
platform builtins form the global scope, which only FROM lines see unless a stage re-declares
an ARG.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from builder.errors import BuildError
from cache import platform
from grammar import ast
from grammar.errors import DockerfileError, with_suggestion


def builtin_args(target_stage: str) -> dict[str, str]:
    """BuildKit's predefined global ARGs (visible in a stage only when re-declared)."""
    host = platform.host()
    arch, variant, plat = host["architecture"], host.get("variant", ""), platform.to_string(host)
    return {
        "BUILDPLATFORM": plat, "BUILDOS": "linux", "BUILDARCH": arch, "BUILDVARIANT": variant,
        "BUILDOSVERSION": "",
        "TARGETPLATFORM": plat, "TARGETOS": "linux", "TARGETARCH": arch, "TARGETVARIANT": variant,
        "TARGETOSVERSION": "", "TARGETSTAGE": target_stage,
    }


@dataclass
class Stage:
    """One FROM and the instructions under it."""

    index: int
    name: str | None
    from_: ast.From
    instructions: list[ast.Instruction]
    base: str = ""  # expanded base: an image reference, "scratch", or a stage name
    base_stage: int | None = None
    deps: set[int] = field(default_factory=set)  # stages read by COPY --from / RUN --mount from

    @property
    def label(self) -> str:
        return self.name or f"stage-{self.index}"


@dataclass
class Plan:
    """A Dockerfile planned: its stages, the global ARGs, the target and the build order."""

    stages: list[Stage]
    global_args: dict[str, str | None]  # meta ARGs after --build-arg, plus builtins
    meta_arg_names: list[str]
    target: int
    order: list[int]  # the stages to build, dependencies first
    dockerfile: ast.Dockerfile

    def stage_by_ref(self, ref: str, before: int) -> int | None:
        """A `--from`/`FROM` reference to an earlier stage (name or index), or None for an image."""
        return _stage_ref(self.stages, ref, before)


def _stage_ref(stages: list[Stage], ref: str, before: int) -> int | None:
    if ref.isdigit():
        i = int(ref)
        return i if i < len(stages) else None
    low = ref.lower()
    for s in stages[:before]:
        if s.name == low:
            return s.index
    return None


def _err(df: ast.Dockerfile, ins: ast.Instruction, msg: str) -> DockerfileError:
    return DockerfileError(df.filename, ins.line, msg)


def _expand(df: ast.Dockerfile, ins: ast.Instruction, word: str, env: dict[str, str]) -> str:
    from grammar.errors import ExpansionError
    from grammar.lexer import ShellLex

    try:
        return ShellLex(df.escape).process_word(word, env)
    except ExpansionError as e:
        raise e.at(df.filename, ins.line) from None


def mount_from_values(ins: ast.Run) -> list[str]:
    """The `from=` values of a RUN's `--mount` flags (no expansion: BuildKit forbids `$` there)."""
    out = []
    for spec in ins.flag_values("mount"):
        for part in (spec or "").split(","):
            k, _, v = part.partition("=")
            if k.strip().lower() == "from" and v:
                out.append(v.strip())
    return out


def plan(df: ast.Dockerfile, build_args: dict[str, str], target: str | None) -> Plan:
    """Split `df` into stages, resolve bases and `--from` references, prune to the target."""
    stages: list[Stage] = []
    meta: list[ast.Arg] = []
    for ins in df.instructions:
        if isinstance(ins, ast.From):
            stages.append(Stage(len(stages), ins.name, ins, []))
        elif not stages:
            if isinstance(ins, ast.Arg):
                meta.append(ins)
            else:
                raise _err(df, ins, "no build stage in current context: the first instruction "
                           "must be FROM (or ARG before FROM)")
        else:
            stages[-1].instructions.append(ins)
    if not stages:
        raise DockerfileError(df.filename, 0, "the Dockerfile has no FROM instruction: nothing to build")

    if target:
        names = [s.name for s in stages if s.name]
        if target.lower() not in names:
            raise BuildError(with_suggestion(f'target stage "{target}" could not be found', target, names))
        target_idx = next(s.index for s in stages if s.name == target.lower())
    else:
        target_idx = len(stages) - 1

    global_args: dict[str, str | None] = dict(builtin_args(target.lower() if target else "default"))
    meta_names = []
    for ins in meta:
        for kv in ins.pairs:
            env = {k: v for k, v in global_args.items() if v is not None}
            name = _expand(df, ins, kv.key, env)
            if name in build_args:
                global_args[name] = build_args[name]
            elif kv.value is not None:
                global_args[name] = _expand(df, ins, kv.value, env)
            else:
                global_args.setdefault(name, None)
            meta_names.append(name)
    genv = {k: v for k, v in global_args.items() if v is not None}

    for st in stages:
        base = _expand(df, st.from_, st.from_.image, genv)
        if not base:
            raise _err(df, st.from_, f"base name ({st.from_.image}) should not be blank")
        st.base = base
        ref = _stage_ref(stages, base, st.index)
        if ref is not None and stages[ref].name == base.lower():
            st.base_stage = ref
        for ins in st.instructions:
            refs: list[str] = []
            if isinstance(ins, ast.Copy) and ins.flag("from"):
                refs.append(ins.flag("from") or "")
            elif isinstance(ins, ast.Run):
                refs.extend(mount_from_values(ins))
            for r in refs:
                if "$" in r:
                    raise _err(df, ins, "variable expansion is not supported for --from, define a new "
                               "stage with FROM using ARG from global scope as a workaround")
                i = _stage_ref(stages, r, len(stages))
                if i is None:
                    continue  # an image reference
                if i >= st.index:
                    raise _err(df, ins, f'cannot copy from stage "{r}", it needs to be defined before '
                               f'current stage "{st.label}"')
                st.deps.add(i)

    order: list[int] = []
    seen: set[int] = set()

    def visit(i: int, path: tuple[int, ...]) -> None:
        if i in path:
            raise BuildError(f"circular dependency detected on stage: {stages[i].label}")
        if i in seen:
            return
        st = stages[i]
        for d in sorted(st.deps | ({st.base_stage} if st.base_stage is not None else set())):
            visit(d, path + (i,))
        seen.add(i)
        order.append(i)

    visit(target_idx, ())
    return Plan(stages, global_args, meta_names, target_idx, order, df)
