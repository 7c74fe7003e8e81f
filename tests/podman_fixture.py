"""A throw-away podman for tests that use podman as a judge: `podman` (a pytest fixture) yields
a function running the podman CLI with a root, runroot, tmpdir and network config dir of the
test's own, all removed afterwards.

    import podman_fixture
    from podman_fixture import NO_PODMAN, RUN_OPTS
    podman = podman_fixture.podman   # pytest finds fixtures by module attribute name; an
                                     # assignment, not an import, keeps ruff's F811 quiet
    pytestmark = pytest.mark.skipif(NO_PODMAN is not None, reason=NO_PODMAN or "")
    podman("run", *RUN_OPTS, "busybox", "true")

podman gets an empty registries.conf and an auth file of its own, and no DOCKER_CONFIG: the
test's registry environment (conftest's registry_env) names files that do not exist, which
podman 4.3 trips over (`stat .../config.json: no such file`, `image not known` for a short
name). Only podman's shared blob-info cache (/var/lib/containers/cache, digest -> compression
hints, which podman has no flag to move) is touched, as by any podman use. Run containers with
RUN_OPTS (`--network none`, explicit rlimits): rootful podman raises RLIMIT_NOFILE/NPROC to
1048576/4194304 by default, which runc cannot do where CAP_SYS_RESOURCE is absent (as on this
project's machines).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

PODMAN = shutil.which("podman")
NO_PODMAN = (None if PODMAN is not None and os.geteuid() == 0 else
             "needs root and podman (./install.sh --test installs it: apt-get install podman)")
RUN_OPTS = ["--rm", "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


@pytest.fixture
def podman():
    """A podman CLI prefix with storage of its own; yields a function running it
    (`check=False` returns a failure instead of failing the test)."""
    base = Path(tempfile.mkdtemp(prefix="pbpm-", dir="/tmp"))
    cli = [PODMAN, "--root", str(base / "root"), "--runroot", str(base / "run"),
           "--tmpdir", str(base / "tmp"), "--network-config-dir", str(base / "net"),
           "--storage-driver", "vfs", "--events-backend", "none", "--cgroup-manager", "cgroupfs"]

    (base / "registries.conf").write_text("")
    (base / "auth.json").write_text('{"auths": {}}')
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_CONFIG"}
    env.update(CONTAINERS_REGISTRIES_CONF=str(base / "registries.conf"),
               REGISTRY_AUTH_FILE=str(base / "auth.json"))

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run([*cli, *args], capture_output=True, text=True, timeout=120, check=False,
                           env=env)
        if check:
            assert r.returncode == 0, f"podman {' '.join(args)}: {r.stderr[-500:]}"
        return r

    try:
        yield run
    finally:
        run("rm", "-af", check=False)
        subprocess.run(["umount", "-R", "-l", str(base)], capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)
