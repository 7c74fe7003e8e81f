"""Shared fixtures: throw-away store roots, the busybox base image, a private dockerd, the CLI."""
from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest
from busybox_fixture import REPO, copy_store, make_busybox_store, run_pybuild
from dockerd_fixture import NO_DOCKER, private_dockerd
from registry_fixture import NO_REGISTRY, run_registry


@pytest.fixture(autouse=True)
def registry_env(tmp_path, monkeypatch):
    """Every test has registry credentials and registries.conf of its own (none to begin
    with), so the machine's logins and mirrors never leak in, and a short retry budget."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg-run"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(tmp_path / "registries.conf"))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.setenv("PYBUILD_REGISTRY_RETRY_BUDGET", "1")


@pytest.fixture
def store_root(tmp_path, monkeypatch) -> Path:
    """An empty store root of this test's own; PYBUILD_ROOT points at it."""
    root = tmp_path / "store"
    monkeypatch.setenv("PYBUILD_ROOT", str(root))
    return root


@pytest.fixture
def empty_root(tmp_path_factory, monkeypatch) -> Path:
    """An empty store of the test's own ("another machine"), already made (by `pybuild images`),
    outside tmp_path; PYBUILD_ROOT points at it."""
    root = tmp_path_factory.mktemp("empty") / "root"
    monkeypatch.setenv("PYBUILD_ROOT", str(root))
    r = run_pybuild("images")
    assert r.returncode == 0, r.stderr
    return root


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """This checkout (the CLI under test runs with it as cwd)."""
    return REPO


@pytest.fixture(scope="session")
def busybox_store(tmp_path_factory):
    """A Store holding busybox:latest, made once per session by fixtures/busybox.py: treat it as
    read-only (`busybox_root` gives a copy you may change)."""
    return make_busybox_store(tmp_path_factory.mktemp("busybox-store") / "root")


class CopiesAhead:
    """Fresh `cp -a` copies of a template store, each made one test ahead in a short-lived
    background thread: the copy a test takes was made while the test before it ran, and the
    next one is made while this one runs. (A copy of the busybox store is ~300 entries, 268 of
    them applet symlinks: ~0.1 s of metadata writes on the suite's disk, and 600 tests take
    one.) Every copy is still the test's own and complete before the test sees it."""

    def __init__(self, template: Path, tmp_path_factory, name: str):
        self.template, self.factory, self.name = template, tmp_path_factory, name
        self._next: tuple[threading.Thread, Path, list] | None = None

    def _start(self) -> tuple[threading.Thread, Path, list]:
        dest = self.factory.mktemp(self.name) / "root"   # in this thread: the factory is not
        errors: list = []                                # thread-safe

        def copy():
            try:
                copy_store(self.template, dest)
            except BaseException as e:  # noqa: BLE001 - handed to the test that takes it
                errors.append(e)
        t = threading.Thread(target=copy, name=f"copy-{self.name}", daemon=True)
        t.start()
        return t, dest, errors

    def take(self) -> Path:
        thread, dest, errors = self._next or self._start()
        self._next = self._start()
        thread.join()
        if errors:
            raise errors[0]
        return dest

    def close(self) -> None:
        if self._next is not None:
            self._next[0].join()
            self._next = None


@pytest.fixture(scope="session")
def busybox_copies(busybox_store, tmp_path_factory):
    """CopiesAhead of busybox_store, for busybox_root."""
    copies = CopiesAhead(busybox_store.root, tmp_path_factory, "store")
    yield copies
    copies.close()


@pytest.fixture
def busybox_root(busybox_copies, monkeypatch) -> Path:
    """A store root of this test's own holding busybox:latest (a cheap ~2 MB copy);
    PYBUILD_ROOT points at it. Outside tmp_path, so a build context of tmp_path stays small."""
    root = busybox_copies.take()
    monkeypatch.setenv("PYBUILD_ROOT", str(root))
    return root


@pytest.fixture
def other_busybox_root(busybox_store, tmp_path_factory) -> Path:
    """A second, independent store root (for "same digest on another machine" checks)."""
    return copy_store(busybox_store.root, tmp_path_factory.mktemp("store2") / "root")


REGISTRY_FIXTURES = ("registry", "auth_registry", "token_registry")


def pytest_collection_modifyitems(items):
    """Tests that use a real dockerd or docker-registry are skipped, with the reason, where
    none can run."""
    skip = pytest.mark.skipif(NO_DOCKER is not None, reason=NO_DOCKER or "")
    skip_registry = pytest.mark.skipif(NO_REGISTRY is not None, reason=NO_REGISTRY or "")
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "dockerd" in names:
            item.add_marker(skip)
        if any(n in names for n in REGISTRY_FIXTURES):
            item.add_marker(skip_registry)


@pytest.fixture(scope="session")
def dockerd():
    """A private dockerd (own socket, data-root, no bridge, no iptables) for the session; yields
    the docker CLI prefix. Use `docker run --network none`."""
    try:
        with private_dockerd() as d:
            yield d.cli
    except RuntimeError as e:
        pytest.fail(str(e))


@pytest.fixture(scope="session")
def docker_busybox(dockerd, busybox_store, tmp_path_factory):
    """The private dockerd's CLI with the tests' busybox:latest loaded (a `pybuild save`, from
    a copy: a save writes the compressed blob, and the template stays read-only)."""
    work = tmp_path_factory.mktemp("dk")
    tar = work / "busybox.tar"
    root = copy_store(busybox_store.root, work / "root")
    r = run_pybuild("save", "-o", str(tar), "busybox:latest",
                    env={**os.environ, "PYBUILD_ROOT": str(root)})
    assert r.returncode == 0, r.stderr
    subprocess.run([*dockerd, "load", "-i", str(tar)], check=True, capture_output=True)
    return dockerd


@pytest.fixture
def pybuild():
    """The CLI as a user runs it: `pybuild("images")` -> CompletedProcess (text output unless
    input is bytes); see busybox_fixture.run_pybuild."""
    return run_pybuild


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    """A docker-registry on 127.0.0.1 (plain http, no auth) for the session: a
    registry_fixture.Registry (.host, .url, .storage). Use repository names of your own."""
    with run_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory):
    """A docker-registry behind htpasswd Basic auth; .user / .password are valid."""
    with run_registry(tmp_path_factory.mktemp("auth-registry"), auth="htpasswd") as reg:
        yield reg


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory):
    """A docker-registry with token auth from a loopback token service (.tokens: its
    TokenService, which records requests); .user / .password are valid."""
    with run_registry(tmp_path_factory.mktemp("token-registry"), auth="token") as reg:
        yield reg
