"""The modules on `pybuild run`'s path (runtime.sandbox and what it imports, the container
config and volume parsers) load only what a run needs: no stdlib module that costs a start-up
its milliseconds (dataclasses pulls inspect and ast, re and signal pull enum, ...). Such a
module stays fine inside the function that needs it (an error path, a flag that needs it)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_imports import NOT_ON_A_PLAIN_RUN as HEAVY  # the one list of what a run does without

REPO = Path(__file__).resolve().parents[2]
ENTRY = ("runtime.sandbox", "runtime.containers.config", "runtime.containers.volumes",
         "runtime.snapshotter", "runtime.mountinfo", "cache.fspath")


def _loaded(modules) -> set[str]:
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); "
            + "".join(f"import {m}; " for m in modules)
            + "print(' '.join(sys.modules))")
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    return set(out.split())


def test_run_path_modules_import_no_heavy_stdlib():
    assert sorted(set(HEAVY) & _loaded(ENTRY)) == []


@pytest.mark.parametrize("module", ENTRY)
def test_each_module_alone_is_lean(module):
    assert sorted(set(HEAVY) & _loaded([module])) == []
