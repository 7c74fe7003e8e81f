"""Detached containers as a user drives them: `run -d`, `ps`, `logs`, `stop`, `kill`, `wait`,
`rm`, on busybox:latest, each command its own process; faults: two runs racing for one name,
the supervisor killed with SIGKILL."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from busybox_fixture import REPO, run_pybuild
from e2e_helpers import ok, one_error_line

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="containers need root (run as root)")

ID = re.compile(r"^[0-9a-f]{64}$")


def poll(what, deadline: float = 10.0, step: float = 0.02):
    """what() until it is truthy (returned) or the deadline passes (AssertionError)."""
    end = time.monotonic() + deadline
    while True:
        value = what()
        if value:
            return value
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(step)


def state(root, cid) -> dict:
    with open(root / "containers" / cid / "state.json") as f:
        return json.load(f)


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def traces(cid: str) -> list[str]:
    """Every process whose mounts, root or cwd still name the container."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/mountinfo") as f:
                text = f.read()
            text += os.readlink(f"/proc/{pid}/root") + os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if cid in text:
            found.append(pid)
    return found


@pytest.fixture
def root(busybox_root):
    """busybox_root; at the end every container is removed and no supervisor is left."""
    yield busybox_root
    cdir = busybox_root / "containers"
    ids = [n for n in os.listdir(cdir) if ID.match(n)] if cdir.exists() else []
    for cid in ids:
        sup = state(busybox_root, cid).get("supervisor")
        if sup:
            try:
                os.kill(int(sup.split(".")[0]), signal.SIGKILL)
            except ProcessLookupError:
                pass
    if ids:
        run_pybuild("rm", "-f", *ids)


def run_d(*args: str) -> str:
    r = ok(run_pybuild("run", "-d", *args))
    cid = r.stdout.strip()
    assert ID.match(cid), r.stdout
    return cid


def ps_rows(*flags: str) -> list[list[str]]:
    lines = ok(run_pybuild("ps", *flags)).stdout.splitlines()
    assert re.split(r"\s{3,}", lines[0]) == ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED",
                                              "STATUS", "PORTS", "NAMES"]
    return [re.split(r"\s{3,}", ln.strip()) for ln in lines[1:]]


def test_run_d_ps_logs_stop_wait_rm(root):
    t0 = time.monotonic()
    # --init: pid 1 forwards stop's SIGTERM to sh (as pid 1 sh would ignore it, docker's rule)
    cid = run_d("--name", "web", "--init", "busybox", "sh", "-c", "echo out; echo err >&2; sleep 30")
    latency = time.monotonic() - t0
    assert latency < 5, latency
    st = state(root, cid)
    assert st["status"] == "running" and pid_alive(st["pid"])
    sup = int(st["supervisor"].split(".")[0])
    # the overlay lives in the container's namespace only (its pid 1 mounts it as it starts)
    poll(lambda: cid in Path(f"/proc/{st['pid']}/mountinfo").read_text())
    assert cid not in Path("/proc/self/mountinfo").read_text()

    rows = ps_rows()
    [row] = [r for r in rows if r[0] == cid[:12]]
    assert row[1] == "busybox" and row[2] == '"sh -c echo out; ech…"'
    assert row[4].startswith("Up ") and row[-1] == "web"
    assert ok(run_pybuild("ps", "-q", "--no-trunc")).stdout.split() == [cid]

    poll(lambda: run_pybuild("logs", "web").stderr == "err\n")
    r = ok(run_pybuild("logs", cid[:7]))
    assert (r.stdout, r.stderr) == ("out\n", "err\n")
    r = ok(run_pybuild("logs", "-t", "--tail", "1", "web"))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z err\n", r.stderr), r.stderr
    assert r.stdout == ""

    t0 = time.monotonic()
    assert ok(run_pybuild("stop", "-t", "5", "web")).stdout == "web\n"
    assert time.monotonic() - t0 < 5
    assert ok(run_pybuild("wait", "web")).stdout == "143\n"
    [row] = ps_rows("-a")
    assert re.fullmatch(r"Exited \(143\) .* ago", row[4]), row
    assert ps_rows() == []
    assert not pid_alive(st["pid"]) and not pid_alive(sup)

    r = one_error_line(run_pybuild("run", "-d", "--name", "web", "busybox", "true"), code=125)
    assert r == (f'pybuild: error: Conflict. The container name "/web" is already in use by '
                 f'container "{cid}". You have to remove (or rename) that container to be able to '
                 f'reuse that name.')
    assert ok(run_pybuild("rm", "web")).stdout == "web\n"
    assert not (root / "containers" / cid).exists()
    assert os.listdir(root / "tmp") == []
    assert traces(cid) == []
    assert ps_rows("-a") == []


def test_stop_kills_after_the_timeout_and_kill_signals(root):
    cid = run_d("busybox", "sh", "-c", 'trap "" TERM; echo ready; while :; do sleep 1; done')
    poll(lambda: run_pybuild("logs", cid).stdout == "ready\n")
    t0 = time.monotonic()
    assert ok(run_pybuild("stop", "-t", "1", cid[:12])).stdout == cid[:12] + "\n"
    assert 1 <= time.monotonic() - t0 < 5
    assert ok(run_pybuild("wait", cid)).stdout == "137\n"
    one_error_line(run_pybuild("kill", cid), "is not running", code=1)

    other = run_d("--init", "busybox", "sleep", "30")     # pid 2 under an init: USR1 kills it
    assert ok(run_pybuild("kill", "-s", "SIGUSR1", other)).stdout == other + "\n"
    assert ok(run_pybuild("wait", other)).stdout == "138\n"


def test_container_exiting_on_its_own_and_logs_follow(root):
    cid = run_d("busybox", "sh", "-c", "echo a; sleep 0.3; echo b >&2; exit 3")
    r = ok(run_pybuild("logs", "-f", cid, timeout=10))
    assert (r.stdout, r.stderr) == ("a\n", "b\n")
    assert ok(run_pybuild("wait", cid)).stdout == "3\n"
    [row] = ps_rows("-a")
    assert re.fullmatch(r"Exited \(3\) .* ago", row[4]), row
    assert re.fullmatch(r"[a-z]+_[a-z]+\d?", row[-1]), row   # a docker-style random name
    assert ok(run_pybuild("rm", cid)).stdout == cid + "\n"
    assert traces(cid) == []

    # failures inside the container: docker's codes, the reason in its log
    bad = run_d("busybox", "nosuchcmd")
    assert ok(run_pybuild("wait", bad)).stdout == "127\n"
    assert run_pybuild("logs", bad).stderr == (
        'pybuild: error: exec: "nosuchcmd": executable file not found in $PATH\n')
    # one that cannot be set up: `run -d` itself fails (docker's), the record says why
    r = run_pybuild("run", "-d", "--name", "badu", "-u", "bob", "busybox", "true")
    assert one_error_line(r, code=125) == (
        "pybuild: error: unable to find user bob: no matching entries in passwd file")
    assert ok(run_pybuild("wait", "badu")).stdout == "125\n"
    bad = ok(run_pybuild("inspect", "-f", "{{.Id}}", "badu")).stdout.strip()
    assert "unable to find user bob" in state(root, bad)["error"]


def test_two_runs_with_one_name_at_once(root):
    cmd = [sys.executable, "-m", "builder", "run", "-d", "--name", "racer", "busybox", "sleep", "30"]
    procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    results = [(p.wait(30), *p.communicate()) for p in procs]
    assert sorted(rc for rc, _, _ in results) == [0, 125], results
    [(_, out, _)] = [r for r in results if r[0] == 0]
    [(_, _, err)] = [r for r in results if r[0] == 125]
    assert err == (f'pybuild: error: Conflict. The container name "/racer" is already in use by '
                   f'container "{out.strip()}". You have to remove (or rename) that container to '
                   f'be able to reuse that name.\n')
    assert [r[-1] for r in ps_rows("-a")] == ["racer"]


def test_supervisor_killed(root):
    cid = run_d("--name", "orphan", "busybox", "sleep", "30")
    st = state(root, cid)
    os.kill(int(st["supervisor"].split(".")[0]), signal.SIGKILL)
    poll(lambda: not pid_alive(st["pid"]))     # the tree dies with its supervisor (pdeathsig)
    assert ps_rows() == []
    [row] = ps_rows("-a")
    assert row[4] == "Dead (supervisor gone)" and row[-1] == "orphan"
    one_error_line(run_pybuild("wait", "orphan"), "exit code is unknown", code=1)
    assert ok(run_pybuild("rm", "-f", "orphan")).stdout == "orphan\n"
    assert not (root / "containers" / cid).exists()
    poll(lambda: traces(cid) == [])


def test_rm_refuses_a_running_container_without_f(root):
    cid = run_d("busybox", "sleep", "30")
    st = state(root, cid)
    r = one_error_line(run_pybuild("rm", cid[:10]), code=1)
    assert r == (f"pybuild: error: You cannot remove a running container {cid}. Stop the container "
                 f"before attempting removal or force remove")
    assert ok(run_pybuild("rm", "-f", cid[:10])).stdout == cid[:10] + "\n"
    assert not pid_alive(st["pid"]) and not pid_alive(int(st["supervisor"].split(".")[0]))
    assert not (root / "containers" / cid).exists() and traces(cid) == []


def test_lookup_errors(root):
    for cmd in (["logs", "nope"], ["stop", "nope"], ["kill", "nope"], ["wait", "nope"],
                ["rm", "nope"]):
        r = one_error_line(run_pybuild(*cmd), code=1)
        assert r == "pybuild: error: No such container: nope", cmd
    r = run_pybuild("rm", "-f", "nope", "nada")
    assert r.returncode == 1 and r.stderr.splitlines() == [
        "pybuild: error: No such container: nope", "pybuild: error: No such container: nada"]
    one_error_line(run_pybuild("run", "-d", "--name=-bad", "busybox", "true"),
                   "Invalid container name (-bad)", code=125)


def test_run_d_of_a_missing_image_pulls_like_run(root):
    r = run_pybuild("run", "-d", "nosuchimage")
    lines = r.stderr.splitlines()
    assert r.returncode == 125 and lines[0] == "Unable to find image 'nosuchimage' locally"
    assert len(lines) == 2 and lines[1].startswith("pybuild: error: nosuchimage: "), r.stderr
    assert ps_rows("-a") == []
