"""WORKDIR: set the config's WorkingDir (BuildKit's NormalizeWorkdir) and make the directory
in a layer of its own, owned by the stage's USER as BuildKit does."""
from __future__ import annotations

from pathlib import Path

from builder.steps.layer import commit, scratch
from grammar import ast, gopath


def workdir(run, ins: ast.Workdir, n: int) -> None:
    cur = run.state.config["config"].get("WorkingDir") or "/"
    path = gopath.normalize_workdir(cur, run.expand(ins, ins.path))
    run.state.config["config"]["WorkingDir"] = path
    if gopath.clean(path) == "/":
        run.config_step(ins, f"WORKDIR {path}")
        return
    user = run.state.config["config"].get("User") or ""

    def execute(vertex):  # imported here: a cached step never loads the copy and mount code
        from builder.copying import make_dirs
        from builder.users import resolve_chown
        from runtime.snapshotter import mounted

        with scratch(run.solver.store) as (upper, work):
            with mounted(run.lowerdirs(), upper, work, volatile=True) as root:  # commit syncs
                owner = resolve_chown(user, Path(root), strict=False) if user else None
                make_dirs(Path(root), gopath.clean(path), owner)
            return commit(run, upper)

    run.layer_step(ins, n, f"WORKDIR {path}", {"path": path, "user": user}, execute)
