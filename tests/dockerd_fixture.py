"""The one private dockerd of the tests and benchmarks: docker.io's 20.10 daemon with its own
socket, data root and exec root under a temp dir, no bridge, no iptables rules (they would outlive
it). A plain module (not conftest) so bench/ scripts can use it too (they put tests/ on sys.path)."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from registry_fixture import die_with_parent, stop

DOCKERD = "/usr/sbin/dockerd"


def docker_client() -> str | None:
    # docker.io's own client matches its 20.10 dockerd; /usr/local/bin/docker may be newer
    for c in ("/usr/bin/docker", shutil.which("docker")):
        if c and os.path.exists(c):
            return c
    return None


NO_DOCKER = (None if os.path.exists(DOCKERD) and docker_client() and os.geteuid() == 0 else
             "needs root and docker.io's dockerd and client (./test.sh installs them: "
             "apt-get install docker.io)")


@dataclass
class Dockerd:
    cli: list[str]              # the docker CLI prefix for this daemon: [client, "-H", "unix://…"]
    proc: subprocess.Popen
    base: Path                  # its temp dir (socket, data root, exec root, dockerd.log)


@contextlib.contextmanager
def private_dockerd(timeout: float = 60):
    """Start a private dockerd, wait until it answers, yield a Dockerd; on exit (also on ^C or an
    error) stop it, unmount what it left and remove its temp dir."""
    base = Path(tempfile.mkdtemp(prefix="pbd-", dir="/tmp"))  # short: unix socket path limit
    sock = base / "d.sock"
    log = open(base / "dockerd.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [DOCKERD, "--data-root", str(base / "data"), "--exec-root", str(base / "exec"),
         "--pidfile", str(base / "d.pid"), "-H", f"unix://{sock}", "--iptables=false",
         "--ip-masq=false", "--bridge=none"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent)
    cli = [docker_client(), "-H", f"unix://{sock}"]
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError("dockerd exited at start: "
                                   f"{(base / 'dockerd.log').read_text()[-500:]}")
            if sock.exists() and subprocess.run(cli + ["version"], capture_output=True,
                                                check=False).returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not come up within {timeout:.0f} s")
            time.sleep(0.2)
        yield Dockerd(cli, proc, base)
    finally:
        stop(proc, 30)
        log.close()
        subprocess.run(["umount", "-R", "-l", str(base / "data")], capture_output=True, check=False)
        subprocess.run(["umount", "-R", "-l", str(base / "exec")], capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)
