"""Every registry test runs with its own HOME, DOCKER_CONFIG, XDG dirs and registries.conf, so
the machine's credentials and mirrors never leak in, and with a short retry budget."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def isolated_registry_env(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("DOCKER_CONFIG", str(home / ".docker"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(tmp_path / "registries.conf"))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.setenv("PYBUILD_REGISTRY_RETRY_BUDGET", "1")
    return home
