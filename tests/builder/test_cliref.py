"""docs/REFERENCE.md and the shell completions come from the command definitions
(builder.cliref): the committed reference must be what they give now (regenerate with
PYBUILD_WRITE_DOCS=1), and bash, driven as a user's shell drives it, completes commands,
subcommands and flags from the script `pybuild completion bash` prints."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from builder import cli, cliref

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "REFERENCE.md"


def tree():
    return cliref.commands(cli.make_parser(None), cli.flag_commands())


def test_the_reference_is_current():
    want = cliref.reference(tree())
    if os.environ.get("PYBUILD_WRITE_DOCS"):
        DOC.write_text(want)
    assert DOC.read_text() == want, "docs/REFERENCE.md is stale: regenerate with PYBUILD_WRITE_DOCS=1"


def test_every_command_is_in_the_reference():
    text = DOC.read_text()
    for c in cliref.walk(tree()):
        if c.path:
            assert f"## pybuild {' '.join(c.path)}\n" in text, c.path
    assert "| `-m, --memory` |" in text and "| `--check-reproducible` |" in text


def _complete(script: str, words: list[str]) -> list[str]:
    arr = " ".join(f"'{w}'" for w in words)
    r = subprocess.run(["bash", "-c", f'source /dev/stdin; COMP_WORDS=({arr}); '
                        f'COMP_CWORD={len(words) - 1}; _pybuild; printf "%s\\n" "${{COMPREPLY[@]}}"'],
                       input=script, capture_output=True, text=True, check=True)
    return r.stdout.split()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completion_from_the_cli():
    r = subprocess.run([sys.executable, "-m", "builder", "completion", "bash"], cwd=REPO,
                       capture_output=True, text=True, check=True)
    script = r.stdout
    assert _complete(script, ["pybuild", "bui"]) == ["build", "builder"]
    assert _complete(script, ["pybuild", "image", "l"]) == ["load", "ls"]
    assert set(_complete(script, ["pybuild", "run", "--memo"])) == {"--memory", "--memory-swap",
                                                                  "--memory-reservation",
                                                                  "--memory-swappiness"}
    assert _complete(script, ["pybuild", "--debug", "network", "cr"]) == ["create"]
    assert "--check-reproducible" in _complete(script, ["pybuild", "build", "--check"])
    z = subprocess.run([sys.executable, "-m", "builder", "completion", "zsh"], cwd=REPO,
                       capture_output=True, text=True, check=True).stdout
    assert z.startswith("autoload -U +X bashcompinit && bashcompinit\n") and z.endswith(
        "complete -F _pybuild pybuild\n")
    bad = subprocess.run([sys.executable, "-m", "builder", "completion", "fish"], cwd=REPO,
                         capture_output=True, text=True)
    assert bad.returncode == 125 and "invalid choice: 'fish'" in bad.stderr
