"""Shared fixtures: throw-away store roots, the busybox base image, a private dockerd, the CLI."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def store_root(tmp_path, monkeypatch) -> Path:
    """An empty store root of this test's own; PYBUILD_ROOT points at it."""
    root = tmp_path / "store"
    monkeypatch.setenv("PYBUILD_ROOT", str(root))
    return root


@pytest.fixture(scope="session")
def busybox_store(tmp_path_factory):
    """A Store holding busybox:latest, made once per session: treat it as read-only (use
    `busybox_root` to get a copy you may change)."""
    sys.path.insert(0, str(REPO / "fixtures"))
    try:
        from busybox import make_busybox
    finally:
        sys.path.remove(str(REPO / "fixtures"))
    from cache.store import Store
    store = Store.open(tmp_path_factory.mktemp("busybox-store") / "root")
    make_busybox(store)
    return store


@pytest.fixture
def busybox_root(busybox_store, tmp_path, monkeypatch) -> Path:
    """A private copy of the busybox store (cheap: ~2 MB); PYBUILD_ROOT points at it."""
    root = tmp_path / "bbstore"
    # cp -a keeps owners and xattrs, which are part of a layer dir's content
    subprocess.run(["cp", "-a", str(busybox_store.root), str(root)], check=True)
    monkeypatch.setenv("PYBUILD_ROOT", str(root))
    return root


def _docker_client() -> str | None:
    # docker.io's own client matches its 20.10 dockerd; /usr/local/bin/docker may be newer
    for c in ("/usr/bin/docker", shutil.which("docker")):
        if c and os.path.exists(c):
            return c
    return None


DOCKERD = "/usr/sbin/dockerd"
NO_DOCKER = (None if os.path.exists(DOCKERD) and _docker_client() and os.geteuid() == 0 else
             "needs root and docker.io's dockerd and client (./test.sh installs them: "
             "apt-get install docker.io)")


def pytest_collection_modifyitems(items):
    """Tests that use a real dockerd are skipped, with the reason, where none can run."""
    if NO_DOCKER:
        for item in items:
            if "dockerd" in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.skipif(True, reason=NO_DOCKER))


@pytest.fixture(scope="session")
def dockerd():
    """A private dockerd (own socket, data-root, no bridge, no iptables) for the session; yields
    the docker CLI prefix. Use `docker run --network none`."""
    daemon, client = DOCKERD, _docker_client()
    base = Path(tempfile.mkdtemp(prefix="pbd-", dir="/tmp"))  # short: unix socket path limit
    sock = base / "d.sock"
    log = open(base / "dockerd.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [daemon, "--data-root", str(base / "data"), "--exec-root", str(base / "exec"),
         "--pidfile", str(base / "d.pid"), "-H", f"unix://{sock}", "--iptables=false",
         "--ip-masq=false", "--bridge=none"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    cli = [client, "-H", f"unix://{sock}"]
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"dockerd exited at start: {(base / 'dockerd.log').read_text()[-500:]}")
            if sock.exists() and subprocess.run(cli + ["version"], capture_output=True,
                                                check=False).returncode == 0:
                break
            if time.monotonic() > deadline:
                pytest.fail("dockerd did not come up within 60 s")
            time.sleep(0.2)
        yield cli
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        subprocess.run(["umount", "-R", "-l", str(base / "data")], capture_output=True, check=False)
        subprocess.run(["umount", "-R", "-l", str(base / "exec")], capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)


def run_pybuild(*args: str, input: bytes | str | None = None, timeout: float = 120,
                env: dict | None = None) -> subprocess.CompletedProcess:
    """The CLI as a user runs it: its own process, this test's environment (PYBUILD_ROOT)."""
    return subprocess.run([sys.executable, "-m", "builder", *args], capture_output=True,
                          text=not isinstance(input, bytes), input=input, timeout=timeout,
                          cwd=REPO, check=False, env=env)


@pytest.fixture
def pybuild():
    """run_pybuild as a fixture: `pybuild("images")` -> CompletedProcess (text output)."""
    return run_pybuild
