"""Which executor runs which instruction, and a base image's ONBUILD triggers."""
from __future__ import annotations

import grammar
from builder.steps import config  # the module, not the package: __init__ is empty
from builder.steps.copy import copy_step
from builder.steps.run import run_step
from builder.steps.workdir import workdir
from grammar import ast
from grammar.errors import DockerfileError

_HANDLERS = {
    ast.Env: config.env, ast.Label: config.label, ast.Maintainer: config.maintainer, ast.Arg: config.arg,
    ast.Cmd: config.cmd, ast.Entrypoint: config.entrypoint, ast.Shell: config.shell,
    ast.Expose: config.expose, ast.Volume: config.volume, ast.User: config.user,
    ast.StopSignal: config.stopsignal,
    ast.Healthcheck: config.healthcheck, ast.Onbuild: config.onbuild, ast.Workdir: workdir, ast.Run: run_step,
    ast.Copy: copy_step, ast.Add: copy_step,
}


def dispatch(run, ins: ast.Instruction, n: int) -> None:
    """Apply one instruction to the stage's state."""
    handler = _HANDLERS.get(type(ins))
    if handler is None:
        raise run.error(ins, f"{ins.kind} is not supported here")
    handler(run, ins, n)


def run_onbuild(run, triggers: list[str]) -> None:
    """Run a base image's ONBUILD triggers first in the child stage (they are then cleared)."""
    for text in triggers:
        try:
            df = grammar.parse(text, filename=f"{run.df.filename} (ONBUILD of {run.stage.base})")
        except DockerfileError as e:
            raise run.error(run.stage.from_,
                            f"bad ONBUILD trigger {text!r} in base image: {e.message}") from None
        for ins in df.instructions:
            dispatch(run, ins, 1)
