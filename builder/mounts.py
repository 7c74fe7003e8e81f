"""`RUN --mount=...`: parse BuildKit's CSV mount specs and turn them into sandbox mounts.

bind (the default type) mounts the context, a stage or an image read-only (`rw` writes go to a
throw-away overlay); cache mounts a directory kept in the store across builds, never part of the
image or the key; tmpfs is a fresh tmpfs; secret mounts a `--secret` file (or sets an env var);
ssh binds a relay to the agent `--ssh ID` forwarded (builder.sshagent, with the mount's uid,
gid and mode) at /run/buildkit/ssh_agent.N and sets SSH_AUTH_SOCK to the first, as BuildKit.
"""
from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

from builder.steps.layer import scratch
from cache import layout
from grammar import ast, gopath
from grammar.mountspec import MountError, MountSpec, parse_mount


@dataclass
class RunMount:
    """A parsed `--mount` (`spec`, target resolved against WORKDIR) bound to its stage run."""

    spec: MountSpec
    target: str
    run: object = None
    line: int = 0
    env: list[str] = field(default_factory=list)
    secret_id: str = ""

    @property
    def type(self) -> str:
        return "env" if self.env else self.spec.type

    @property
    def key(self) -> list:
        """What of the mount goes into the RUN's cache key (never cache or secret contents)."""
        k = [self.type, self.target]
        if self.type == "bind":
            k += [self.spec.source or "/", self.spec.from_, not self.spec.readonly,
                  self._bind_source_digest()]
        return k

    def _bind_source_digest(self) -> str:
        frm = self.spec.from_
        run = self.run
        if frm:
            i = run.solver.plan.stage_by_ref(frm, run.stage.index)
            if i is not None:
                return run.solver.stage_result(i).key
            return run.solver.image(frm, self.line).id  # pulled when missing, as FROM
        ctx = run.solver.context()
        src = self.spec.source or "/"
        return ctx.digest(ctx.select([src]))

    def realize(self, stack):
        """The `runtime.spec.Mount` for this mount; cleanup is registered on `stack`."""
        from runtime.spec import Mount

        run = self.run
        store = run.solver.store
        if self.type == "env":  # a secret given as an environment variable: nothing to mount
            return None
        spec = self.spec
        if self.type == "tmpfs":
            return Mount(type="tmpfs", source="tmpfs", target=self.target, readonly=spec.readonly,
                         options=[f"size={spec.size}"] if spec.size else [])
        if self.type == "secret":
            return Mount(type="bind", source=str(run.solver.opts.secrets[self.secret_id]), target=self.target,
                         readonly=True)
        if self.type == "ssh":      # a relay of the step's own to the agent (builder.sshagent)
            from builder.sshagent import relay

            sock = relay(run.solver.opts.ssh[self.secret_id], store.tmp, spec.uid or 0,
                         spec.gid or 0, 0o600 if spec.mode is None else spec.mode, stack)
            return Mount(type="bind", source=sock, target=self.target, readonly=True)
        if self.type == "cache":
            d = Path(store.root) / layout.CACHE_MOUNTS_DIR / _safe_name(spec.id or self.target)
            if not d.exists():
                d.mkdir(parents=True, exist_ok=True)
                os.chmod(d, 0o755 if spec.mode is None else spec.mode)
                os.chown(d, spec.uid or 0, spec.gid or 0)
            return Mount(type="bind", source=str(d), target=self.target, readonly=spec.readonly)
        # bind
        from runtime.snapshotter import mounted

        frm = spec.from_
        if frm:
            i = run.solver.plan.stage_by_ref(frm, run.stage.index)
            diff_ids = (run.solver.stage_result(i).diff_ids if i is not None
                        else run.solver.image(frm, self.line).diff_ids)
            layers = store.layer_dirs(diff_ids)
            root = Path(stack.enter_context(mounted(layers, tmp=store.tmp)))
        else:
            root = Path(run.solver.opts.context)
        src = _inside(root, spec.source or "/")
        if not spec.readonly and src.is_dir():  # writes go to a throw-away upper dir
            upper, work = stack.enter_context(scratch(store))
            src = Path(stack.enter_context(mounted([src], upper, work)))
        return Mount(type="bind", source=str(src), target=self.target, readonly=spec.readonly)


def _safe_name(cid: str) -> str:
    import hashlib

    return hashlib.sha256(cid.encode()).hexdigest()[:32]


def _inside(root: Path, rel: str) -> Path:
    """`rel` under `root`, resolved as if `root` were `/` (as BuildKit's fs.RootPath): a
    symlink in a stage (`x -> /`) cannot make the bind source a host path."""
    from cache.fspath import resolve
    return Path(resolve(root, rel))


def parse_mounts(run, ins: ast.Run, cwd: str) -> list[RunMount]:
    """Every `--mount` of a RUN, expanded, checked (`grammar.mountspec`) and with relative
    targets resolved against WORKDIR."""
    out: list[RunMount] = []
    for text in ins.flag_values("mount"):
        try:
            spec = parse_mount(text or "", lambda v: run.expand(ins, v))
        except MountError as e:
            raise run.error(ins, str(e)) from None
        if spec.type == "ssh":      # BuildKit's: the agent socket --ssh forwarded, by id
            sid = spec.id or "default"
            sock = run.solver.opts.ssh.get(sid)
            if sock is None:
                if spec.required:
                    raise run.error(ins, f'no SSH key "{sid}" forwarded from the client: pass '
                                    f"--ssh {sid}[=SOCKET|KEY]")
                continue
            n = sum(1 for m in out if m.type == "ssh")
            target = spec.target or f"/run/buildkit/ssh_agent.{n}"
            target = gopath.clean(target if target.startswith("/") else gopath.join(cwd, target))
            out.append(RunMount(spec, target, run, ins.line, secret_id=sid))
            env = (run.state.config.get("config") or {}).get("Env") or []
            if n == 0 and not any(e.startswith("SSH_AUTH_SOCK=") for e in env):
                out.append(RunMount(spec, "", run, ins.line, [f"SSH_AUTH_SOCK={target}"], sid))
            continue
        target = spec.target
        sid = ""
        if spec.type == "secret":
            sid = spec.id or posixpath.basename(target)
            if not sid:
                raise run.error(ins, "secret mount needs an id or a target")
            if sid not in run.solver.opts.secrets:
                if spec.required:
                    raise run.error(ins, f'secret "{sid}" is required but was not given: pass '
                                    f"--secret id={sid},src=FILE")
                continue
            if spec.env and not target:
                try:  # any bytes: the environment carries them as os.fsdecode does
                    value = os.fsdecode(Path(run.solver.opts.secrets[sid]).read_bytes()).rstrip("\n")
                except OSError as e:
                    raise run.error(ins, f"secret {sid}: {e.strerror}") from None
                out.append(RunMount(spec, "", run, ins.line, [f"{spec.env}={value}"], sid))
                continue
            target = target or f"/run/secrets/{sid}"
        target = gopath.clean(target if target.startswith("/") else gopath.join(cwd, target))
        if target == "/":
            raise run.error(ins, 'invalid mount target "/"')
        out.append(RunMount(spec, target, run, ins.line, secret_id=sid))
    return [m for m in out if m.type != "env"] + [m for m in out if m.type == "env"]
