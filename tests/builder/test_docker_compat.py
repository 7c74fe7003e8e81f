"""docs/DOCKER_COMPAT.md: every flag docker 20.10's CLI (the test command's docker.io client,
read from its own `--help`; BuildKit's build) has in the build, image, container and system
groups, and whether pybuild takes it: supported, supported with a stated difference, or not
yet. The table is regenerated here and must equal the committed one (after a CLI change:
`PYBUILD_WRITE_DOCS=1 .venv/bin/python -m pytest tests/builder/test_docker_compat.py`), and
each flag it calls supported is checked against the parsers themselves (argparse's option
registry, builder.flags' tables), not against the table's generator."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "DOCKER_COMPAT.md"
DOCKER = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else shutil.which("docker")
pytestmark = pytest.mark.skipif(DOCKER is None, reason="needs docker.io's client (./test.sh "
                                                       "installs it: apt-get install docker.io)")
GROUPS = ("image", "container", "system")
# flags pybuild takes whose behaviour differs from docker's in a way a user may notice
DIFFERENCES = {
    ("build", "--network"): "also bridge (default's other name), which BuildKit refuses",
    ("image build", "--network"): "also bridge (default's other name), which BuildKit refuses",
    ("build", "--platform"): "only this machine's platform",
    ("build", "--output"): "local, tar, oci, docker and registry exporters",
    ("container run", "--restart"): "nothing restarts containers after a reboot (no daemon)",
    ("container create", "--restart"): "nothing restarts containers after a reboot (no daemon)",
    ("container run", "--network"): "bridge, host, none or a user network",
    ("container create", "--network"): "bridge, host, none or a user network",
    ("image ls", "--all"): "pybuild keeps no intermediate images: the same list",
    ("system df", "--verbose"): "accepted; prints the summary",
    ("container export", "--output"): "no docker init layer (.dockerenv, /etc/hosts... stubs)",
    ("container run", "--sig-proxy"): "=false: a signal that ends pybuild ends the container",
    ("container run", "--platform"): "only this machine's platform",
    ("image rm", "--no-prune"): "pybuild keeps no untagged parents: the same as without it",
    ("container run", "--log-driver"): "json-file or none",
    ("container create", "--log-driver"): "json-file or none",
    **{(cmd, "--disable-content-trust"): "no content trust here: =false is refused"
       for cmd in ("build", "image build", "image pull", "image push", "container run",
                   "container create")},
    ("container create", "--platform"): "only this machine's platform",
}
_OPTION = re.compile(r"^\s+(?:-(\w), )?--([\w-]+)(?: (\w+))?\s{2,}")


def docker_help(*words: str) -> str:
    r = subprocess.run([DOCKER, *words, "--help"], capture_output=True, text=True, check=False,
                       env={**os.environ, "DOCKER_BUILDKIT": "1"})
    assert r.returncode == 0, r.stderr
    return r.stdout


def docker_flags(*words: str) -> list[tuple[str, str]]:
    """[(--long, -short or "")] of `docker WORDS --help`'s Options."""
    out, inside = [], False
    for line in docker_help(*words).splitlines():
        if line.startswith("Options:"):
            inside = True
            continue
        if inside and line and not line.startswith(" "):
            break
        m = _OPTION.match(line) if inside else None
        if m:
            out.append(("--" + m.group(2), "-" + m.group(1) if m.group(1) else ""))
    return out


def docker_subcommands(group: str) -> list[str]:
    out, inside = [], False
    for line in docker_help(group).splitlines():
        if line.startswith("Commands:"):
            inside = True
            continue
        if inside and not line.strip():
            break
        if inside:
            out.append(line.split()[0])
    return out


def commands() -> list[tuple[str, ...]]:
    return [("build",), *((g, s) for g in GROUPS for s in docker_subcommands(g))]


def pybuild_flags(path: tuple[str, ...]) -> set[str] | None:
    """The option strings pybuild's own parser for `pybuild PATH` recognises, or None when it
    has no such command: argparse's registry, or builder.flags' table for run and create."""
    import argparse
    import importlib

    from builder import cli

    if path[-1] in cli.FLAG_COMMANDS and (len(path) == 1 or path[0] == "container"):
        mod = importlib.import_module(f"builder.commands.{cli.COMMAND_OF[path[-1]]}")
        cmd = mod.flag_command(path[-1])
        return {"--" + n for n in cmd._long} | {"-" + n for n in cmd._short}
    parser = cli.make_parser(list(path))
    for word in path:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None or word not in sub.choices:
            return None
        parser = sub.choices[word]
    return set(parser._option_string_actions)


def table() -> str:
    rows = ["# Docker CLI compatibility", "",
            "Every flag of docker 20.10's `build`, `image`, `container` and `system` commands "
            "(read from its own `--help`, BuildKit's build) and whether pybuild takes it. "
            "Generated and checked by tests/builder/test_docker_compat.py; pybuild-only flags "
            "are in [REFERENCE.md](REFERENCE.md).", ""]
    total = supported = 0
    body = []
    for path in commands():
        have = pybuild_flags(path)
        name = " ".join(path)
        flags = docker_flags(*path)
        if have is None:
            body.append(f"| `{name}` | (the command) | not yet |")
            total += 1
            continue
        for long, short in flags:
            total += 1
            ok = long in have and (not short or short in have)
            if ok:
                supported += 1
                note = DIFFERENCES.get((name, long))
                status = f"supported, differs: {note}" if note else "supported"
            elif long in have:
                supported += 1
                status = f"supported as {long} only (no {short})"
            else:
                status = "not yet"
            flag = f"{short}, {long}" if short else long
            body.append(f"| `{name}` | `{flag}` | {status} |")
    rows += [f"{supported} of {total} docker flags and commands are taken.", "",
             "| command | flag | pybuild |", "|---|---|---|", *body]
    return "\n".join(rows) + "\n"


def test_the_table_is_current():
    want = table()
    if os.environ.get("PYBUILD_WRITE_DOCS"):
        DOC.write_text(want)
    assert DOC.read_text() == want, ("docs/DOCKER_COMPAT.md is stale: regenerate it with "
                                     "PYBUILD_WRITE_DOCS=1 (see the module docstring)")


def test_every_supported_flag_is_taken_as_stated():
    """Each row the committed table calls supported names a flag the parser recognises."""
    row = re.compile(r"^\| `([^`]+)` \| `([^`]+)` \| (supported[^|]*) \|$")
    checked = 0
    for line in DOC.read_text().splitlines():
        m = row.match(line)
        if not m:
            continue
        path, flag, status = tuple(m.group(1).split()), m.group(2), m.group(3)
        names = [f.strip() for f in flag.split(",")]
        have = pybuild_flags(path)
        assert have is not None, path
        must = [names[-1]] if status.startswith("supported as") else names
        assert all(n in have for n in must), (path, flag, status)
        checked += 1
    assert checked > 100
