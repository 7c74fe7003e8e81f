"""RUN: the command in `runtime.sandbox` over an overlay of the stage's layers; the upper dir,
plus the mount points runc leaves behind, is the layer."""
from __future__ import annotations

import contextlib
import os
import shutil
import threading
from pathlib import Path

from builder.errors import BuildError
from builder.mounts import parse_mounts
from builder.steps.config import DEFAULT_SHELL
from builder.steps.layer import commit, scratch
from cache import owner
from cache.overlayfmt import lookup
from grammar import ast, gopath

RUNC_MOUNT_DIRS = ("dev", "proc", "sys")


def host_network_refused(ins: ast.Run, allowed: bool) -> str | None:
    """BuildKit's network.host entitlement: a Dockerfile's `RUN --network=host` reaches the
    host's interfaces (its loopback services too) only when the user granted it, by `--allow
    network.host` or a build that is `--network host` itself (as dockerd grants it)."""
    if ins.flag("network") != "host" or allowed:
        return None
    return ("RUN --network=host: network.host is not allowed (grant it with --allow network.host, "
            "or build with --network host)")


def run_step(run, ins: ast.Run, n: int) -> None:
    cfg = run.state.config["config"]
    argv = _run_argv(run, ins)
    env = run.run_env()
    network = ins.flag("network") or "default"
    if network not in ("default", "host", "none"):
        raise run.error(ins, f'invalid network mode "{network}"')
    refused = host_network_refused(ins, run.solver.opts.allow_host_network)  # and before step 1
    if refused:
        raise run.error(ins, refused)
    if network == "default":        # BuildKit: only a RUN's own host/none beats the build's
        network = run.solver.opts.network
    security = ins.flag("security") or "sandbox"
    if security == "insecure":
        raise run.error(ins, "RUN --security=insecure is not allowed: pybuild grants no "
                        "security.insecure entitlement")
    cwd = gopath.clean(cfg.get("WorkingDir") or "/")  # WorkingDir keeps "/app/" as written
    mounts = parse_mounts(run, ins, cwd)
    declared = [(k, v) for k, v in run.args.items() if v is not None]
    shown = [f"|{len(declared)}", *(f"{k}={v}" for k, v in declared)] if declared else []
    created_by = "RUN " + " ".join([*shown, *argv]) + " # buildkit"
    inputs = {"argv": argv, "env": env, "user": cfg.get("User") or "", "cwd": cwd,
              "network": network, "mounts": [m.key for m in mounts],
              "heredocs": [[h.name, h.content] for h in ins.heredocs]}
    opts = run.solver.opts
    hosts = opts.extra_hosts
    for name, value in (("extra_hosts", hosts), ("shm_size", opts.shm_size),
                        ("ulimits", opts.ulimits)):
        if value:               # --add-host, --shm-size, --ulimit: BuildKit keys its exec meta
            inputs[name] = value

    def execute(vertex):
        from runtime.sandbox import run as sandbox_run
        from runtime.spec import SandboxSpec

        store = run.solver.store
        with scratch(store) as (upper, work), contextlib.ExitStack() as stack:
            sandbox_mounts = [sm for m in mounts if (sm := m.realize(stack)) is not None]
            script_env = list(env)
            for m in mounts:
                script_env.extend(m.env)
            spec_argv, extra = _heredoc_script(ins, argv, stack, store.tmp)
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
                    network="bridge" if network == "default" else network, own_hosts=True,
                    mounts=sandbox_mounts,
                    extra_hosts=hosts, shm_size=opts.shm_size, ulimits=opts.ulimits,
                    stdin=devnull, stdout=w, stderr=w,
                    volatile=True)      # the commit syncs the layer (cache.atomic.sync_tree)
                if run.solver.cancelled.is_set():
                    raise KeyboardInterrupt      # ^C came before this step could start
                rc = sandbox_run(spec, on_start=run.solver.track, on_end=run.solver.untrack)
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
            keep_runc_mount_points(spec.lowerdirs, upper)
            return commit(run, upper)

    run.layer_step(ins, n, created_by, inputs, execute)


def keep_runc_mount_points(lowerdirs: list, upperdir) -> list[str]:
    """Add /dev, /proc and /sys to a RUN's upper dir when the image lacks them; returns what
    was added. BuildKit's RUN layers hold them: runc makes these mount points in the rootfs as
    0755 root dirs and BuildKit's stub cleaner removes only /etc/hosts, /etc/resolv.conf and
    RUN --mount targets (executor/stubs.go; moby/buildkit#3455 shows proc/ and sys/ in a RUN
    layer over busybox). pybuild's sandbox stub layer keeps them out of the diff, so they are
    put back here, for RUN only (COPY and WORKDIR run no container in BuildKit either)."""
    added = []
    for name in RUNC_MOUNT_DIRS:
        target = os.path.join(os.fspath(upperdir), name)
        if os.path.lexists(target) or lookup(lowerdirs, name) is not None:
            continue
        os.mkdir(target, 0o755)
        os.chmod(target, 0o755)  # whatever the umask
        added.append("/" + name)
    return added


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
    """Is the command nothing but this heredoc's marker (`<<EOF`, `3<<-'E"O"F'`, ...)? Read by
    the parser's one marker reader, as BuildKit's dispatchRun uses parser.MustParseHeredoc."""
    from grammar.parser import parse_heredoc  # only a RUN with a heredoc: the parser module (its
                                              # dataclass and regexes) stays out of other builds

    marker = parse_heredoc(text.strip())
    return marker is not None and marker[0] == h.name


def _heredoc_script(ins: ast.Run, argv: list[str], stack, tmp):
    """`RUN <<EOF` with a `#!` line runs the heredoc as a script file, as BuildKit does."""
    if not ins.heredocs or ins.command.exec_form or len(ins.heredocs) != 1:
        return argv, []
    h = ins.heredocs[0]
    body = h.text()
    if not body.startswith("#!") or not _only_heredoc(ins.command.args[0] if ins.command.args else "", h):
        return argv, []
    from runtime.spec import Mount

    d = Path(owner.temp_dir(tmp, "heredoc"))  # in the store's tmp/: prune removes it after a kill
    stack.callback(shutil.rmtree, d, ignore_errors=True)
    script = d / "script"
    script.write_text(body)
    script.chmod(0o755)
    target = f"/dev/pipes/{h.name}"
    return [target], [Mount(type="bind", source=str(script), target=target, readonly=True)]
