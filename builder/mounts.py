"""`RUN --mount=...`: parse BuildKit's CSV mount specs and turn them into sandbox mounts.

bind (the default type) mounts the context, a stage or an image read-only (`rw` writes go to a
throw-away overlay); cache mounts a directory kept in the store across builds, never part of the
image or the key; tmpfs is a fresh tmpfs; secret mounts a `--secret` file (or sets an env var).
"""
from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

from grammar import ast

MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")


@dataclass
class RunMount:
    type: str
    target: str
    opts: dict[str, str]
    run: object = None
    line: int = 0
    env: list[str] = field(default_factory=list)

    @property
    def key(self) -> list:
        """What of the mount goes into the RUN's cache key (never cache or secret contents)."""
        k = [self.type, self.target]
        if self.type == "bind":
            k += [self.opts.get("source", "/"), self.opts.get("from", ""), "rw" in self.opts,
                  self._bind_source_digest()]
        return k

    def _bind_source_digest(self) -> str:
        frm = self.opts.get("from")
        run = self.run
        if frm:
            i = run.solver.plan.stage_by_ref(frm, run.stage.index)
            if i is not None:
                return run.solver.stage_result(i).key
            return run.solver.store.resolve(frm)
        ctx = run.solver.context()
        src = self.opts.get("source", "/")
        return ctx.digest(ctx.select([src]))

    def realize(self, stack):
        """The `runtime.sandbox.Mount` for this mount; cleanup is registered on `stack`."""
        from runtime.spec import Mount

        run = self.run
        store = run.solver.store
        if self.type == "env":  # a secret given as an environment variable: nothing to mount
            return None
        if self.type == "tmpfs":
            size = self.opts.get("size")
            return Mount(type="tmpfs", source="tmpfs", target=self.target, readonly=False,
                         options=[f"size={size}"] if size else [])
        if self.type == "secret":
            sid = self.opts["id"]
            return Mount(type="bind", source=str(run.solver.opts.secrets[sid]), target=self.target,
                         readonly=True)
        if self.type == "cache":
            cid = self.opts.get("id") or self.target
            d = Path(store.root) / "cache-mounts" / _safe_name(cid)
            if not d.exists():
                d.mkdir(parents=True, exist_ok=True)
                os.chmod(d, int(self.opts.get("mode", "755"), 8))
                os.chown(d, int(self.opts.get("uid", "0")), int(self.opts.get("gid", "0")))
            return Mount(type="bind", source=str(d), target=self.target, readonly="ro" in self.opts)
        # bind
        from runtime.snapshotter import mounted

        frm = self.opts.get("from")
        if frm:
            i = run.solver.plan.stage_by_ref(frm, run.stage.index)
            diff_ids = run.solver.stage_result(i).diff_ids if i is not None else store.image(frm).diff_ids
            root = Path(stack.enter_context(mounted([store.layer_dir(d) for d in reversed(diff_ids)])))
        else:
            root = Path(run.solver.opts.context)
        src = _inside(root, self.opts.get("source", "/"))
        if "rw" in self.opts:
            tmp = Path(store.new_scratch())
            (tmp / "u").mkdir()
            (tmp / "w").mkdir()
            stack.callback(lambda: __import__("shutil").rmtree(tmp, ignore_errors=True))
            if src.is_dir():
                src = Path(stack.enter_context(mounted([src], tmp / "u", tmp / "w")))
        return Mount(type="bind", source=str(src), target=self.target, readonly="rw" not in self.opts)


def _safe_name(cid: str) -> str:
    import hashlib

    return hashlib.sha256(cid.encode()).hexdigest()[:32]


def _inside(root: Path, rel: str) -> Path:
    """`rel` under `root`, resolved as if `root` were `/` (as BuildKit's fs.RootPath): a
    symlink in a stage (`x -> /`) cannot make the bind source a host path."""
    from cache.fspath import resolve
    return Path(resolve(root, rel))


def parse_mounts(run, ins: ast.Run, cwd: str) -> list[RunMount]:
    """Every `--mount` of a RUN, validated and with relative targets resolved against WORKDIR."""
    out: list[RunMount] = []
    for spec in ins.flag_values("mount"):
        opts: dict[str, str] = {}
        mtype = "bind"
        for field_ in _csv(spec or ""):
            k, eq, v = field_.partition("=")
            k = k.strip().lower()
            if k == "type":
                mtype = v.strip().lower()
                continue
            if k in ("target", "dst", "destination"):
                k = "target"
            if k in ("source", "src"):
                k = "source"
            if k == "readwrite":
                k = "rw"
            if k == "readonly":
                k = "ro"
            opts[k] = run.expand(ins, v) if eq and k != "from" else v
        if mtype not in MOUNT_TYPES:
            raise run.error(ins, f'unsupported mount type "{mtype}"')
        if mtype == "ssh":
            raise run.error(ins, "RUN --mount=type=ssh is not supported by pybuild yet")
        if mtype == "secret":
            sid = opts.get("id") or posixpath.basename(opts.get("target", ""))
            if not sid:
                raise run.error(ins, "secret mount needs an id or a target")
            opts["id"] = sid
            if sid not in run.solver.opts.secrets:
                if opts.get("required", "false") in ("", "true"):
                    raise run.error(ins, f'secret "{sid}" is required but was not given: pass '
                                    f"--secret id={sid},src=FILE")
                continue
            if "env" in opts and "target" not in opts:
                value = Path(run.solver.opts.secrets[sid]).read_text().rstrip("\n")
                out.append(RunMount("env", "", opts, run, ins.line, [f"{opts['env']}={value}"]))
                continue
            opts.setdefault("target", f"/run/secrets/{sid}")
        target = opts.get("target")
        if not target:
            raise run.error(ins, f"mount type {mtype} needs a target")
        target = posixpath.normpath(posixpath.join(cwd, target))
        if target == "/":
            raise run.error(ins, 'invalid mount target "/"')
        out.append(RunMount(mtype, target, opts, run, ins.line))
    return [m for m in out if m.type != "env"] + [m for m in out if m.type == "env"]


def _csv(text: str) -> list[str]:
    import csv

    return next(csv.reader([text])) if text else []
