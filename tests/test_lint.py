"""The tree passes ruff with the rule selection in pyproject.toml, so every `# noqa` names a rule
that is enabled and fires there (RUF100), and no one adds a violation unnoticed."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUFF = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")


@pytest.mark.skipif(RUFF is None, reason="ruff is not installed: pip install -e '.[test]' (./test.sh does)")
def test_ruff_check_passes_on_the_whole_tree():
    r = subprocess.run([RUFF, "check", "--output-format", "concise", "."], cwd=REPO,
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-1000:]
