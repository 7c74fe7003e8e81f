"""Config-only instructions: they change the image config and roll the key, no layer.

ENV, LABEL, MAINTAINER, ARG, CMD, ENTRYPOINT, SHELL, EXPOSE, VOLUME, USER, STOPSIGNAL,
HEALTHCHECK and ONBUILD. Values are parsed by the same ``grammar.values`` functions that
``grammar.validate`` ran on the literal text, so both accept the same words.
"""
from __future__ import annotations

from builder import imageconfig as ic
from cache.keys import step_key
from grammar import ast, values
from grammar.errors import DockerfileError
from grammar.goduration import format_duration
from grammar.lexer import ShellLex

DEFAULT_SHELL = ["/bin/sh", "-c"]


def _value(run, ins, parse, *args):
    """A ``grammar.values`` parser's result; its ValueError is this instruction's error."""
    try:
        return parse(*args)
    except ValueError as e:
        raise run.error(ins, str(e)) from None


def env(run, ins: ast.Env, n: int) -> None:
    env = run.expansion_env()  # every value sees the env from before this instruction
    parts = []
    lex = ShellLex(run.df.escape)
    for kv in ins.pairs:
        try:
            key = lex.process_word(kv.key, env)
            value = lex.process_word(kv.value or "", env)
        except DockerfileError as e:
            raise run.error(ins, e.message) from None
        ic.set_env(run.state.config, key, value)
        parts.append(f"{key}={value}")
    run.config_step(ins, "ENV " + " ".join(parts))


def label(run, ins: ast.Label, n: int) -> None:
    labels = dict(run.state.config["config"].get("Labels") or {})
    parts = []
    for kv in ins.pairs:
        key, value = run.expand(ins, kv.key), run.expand(ins, kv.value or "")
        labels[key] = value
        parts.append(f"{key}={value}")
    run.state.config["config"]["Labels"] = labels
    run.config_step(ins, "LABEL " + " ".join(parts))


def maintainer(run, ins: ast.Maintainer, n: int) -> None:
    run.state.config["author"] = ins.maintainer
    run.config_step(ins, f"MAINTAINER {ins.maintainer}")


def arg(run, ins: ast.Arg, n: int) -> None:
    parts = []
    build_args = run.solver.opts.build_args
    for kv in ins.pairs:
        name = run.expand(ins, kv.key)
        if name in build_args:
            value: str | None = build_args[name]
        elif kv.value is not None:
            value = run.expand(ins, kv.value)
        else:  # BuildKit: a bare ARG takes the global default, else keeps what is in scope
            value = run.solver.plan.global_args.get(name)  # (an ARG of the stage built on)
            if value is None:
                value = run.args.get(name)
        run.args[name] = value
        parts.append(f"{name}={value}" if value is not None else name)
    run.config_step(ins, "ARG " + " ".join(parts))


def with_shell(run, command: ast.Command) -> list[str]:
    """A command's argv: exec form as written, shell form behind the stage's SHELL."""
    if command.exec_form:
        return list(command.args)
    shell = run.state.config["config"].get("Shell") or DEFAULT_SHELL
    return [*shell, command.args[0] if command.args else ""]


def cmd(run, ins: ast.Cmd, n: int) -> None:
    args = with_shell(run, ins.command)
    cfg = run.state.config["config"]
    cfg["Cmd"] = args
    cfg["ArgsEscaped"] = True
    run.cmd_set = True
    run.config_step(ins, f"CMD {ic.go_list(args)}")


def entrypoint(run, ins: ast.Entrypoint, n: int) -> None:
    args = with_shell(run, ins.command)
    if ins.command.exec_form and not args:
        args = None
    cfg = run.state.config["config"]
    cfg["Entrypoint"] = args
    if not run.cmd_set:
        cfg["Cmd"] = None
    run.config_step(ins, f"ENTRYPOINT {ic.go_list(args or [])}")


def shell(run, ins: ast.Shell, n: int) -> None:
    run.state.config["config"]["Shell"] = list(ins.shell)
    # BuildKit: fmt.Sprintf("SHELL %v", c.Shell), Go's %v of a []string: [a b], unquoted
    run.config_step(ins, f"SHELL [{' '.join(ins.shell)}]")


def _add_to_set(run, field: str, keys: list[str]) -> None:
    """ExposedPorts and Volumes are Go sets in the config: {key: {}}; a new copy, keys added."""
    cfg = run.state.config["config"]
    cfg[field] = {**(cfg.get(field) or {}), **{k: {} for k in keys}}


def expose(run, ins: ast.Expose, n: int) -> None:
    ports: list[str] = []
    for raw in ins.ports:
        for word in run.expand_words(ins, raw):
            ports.extend(_value(run, ins, values.expose_ports, word))
    _add_to_set(run, "ExposedPorts", ports)
    run.config_step(ins, f"EXPOSE [{' '.join(ports)}]")


def volume(run, ins: ast.Volume, n: int) -> None:
    paths: list[str] = []
    for raw in ins.paths:
        words = [run.expand(ins, raw)] if ins.exec_form else run.expand_words(ins, raw)
        for p in words:
            if not p.strip():
                raise run.error(ins, "VOLUME specified can not be an empty string")
            paths.append(p)
    _add_to_set(run, "Volumes", paths)
    run.config_step(ins, f"VOLUME [{' '.join(paths)}]")


def user(run, ins: ast.User, n: int) -> None:
    user = run.expand(ins, ins.user)
    run.state.config["config"]["User"] = user
    run.config_step(ins, f"USER {user}")


def stopsignal(run, ins: ast.StopSignal, n: int) -> None:
    sig = _value(run, ins, values.stop_signal, run.expand(ins, ins.signal))
    run.state.config["config"]["StopSignal"] = sig
    run.config_step(ins, f"STOPSIGNAL {sig}")


def healthcheck(run, ins: ast.Healthcheck, n: int) -> None:
    cfg = run.state.config["config"]
    if ins.kind.upper() == "NONE":
        hc: dict = {"Test": ["NONE"]}
    else:
        cmd = ins.command or ast.Command(False, ("",))
        test = ["CMD", *cmd.args] if cmd.exec_form else ["CMD-SHELL", cmd.args[0] if cmd.args else ""]
        hc = {"Test": test}
        for flag, field_ in values.HEALTHCHECK_DURATIONS.items():
            val = ins.flag(flag)
            if val:
                hc[field_] = _value(run, ins, values.healthcheck_duration, flag, val)
        retries = ins.flag("retries")
        if retries:
            hc["Retries"] = _value(run, ins, values.healthcheck_retries, retries)
    cfg["Healthcheck"] = hc
    run.config_step(ins, f"HEALTHCHECK {_go_struct(hc)}")


def _go_struct(hc: dict) -> str:
    """BuildKit's `%+v` of the dereferenced HealthcheckConfig (a struct value, so no `&`), fields
    in Go's declaration order."""
    order = ["Test", "Interval", "Timeout", "StartPeriod", "StartInterval", "Retries"]
    parts = []
    for k in order:
        v = hc.get(k, 0 if k != "Test" else [])
        if k == "Test":
            parts.append(f"Test:[{' '.join(v)}]")
        elif k == "Retries":
            parts.append(f"Retries:{v}")
        else:
            parts.append(f"{k}:{format_duration(v)}")
    return "{" + " ".join(parts) + "}"


def onbuild(run, ins: ast.Onbuild, n: int) -> None:
    cfg = run.state.config["config"]
    expr = ins.expression.strip()
    cfg["OnBuild"] = [*(cfg.get("OnBuild") or []), expr]
    # BuildKit adds no history entry for ONBUILD; the key still changes with the config.
    run.state.key = step_key("ONBUILD", run.state.key, {"expression": expr})
