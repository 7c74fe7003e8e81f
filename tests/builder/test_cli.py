"""The CLI loads only the command module a command line needs: its map must name every
command each module registers, and a command line must parse as it does with all of them."""
from __future__ import annotations

import argparse
import importlib

import pytest

from builder import cli


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
    ["run", "-d", "--name", "x", "-e", "A=1", "busybox", "sh", "-c", "true"],
    ["create", "--rm", "busybox"],
    ["ps", "-a", "-q"],
    ["stats", "--no-stream"],
    ["volume", "ls"],
    ["build", "-t", "a", "."],
    ["inspect", "x"],
])
def test_a_command_line_parses_the_same_with_only_its_module(argv):
    full, lean = cli.make_parser(), cli.make_parser(argv)
    assert vars(lean.parse_args(argv)) == vars(full.parse_args(argv))
