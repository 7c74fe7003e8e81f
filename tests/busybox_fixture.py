"""The one busybox base image of the tests and benchmarks: `busybox:latest` made by
fixtures/busybox.py (the code install.sh runs), once per session, then copied per test.

A plain module (not conftest) so bench/ scripts can use it too: `sys.path` needs the repo root and
tests/ (bench scripts add both)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def busybox_module():
    """fixtures/busybox.py as a module (fixtures/ is not a package: loaded by path)."""
    mod = sys.modules.get("pybuild_fixture_busybox")
    if mod is None:
        spec = importlib.util.spec_from_file_location("pybuild_fixture_busybox",
                                                      REPO / "fixtures" / "busybox.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
    return mod


def make_busybox_store(root: Path):
    """A Store at `root` holding busybox:latest; returns the Store."""
    from cache.store import Store
    store = Store.open(root)
    busybox_module().make_busybox(store)
    return store


def copy_store(template: Path, dest: Path) -> Path:
    """`cp -a`: owners, modes, devices and xattrs kept (layer dirs must stay byte-exact)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(template), str(dest)], check=True)
    return dest


def run_pybuild(*args: str, input: bytes | str | None = None, timeout: float = 120,
                env: dict | None = None) -> subprocess.CompletedProcess:
    """The CLI as a user runs it: its own process, this process's environment (PYBUILD_ROOT)
    unless `env` is given; text output unless `input` is bytes."""
    return subprocess.run([sys.executable, "-m", "builder", *args], capture_output=True,
                          text=not isinstance(input, bytes), input=input, timeout=timeout,
                          cwd=REPO, check=False, env=env)
