"""`build --ssh` and `RUN --mount=type=ssh` as BuildKit's: the RUN talks to a real SSH agent
(a static probe built here asks it for its identities over SSH_AUTH_SOCK): key files served by
the build's own ssh-agent, or the caller's agent; custom ids and targets; a required mount
without --ssh fails before step 1; nothing of the agent is left after the build."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from busybox_fixture import REPO
from e2e_helpers import one_error_line

NEEDS = [t for t in ("gcc", "ssh-keygen", "ssh-agent") if shutil.which(t) is None]
pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (run as root)"),
              pytest.mark.skipif(bool(NEEDS), reason=f"needs {', '.join(NEEDS)} (./test.sh "
                                 "installs gcc, libc6-dev and openssh-client)")]


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("probe") / "agentls"
    subprocess.run(["gcc", "-static", "-O1", "-o", str(out), str(REPO / "fixtures" / "ssh_agent_probe.c")],
                   check=True, capture_output=True)
    return out


@pytest.fixture
def key(tmp_path) -> Path:
    k = tmp_path / "id_test"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pybuild-ssh-test",
                    "-f", str(k)], check=True)
    return k


def ctx(tmp_path: Path, probe: Path, run: str, before: str = "") -> Path:
    c = tmp_path / "ctx"
    c.mkdir(exist_ok=True)
    shutil.copy(probe, c / "agentls")
    (c / "Dockerfile").write_text(f"FROM busybox\nCOPY agentls /agentls\n{before}RUN {run}\n")
    return c


@pytest.fixture
def caller_agent(key, tmp_path) -> Path:
    """An ssh-agent of the test's own (a user's) holding `key`: its socket."""
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            if sock.exists():
                break
            time.sleep(0.01)
        subprocess.run(["ssh-add", "-q", str(key)], env={**os.environ, "SSH_AUTH_SOCK": str(sock)},
                       check=True, capture_output=True)
        yield sock
    finally:
        agent.kill()
        agent.wait()


def agents() -> set[int]:
    r = subprocess.run(["pgrep", "-x", "ssh-agent"], capture_output=True, text=True)
    return {int(p) for p in r.stdout.split()}


def test_key_files_are_served_by_an_agent_of_the_build(busybox_root, pybuild, probe, key, tmp_path):
    before = agents()
    c = ctx(tmp_path, probe, "--mount=type=ssh /agentls && echo \"sock=$SSH_AUTH_SOCK\"")
    r = pybuild("build", "--progress", "plain", "--no-cache", "--ssh", f"default={key}",
                "-t", "ssh1", str(c))
    assert r.returncode == 0, r.stderr
    assert "1 identities" in r.stderr and "pybuild-ssh-test" in r.stderr
    assert "sock=/run/buildkit/ssh_agent.0" in r.stderr
    assert agents() == before and os.listdir(busybox_root / "tmp") == []
    out = pybuild("run", "--rm", "--network", "none", "ssh1", "sh", "-c",
                  "ls /run/buildkit 2>&1; echo ${SSH_AUTH_SOCK:-unset}")
    assert "unset" in out.stdout and "ssh_agent" not in out.stdout      # nothing in the image


def test_the_callers_agent_an_id_and_a_target(busybox_root, pybuild, probe, caller_agent, tmp_path):
    sock = caller_agent
    env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
    c = ctx(tmp_path, probe, "--mount=type=ssh /agentls")
    r = pybuild("build", "--progress", "plain", "--no-cache", "--ssh", "default", str(c), env=env)
    assert r.returncode == 0 and "pybuild-ssh-test" in r.stderr, r.stderr
    c = ctx(tmp_path, probe, "--mount=type=ssh,id=deploy,target=/tmp/a.sock "
            "sh -c 'echo at=$SSH_AUTH_SOCK; /agentls'")
    r = pybuild("build", "--progress", "plain", "--no-cache", "--ssh", f"deploy={sock}", str(c))
    assert r.returncode == 0, r.stderr
    assert "at=/tmp/a.sock" in r.stderr and "1 identities" in r.stderr


def test_required_without_ssh_fails_before_step_one(busybox_root, pybuild, probe, tmp_path):
    c = ctx(tmp_path, probe, "--mount=type=ssh,required /agentls", before="RUN touch /first\n")
    r = pybuild("build", "--progress", "plain", str(c))
    assert r.returncode == 1
    line = one_error_line(r, "Dockerfile:4", 'no SSH key "default" forwarded', "--ssh default")
    assert "touch /first" not in r.stderr, line
    c = ctx(tmp_path, probe, "--mount=type=ssh sh -c 'test -z \"$SSH_AUTH_SOCK\" && echo skipped'")
    r = pybuild("build", "--progress", "plain", "--no-cache", str(c))
    assert r.returncode == 0 and "skipped" in r.stderr, r.stderr


def test_bad_ssh_values_are_one_line(busybox_root, pybuild, probe, tmp_path):
    c = ctx(tmp_path, probe, "true")
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    one_error_line(pybuild("build", "--ssh", "default", str(c), env=env), "SSH_AUTH_SOCK is not set")
    one_error_line(pybuild("build", "--ssh", "x=/nonexistent/key", str(c)), "/nonexistent/key")
    one_error_line(pybuild("build", "--ssh", f"x={tmp_path}", str(c)), "agent socket")
    assert os.listdir(busybox_root / "tmp") == []


def test_a_step_reaches_a_relay_never_the_callers_socket(busybox_root, pybuild, probe,
                                                         caller_agent, tmp_path):
    sock = caller_agent
    before = os.stat(sock)
    c = ctx(tmp_path, probe, "--mount=type=ssh sh -c 'chmod 666 $SSH_AUTH_SOCK; "
            "chown 1000 $SSH_AUTH_SOCK; rm -f $SSH_AUTH_SOCK; /agentls'")
    r = pybuild("build", "--progress", "plain", "--no-cache", "--ssh", f"default={sock}", str(c))
    assert r.returncode == 0 and "pybuild-ssh-test" in r.stderr, r.stderr
    after = os.stat(sock)
    assert (after.st_mode, after.st_uid, after.st_ino) == (before.st_mode, before.st_uid,
                                                           before.st_ino)
    # the mount's uid and mode: a USER 1000 step can use it (as BuildKit's proxy socket)
    c = ctx(tmp_path, probe, "--mount=type=ssh,uid=1000,mode=0600 sh -c "
            "'stat -c \"%u %a\" $SSH_AUTH_SOCK; /agentls'", before="USER 1000\n")
    r = pybuild("build", "--progress", "plain", "--no-cache", "--ssh", f"default={sock}", str(c))
    assert r.returncode == 0, r.stderr
    assert "1000 600" in r.stderr and "1 identities" in r.stderr
    assert os.listdir(busybox_root / "tmp") == []
