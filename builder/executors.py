"""One executor per instruction: its effect on the image config and, for RUN, COPY, ADD and
WORKDIR, on the filesystem (a new layer).

Filesystem steps work on an overlay of the parent's layer dirs with a fresh upper dir from the
store's scratch space; the upper dir is committed as the layer (`store.commit_layer`). RUN runs
in `runtime.sandbox`; COPY/ADD/WORKDIR write through `runtime.overlay.mounted` with
`builder.copying`.
"""
from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import signal as _signal
import tempfile
import threading
from pathlib import Path

from builder import imageconfig as ic
from builder.errors import BuildError
from grammar import ast
from grammar.errors import DockerfileError

DEFAULT_SHELL = ["/bin/sh", "-c"]


def dispatch(run, ins: ast.Instruction, n: int) -> None:
    """Apply one instruction to the stage's state."""
    handler = _HANDLERS.get(type(ins))
    if handler is None:
        raise run.error(ins, f"{ins.kind} is not supported here")
    handler(run, ins, n)


def run_onbuild(run, triggers: list[str]) -> None:
    """Run a base image's ONBUILD triggers first in the child stage (they are then cleared)."""
    import grammar

    for text in triggers:
        try:
            df = grammar.parse(text, filename=f"{run.df.filename} (ONBUILD of {run.stage.base})")
        except DockerfileError as e:
            raise run.error(run.stage.from_, f"bad ONBUILD trigger {text!r} in base image: {e.message}")
        for ins in df.instructions:
            dispatch(run, ins, 1)


# -- config-only instructions ----------------------------------------------------------------

def _env(run, ins: ast.Env, n: int) -> None:
    env = run.expansion_env()  # every value sees the env from before this instruction
    parts = []
    from grammar.lexer import ShellLex

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


def _label(run, ins: ast.Label, n: int) -> None:
    labels = dict(run.state.config["config"].get("Labels") or {})
    parts = []
    for kv in ins.pairs:
        key, value = run.expand(ins, kv.key), run.expand(ins, kv.value or "")
        labels[key] = value
        parts.append(f"{key}={value}")
    run.state.config["config"]["Labels"] = labels
    run.config_step(ins, "LABEL " + " ".join(parts))


def _maintainer(run, ins: ast.Maintainer, n: int) -> None:
    run.state.config["author"] = ins.maintainer
    run.config_step(ins, f"MAINTAINER {ins.maintainer}")


def _arg(run, ins: ast.Arg, n: int) -> None:
    parts = []
    build_args = run.solver.opts.build_args
    for kv in ins.pairs:
        name = run.expand(ins, kv.key)
        if name in build_args:
            value: str | None = build_args[name]
        elif kv.value is not None:
            value = run.expand(ins, kv.value)
        else:
            value = run.solver.plan.global_args.get(name)
        run.args[name] = value
        parts.append(f"{name}={value}" if value is not None else name)
    run.config_step(ins, "ARG " + " ".join(parts))


def _with_shell(run, command: ast.Command) -> list[str]:
    if command.exec_form:
        return list(command.args)
    shell = run.state.config["config"].get("Shell") or DEFAULT_SHELL
    return [*shell, command.args[0] if command.args else ""]


def _cmd(run, ins: ast.Cmd, n: int) -> None:
    args = _with_shell(run, ins.command)
    cfg = run.state.config["config"]
    cfg["Cmd"] = args
    cfg["ArgsEscaped"] = True
    run.cmd_set = True
    run.config_step(ins, f"CMD {ic.go_list(args)}")


def _entrypoint(run, ins: ast.Entrypoint, n: int) -> None:
    args = _with_shell(run, ins.command)
    if ins.command.exec_form and not args:
        args = None
    cfg = run.state.config["config"]
    cfg["Entrypoint"] = args
    if not run.cmd_set:
        cfg["Cmd"] = None
    run.config_step(ins, f"ENTRYPOINT {ic.go_list(args or [])}")


def _shell(run, ins: ast.Shell, n: int) -> None:
    run.state.config["config"]["Shell"] = list(ins.shell)
    # BuildKit: fmt.Sprintf("SHELL %v", c.Shell), Go's %v of a []string: [a b], unquoted
    run.config_step(ins, f"SHELL [{' '.join(ins.shell)}]")


def _expose(run, ins: ast.Expose, n: int) -> None:
    ports: list[str] = []
    for raw in ins.ports:
        for word in run.expand_words(ins, raw):
            ports.extend(_expand_port(run, ins, word))
    exposed = dict(run.state.config["config"].get("ExposedPorts") or {})
    for p in ports:
        exposed[p] = {}
    run.state.config["config"]["ExposedPorts"] = exposed
    run.config_step(ins, f"EXPOSE [{' '.join(ports)}]")


def _expand_port(run, ins, word: str) -> list[str]:
    spec, _, proto = word.partition("/")
    proto = (proto or "tcp").lower()
    spec = spec.rsplit(":", 1)[-1]  # ip:host:ctr is accepted; the container port counts
    lo, _, hi = spec.partition("-")
    try:
        a, b = int(lo), int(hi or lo)
    except ValueError:
        raise run.error(ins, f"invalid containerPort: {spec}") from None
    if not (0 < a <= b <= 65535):
        raise run.error(ins, f"invalid containerPort: {spec}")
    return [f"{p}/{proto}" for p in range(a, b + 1)]


def _volume(run, ins: ast.Volume, n: int) -> None:
    paths: list[str] = []
    for raw in ins.paths:
        words = [run.expand(ins, raw)] if ins.exec_form else run.expand_words(ins, raw)
        for p in words:
            if not p.strip():
                raise run.error(ins, "VOLUME specified can not be an empty string")
            paths.append(p)
    vols = dict(run.state.config["config"].get("Volumes") or {})
    for p in paths:
        vols[p] = {}
    run.state.config["config"]["Volumes"] = vols
    run.config_step(ins, f"VOLUME [{' '.join(paths)}]")


def _user(run, ins: ast.User, n: int) -> None:
    user = run.expand(ins, ins.user)
    run.state.config["config"]["User"] = user
    run.config_step(ins, f"USER {user}")


def _stopsignal(run, ins: ast.StopSignal, n: int) -> None:
    sig = run.expand(ins, ins.signal)
    name = sig.upper()
    valid = (sig.isdigit() or hasattr(_signal, name) or hasattr(_signal, "SIG" + name)
             or name.startswith(("SIGRTMIN", "SIGRTMAX")))
    if not valid:
        raise run.error(ins, f"Invalid signal: {sig}")
    run.state.config["config"]["StopSignal"] = sig
    run.config_step(ins, f"STOPSIGNAL {sig}")


_DURATIONS = {"interval": "Interval", "timeout": "Timeout", "start-period": "StartPeriod",
              "start-interval": "StartInterval"}


def _parse_duration(run, ins, text: str) -> int:
    """Go's time.ParseDuration subset Docker accepts, to nanoseconds."""
    import re

    units = {"ns": 1, "us": 1000, "µs": 1000, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
    if text == "0":
        return 0
    parts = re.findall(r"(\d+(?:\.\d*)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise run.error(ins, f'time: invalid duration "{text}"')
    return int(sum(float(a) * units[b] for a, b in parts))


def _healthcheck(run, ins: ast.Healthcheck, n: int) -> None:
    cfg = run.state.config["config"]
    if ins.kind.upper() == "NONE":
        hc: dict = {"Test": ["NONE"]}
    else:
        cmd = ins.command or ast.Command(False, ("",))
        test = ["CMD", *cmd.args] if cmd.exec_form else ["CMD-SHELL", cmd.args[0] if cmd.args else ""]
        hc = {"Test": test}
        for flag, field_ in _DURATIONS.items():
            val = ins.flag(flag)
            if val:
                ns = _parse_duration(run, ins, val)
                if 0 < ns < 10**6:
                    raise run.error(ins, f'Interval "{flag}" cannot be less than 1ms')
                hc[field_] = ns
        retries = ins.flag("retries")
        if retries:
            try:
                hc["Retries"] = int(retries)
            except ValueError:
                raise run.error(ins, f'strconv.ParseInt: parsing "{retries}": invalid syntax') from None
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
            parts.append(f"{k}:{_go_duration(v)}")
    return "{" + " ".join(parts) + "}"


def _go_duration(ns: int) -> str:
    if ns == 0:
        return "0s"
    secs = ns / 1e9
    h, rem = divmod(secs, 3600)
    m, s = divmod(rem, 60)
    out = ""
    if h:
        out += f"{int(h)}h"
    if h or m:
        out += f"{int(m)}m"
    out += f"{s:g}s"
    return out


def _onbuild(run, ins: ast.Onbuild, n: int) -> None:
    cfg = run.state.config["config"]
    expr = ins.expression.strip()
    cfg["OnBuild"] = [*(cfg.get("OnBuild") or []), expr]
    # BuildKit adds no history entry for ONBUILD; the key still changes with the config.
    from cache.keys import step_key

    run.state.key = step_key("ONBUILD", run.state.key, {"expression": expr})


# -- filesystem steps -------------------------------------------------------------------------

@contextlib.contextmanager
def _scratch(store):
    """A fresh upper+work pair in the store's scratch space, removed afterwards."""
    tmp = Path(store.new_scratch())
    (tmp / "upper").mkdir()
    (tmp / "work").mkdir()
    try:
        yield tmp / "upper", tmp / "work"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _commit(run, upper: Path):
    """The upper dir becomes the step's layer; like BuildKit, a step that changed nothing
    still gets one (the empty tar, sha256:5f70bf18...)."""
    return run.solver.store.commit_layer(upper, epoch=run.solver.opts.epoch, keep_empty=True)


def _workdir_path(run, raw: str, ins) -> str:
    path = run.expand(ins, raw)
    cur = run.state.config["config"].get("WorkingDir") or "/"
    return posixpath.normpath(posixpath.join(cur, path)) if path else cur


def _workdir(run, ins: ast.Workdir, n: int) -> None:
    path = _workdir_path(run, ins.path, ins)
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    run.state.config["config"]["WorkingDir"] = path
    if path == "/":
        run.config_step(ins, "WORKDIR /")
        return
    user = run.state.config["config"].get("User") or ""

    def execute(vertex):
        from builder.copying import make_dirs
        from builder.users import resolve_chown
        from runtime.snapshotter import mounted

        store = run.solver.store
        with _scratch(store) as (upper, work):
            with mounted(run.lowerdirs(), upper, work) as root:
                owner = resolve_chown(user, Path(root), strict=False) if user else None
                make_dirs(Path(root), path, owner)
            return _commit(run, upper)

    run.layer_step(ins, n, f"WORKDIR {path}", {"path": path, "user": user}, execute)


def _run(run, ins: ast.Run, n: int) -> None:
    from builder.mounts import parse_mounts

    cfg = run.state.config["config"]
    argv = _run_argv(run, ins)
    env = run.run_env()
    network = ins.flag("network") or run.solver.opts.network
    if network not in ("default", "host", "none"):
        raise run.error(ins, f'invalid network mode "{network}"')
    security = ins.flag("security") or "sandbox"
    if security == "insecure":
        raise run.error(ins, "RUN --security=insecure is not allowed: pybuild grants no "
                        "security.insecure entitlement")
    cwd = cfg.get("WorkingDir") or "/"
    mounts = parse_mounts(run, ins, cwd)
    declared = [(k, v) for k, v in run.args.items() if v is not None]
    shown = [f"|{len(declared)}", *(f"{k}={v}" for k, v in declared)] if declared else []
    created_by = "RUN " + " ".join([*shown, *argv]) + " # buildkit"
    inputs = {"argv": argv, "env": env, "user": cfg.get("User") or "", "cwd": cwd,
              "network": network, "mounts": [m.key for m in mounts],
              "heredocs": [[h.name, h.content] for h in ins.heredocs]}

    def execute(vertex):
        from runtime.sandbox import run as sandbox_run
        from runtime.spec import SandboxSpec

        store = run.solver.store
        with _scratch(store) as (upper, work), contextlib.ExitStack() as stack:
            sandbox_mounts = [sm for m in mounts if (sm := m.realize(stack)) is not None]
            script_env = list(env)
            for m in mounts:
                script_env.extend(m.env)
            spec_argv, extra = _heredoc_script(ins, argv, stack)
            sandbox_mounts.extend(extra)
            r, w = os.pipe()
            devnull = os.open(os.devnull, os.O_RDONLY)
            stack.callback(os.close, devnull)
            reader = threading.Thread(target=_pump, args=(r, run.solver.progress, vertex), daemon=True)
            reader.start()
            try:
                spec = SandboxSpec(
                    lowerdirs=run.lowerdirs(), upperdir=upper, workdir=work, argv=spec_argv,
                    env=script_env, cwd=cwd, user=cfg.get("User") or "",
                    hostname=run.solver.opts.build_args.get("BUILDKIT_SANDBOX_HOSTNAME", "buildkitsandbox"),
                    network="none" if network == "none" else "host", mounts=sandbox_mounts,
                    stdin=devnull, stdout=w, stderr=w)
                rc = sandbox_run(spec)
            finally:
                os.close(w)
                reader.join()
            if rc != 0:
                tail = "\n".join(f"  {line}" for line in vertex.tail)
                cmd = " ".join(argv)
                msg = (f'{run.df.filename}:{ins.line}: RUN failed: process "{cmd}" did not complete '
                       f"successfully: exit code: {rc}")
                if tail:
                    msg += f"\n  last output:\n{tail}"
                raise BuildError(msg)
            from runtime.rootfs import keep_runc_mount_points

            keep_runc_mount_points(spec.lowerdirs, upper)
            return _commit(run, upper)

    run.layer_step(ins, n, created_by, inputs, execute)


def _pump(fd: int, progress, vertex) -> None:
    with os.fdopen(fd, "rb", buffering=0) as f:
        while True:
            chunk = f.read(65536)
            if not chunk:
                break
            progress.log(vertex, chunk)


def _run_argv(run, ins: ast.Run) -> list[str]:
    cmd = ins.command
    if cmd.exec_form:
        return list(cmd.args)
    text = cmd.args[0] if cmd.args else ""
    shell = run.state.config["config"].get("Shell") or DEFAULT_SHELL
    if ins.heredocs:
        bodies = "".join(f"{h.content}{'' if h.content.endswith(chr(10)) else chr(10)}{h.name}\n"
                         for h in ins.heredocs)
        first = ins.heredocs[0]
        if _only_heredoc(text, first) and len(ins.heredocs) == 1:
            return [*shell, first.text()]
        text = text + "\n" + bodies
    return [*shell, text]


def _only_heredoc(text: str, h: ast.Heredoc) -> bool:
    word = text.strip()
    return word.lstrip("0123456789") in (f"<<{h.name}", f"<<-{h.name}", f"<<'{h.name}'",
                                         f'<<"{h.name}"', f"<<-'{h.name}'", f'<<-"{h.name}"')


def _heredoc_script(ins: ast.Run, argv: list[str], stack):
    """`RUN <<EOF` with a `#!` line runs the heredoc as a script file, as BuildKit does."""
    if not ins.heredocs or ins.command.exec_form or len(ins.heredocs) != 1:
        return argv, []
    h = ins.heredocs[0]
    body = h.text()
    if not body.startswith("#!") or not _only_heredoc(ins.command.args[0] if ins.command.args else "", h):
        return argv, []
    from runtime.spec import Mount

    d = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pybuild-heredoc-")))
    script = d / "script"
    script.write_text(body)
    script.chmod(0o755)
    target = f"/dev/pipes/{h.name}"
    return [target], [Mount(type="bind", source=str(script), target=target, readonly=True)]


def _copy(run, ins, n: int) -> None:
    from builder import copy_step

    copy_step.execute(run, ins, n)


_HANDLERS = {
    ast.Env: _env, ast.Label: _label, ast.Maintainer: _maintainer, ast.Arg: _arg, ast.Cmd: _cmd,
    ast.Entrypoint: _entrypoint, ast.Shell: _shell, ast.Expose: _expose, ast.Volume: _volume,
    ast.User: _user, ast.StopSignal: _stopsignal, ast.Healthcheck: _healthcheck,
    ast.Onbuild: _onbuild, ast.Workdir: _workdir, ast.Run: _run, ast.Copy: _copy, ast.Add: _copy,
}
