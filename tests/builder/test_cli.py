"""The CLI loads only the command module a command line needs: its map must name every
command each module registers, and a command line must parse as it does with all of them.
`run` and `create` parse with builder.flags: no argparse on their path."""
from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys

import pytest

from builder import cli
from builder.flags import parse


def _registered(modules) -> dict[str, str]:
    sub = argparse.ArgumentParser().add_subparsers()
    out: dict[str, str] = {}
    for m in modules:
        before = set(sub.choices)
        importlib.import_module(f"builder.commands.{m}").register(sub)
        out.update(dict.fromkeys(set(sub.choices) - before, m))
    return out


def test_the_map_names_every_command_of_every_module():
    assert _registered(cli.COMMAND_MODULES) == cli.COMMAND_OF


@pytest.mark.parametrize("argv, want", [
    (["run", "--rm", "busybox", "true"], ("run",)),
    (["--root", "/tmp/x", "--debug", "ps", "-a"], ("run", "containers")),
    (["--root", "run", "volume", "ls"], ("volumes",)),
    (["-h", "run"], cli.COMMAND_MODULES),
    ([], cli.COMMAND_MODULES),
    (["biuld", "."], cli.COMMAND_MODULES),
])
def test_a_command_line_loads_its_own_module(argv, want):
    assert cli.modules_for(argv) == want


@pytest.mark.parametrize("argv", [
    ["ps", "-a", "-q"],
    ["stats", "--no-stream"],
    ["volume", "ls"],
    ["build", "-t", "a", "."],
    ["inspect", "x"],
])
def test_a_command_line_parses_the_same_with_only_its_module(argv):
    full, lean = cli.make_parser(), cli.make_parser(argv)
    assert vars(lean.parse_args(argv)) == vars(full.parse_args(argv))


def _flag_args(argv):
    start, word, debug, root = cli._flag_command(argv)
    module = importlib.import_module(f"builder.commands.{cli.COMMAND_OF[word]}")
    return word, debug, root, parse(module.flag_command(word), argv[start:])


@pytest.mark.parametrize("argv, word, debug, root", [
    (["run", "--rm", "busybox", "true"], "run", False, None),
    (["--debug", "--root", "/r", "run", "busybox"], "run", True, "/r"),
    (["--root=/r", "container", "create", "busybox"], "create", False, "/r"),
])
def test_run_and_create_lines_go_to_the_flag_parser(argv, word, debug, root):
    got_word, got_debug, got_root, args = _flag_args(argv)
    assert (got_word, got_debug, got_root, args.image) == (word, debug, root, "busybox")


@pytest.mark.parametrize("argv", [["ps", "-a"], ["--version", "run", "x"], ["-h", "run"],
                                  ["--root", "run", "volume", "ls"], ["container", "ls"]])
def test_other_lines_go_to_argparse(argv):
    assert cli._flag_command(argv) is None


def test_create_takes_every_flag_of_run():
    argv = ["-d", "--name", "x", "-e", "A=1", "-p", "80:80", "--health-retries", "3", "busybox",
            "sh", "-c", "true"]
    *_, run = _flag_args(["run", *argv])
    *_, create = _flag_args(["create", *argv])
    assert run.func is not create.func
    del run.func, create.func
    assert not hasattr(create, "sig_proxy")     # run's own (builder.commands.run.RUN_ONLY)
    del run.sig_proxy
    assert vars(run) == vars(create)


_PROBE = """
import json, sys
from builder.cli import main
rc = main(json.loads(sys.argv[1]))
print(json.dumps([rc, sorted(sys.modules)]), file=sys.__stderr__)
"""


def test_a_run_loads_no_argparse(busybox_root, repo_root):
    """`run --rm --network none IMAGE true` (the start-up goal's line) never imports argparse,
    nor gettext, which it brings (locale too, but a pybuild0 bridge left by another test makes
    the run sweep it, with subprocess and its locale)."""
    argv = ["run", "--rm", "--network", "none", "busybox", "true"]
    r = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(argv)], cwd=repo_root,
                       capture_output=True, text=True, timeout=120, check=False)
    rc, mods = json.loads(r.stderr.strip().splitlines()[-1])
    assert rc == 0, r.stderr
    assert "builder.flags" in mods
    assert not {"argparse", "gettext"} & set(mods)
