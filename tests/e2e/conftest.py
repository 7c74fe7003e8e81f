"""Fixtures for end-to-end tests: a throw-away store with busybox:latest, and the CLI."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def _busybox_template(tmp_path_factory) -> Path:
    """busybox:latest made once per session by fixtures/busybox.py, copied per test."""
    root = tmp_path_factory.mktemp("busybox-store")
    r = subprocess.run([sys.executable, str(REPO / "fixtures" / "busybox.py"), "--root", str(root)],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    return root


def _copy_store(template: Path, dest: Path) -> Path:
    """`cp -a`: owners, modes, devices and xattrs kept (layer dirs must stay byte-exact)."""
    subprocess.run(["cp", "-a", str(template), str(dest)], check=True)
    return dest


@pytest.fixture
def busybox_root(_busybox_template, tmp_path_factory, monkeypatch) -> Path:
    """A store root of this test's own holding busybox:latest; PYBUILD_ROOT points at it."""
    root = _copy_store(_busybox_template, tmp_path_factory.mktemp("store") / "root")
    monkeypatch.setenv("PYBUILD_ROOT", str(root))
    return root


@pytest.fixture
def other_busybox_root(_busybox_template, tmp_path_factory) -> Path:
    """A second, independent store root (for "same digest on another machine" checks)."""
    return _copy_store(_busybox_template, tmp_path_factory.mktemp("store2") / "root")


@pytest.fixture
def pybuild():
    """Run the CLI as a user would: a separate process, text output, the test's environment."""
    def run(*args: str, input: str | None = None, timeout: float = 120):
        return subprocess.run([sys.executable, "-m", "builder", *args], capture_output=True,
                              text=True, input=input, timeout=timeout, cwd=REPO, check=False)
    return run
