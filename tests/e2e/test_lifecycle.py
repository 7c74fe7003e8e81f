"""The container lifecycle beyond `run -d` as a user drives it, on busybox:latest, each command
its own process: create, start [-a], restart, run -d --rm, inspect, exec; and the memory of an
idle supervisor."""
from __future__ import annotations

import json
import os
import re
import time

import pytest
import test_containers
from busybox_fixture import run_pybuild
from e2e_helpers import ok, one_error_line
from test_containers import ID, pid_alive, poll, run_d, state, traces

root = test_containers.root     # the fixture: a busybox store, every container removed after

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="containers need root (run as root)")

ZERO = "0001-01-01T00:00:00Z"


def inspect(ref: str) -> dict:
    [doc] = json.loads(ok(run_pybuild("inspect", ref)).stdout)
    return doc


def test_create_start_attach_and_logs(root):
    cid = ok(run_pybuild("create", "--name", "job", "busybox", "sh", "-c",
                         "echo run >> /runs; echo out; echo err >&2; exit 3")).stdout.strip()
    assert ID.match(cid)
    doc = inspect("job")
    assert doc["State"]["Status"] == "created" and doc["State"]["StartedAt"] == ZERO
    assert doc["State"]["Pid"] == 0 and not (root / "containers" / cid / f"{cid}-json.log").exists()
    row = ok(run_pybuild("ps", "-a")).stdout.splitlines()[1]
    assert "Created" in row and row.endswith("job")

    assert ok(run_pybuild("start", "job")).stdout == "job\n"
    assert ok(run_pybuild("wait", "job")).stdout == "3\n"
    r = ok(run_pybuild("logs", "job"))
    assert (r.stdout, r.stderr) == ("out\n", "err\n")

    r = run_pybuild("start", "-a", cid[:12])      # attached: this run's output, its exit code
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
    assert ok(run_pybuild("logs", "job")).stdout == "out\nout\n"
    one_error_line(run_pybuild("create", "--name", "job", "busybox"), "Conflict.", code=125)
    one_error_line(run_pybuild("start", "nope"), "No such container: nope", code=1)


def test_changes_survive_stop_and_start_and_restart_moves_started_at(root):
    cid = run_d("--name", "keep", "busybox", "sh", "-c", "echo run >> /runs; exec sleep 30")
    poll(lambda: ok(run_pybuild("exec", "keep", "cat", "/runs")).stdout == "run\n")
    first = inspect("keep")["State"]["StartedAt"]
    assert ok(run_pybuild("stop", "-t", "1", "keep")).stdout == "keep\n"
    assert inspect("keep")["State"]["Status"] == "exited"
    assert ok(run_pybuild("start", "keep")).stdout == "keep\n"
    doc = inspect("keep")
    assert doc["State"]["Status"] == "running" and doc["State"]["StartedAt"] > first
    assert ok(run_pybuild("exec", "keep", "cat", "/runs")).stdout == "run\nrun\n"
    assert ok(run_pybuild("start", "keep")).stdout == "keep\n"     # running: nothing to do

    before = doc["State"]["StartedAt"]
    old = state(root, cid)
    assert ok(run_pybuild("restart", "-t", "1", "keep")).stdout == "keep\n"
    doc = inspect("keep")
    assert doc["State"]["Running"] and doc["State"]["StartedAt"] > before
    assert not pid_alive(old["pid"]) and state(root, cid)["supervisor"] != old["supervisor"]
    assert ok(run_pybuild("exec", "keep", "cat", "/runs")).stdout == "run\nrun\nrun\n"
    assert doc["Id"] == cid and doc["RestartCount"] == 0


def test_run_d_rm_leaves_nothing(root):
    cid = run_d("--rm", "busybox", "sh", "-c", "echo bye; sleep 0.3")
    assert inspect(cid)["HostConfig"]["AutoRemove"] is True
    poll(lambda: not (root / "containers" / cid).exists() and not os.listdir(root / "tmp"))
    assert [n for n in os.listdir(root / "containers") if ID.match(n)] == []
    assert os.listdir(root / "tmp") == []
    assert traces(cid) == []
    assert ok(run_pybuild("ps", "-a", "-q")).stdout == ""
    one_error_line(run_pybuild("container", "inspect", cid), f"No such container: {cid}", code=1)


def test_inspect_fields_and_format(root):
    cid = run_d("--name", "insp", "-e", "A=1", "-w", "/tmp", "busybox", "sleep", "30")
    doc = inspect("insp")
    assert doc["Id"] == cid and doc["Name"] == "/insp"
    assert doc["Path"] == "sleep" and doc["Args"] == ["30"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", doc["Created"])
    s = doc["State"]
    assert (s["Status"], s["Running"], s["Paused"], s["Restarting"], s["OOMKilled"], s["Dead"],
            s["ExitCode"], s["Error"], s["FinishedAt"]) == ("running", True, False, False, False,
                                                           False, 0, "", ZERO)
    with open(f"/proc/{s['Pid']}/cmdline", "rb") as f:
        assert f.read() == b"sleep\x0030\x00"     # Pid: the container's pid 1 on the host
    assert doc["Image"].startswith("sha256:") and doc["Config"]["Image"] == "busybox"
    assert doc["Config"]["Cmd"] == ["sleep", "30"] and doc["Config"]["Entrypoint"] is None
    assert "A=1" in doc["Config"]["Env"] and doc["Config"]["WorkingDir"] == "/tmp"
    [image] = json.loads(ok(run_pybuild("inspect", "--type", "image", "busybox")).stdout)
    assert doc["Image"] == image["Id"] and doc["Config"]["Labels"] == image["Config"]["Labels"]
    assert doc["Config"]["StopSignal"] == "SIGTERM"
    assert doc["LogPath"].endswith(f"{cid}-json.log") and doc["Mounts"] == []
    assert doc["HostConfig"]["NetworkMode"] == "bridge"      # docker's default

    assert ok(run_pybuild("inspect", "-f", "{{.State.Status}}", "insp")).stdout == "running\n"
    assert ok(run_pybuild("container", "inspect", "-f", "{{.Name}} {{json .Config.Cmd}}",
                          cid[:8])).stdout == '/insp ["sleep","30"]\n'   # Go's json: compact
    # a container first, then an image, as docker; --type picks one
    r = ok(run_pybuild("inspect", "-f", "{{.Id}}", "insp", "busybox"))
    assert r.stdout.splitlines()[0] == cid and r.stdout.splitlines()[1].startswith("sha256:")
    one_error_line(run_pybuild("inspect", "--type", "image", "insp"), code=1)
    r = run_pybuild("inspect", "nothing")
    assert r.returncode == 1 and r.stderr == "pybuild: error: No such object: nothing\n"
    ok(run_pybuild("stop", "-t", "0", "insp"))
    s = inspect("insp")["State"]
    assert (s["Status"], s["Running"], s["Pid"], s["ExitCode"]) == ("exited", False, 0, 137)
    assert s["FinishedAt"] > s["StartedAt"]


def test_exec(root):
    cid = run_d("--name", "box", "busybox", "sh", "-c", "echo inside > /made; exec sleep 30")
    poll(lambda: run_pybuild("exec", "box", "cat", "/made").stdout == "inside\n")
    r = ok(run_pybuild("exec", "box", "echo", "hello"))
    assert (r.stdout, r.stderr) == ("hello\n", "")
    # its pid namespace (pid 1 is the container's command, as docker's) and files
    r = ok(run_pybuild("exec", "box", "sh", "-c", "cat /proc/1/cmdline; echo; echo $$"))
    assert r.stdout.split("\n")[0] == "sleep\x0030\x00"
    assert int(r.stdout.split("\n")[1]) > 1
    assert run_pybuild("exec", "box", "sh", "-c", "exit 7").returncode == 7
    assert ok(run_pybuild("exec", "-u", "nobody", "box", "id")).stdout.startswith(
        "uid=65534(nobody) gid=65534(nobody)")
    r = ok(run_pybuild("exec", "-e", "A=b", "-w", "/tmp", "box", "sh", "-c", 'echo "$A $PWD"'))
    assert r.stdout == "b /tmp\n"
    caps = ok(run_pybuild("exec", "box", "grep", "CapEff", "/proc/self/status")).stdout
    assert caps.split() == ["CapEff:", "00000000a80425fb"]     # docker's 14, not the host's
    assert ok(run_pybuild("exec", "-d", "box", "sh", "-c", "echo later > /bg")).stdout == ""
    poll(lambda: run_pybuild("exec", "box", "cat", "/bg").stdout == "later\n")
    r = run_pybuild("exec", "box", "nosuchcmd")
    assert r.returncode == 127 and "executable file not found" in r.stderr
    r = one_error_line(run_pybuild("exec", "-u", "bob", "box", "id"), code=126)
    assert "unable to find user bob" in r
    assert ok(run_pybuild("exec", "box", "cat", "/proc/1/cmdline")).stdout == "sleep\x0030\x00"

    ok(run_pybuild("stop", "-t", "0", "box"))
    r = one_error_line(run_pybuild("exec", "box", "true"), code=1)
    assert r == f"pybuild: error: Container {cid} is not running"
    assert r.count("\n") == 0 and run_pybuild("exec", "box", "true").stderr.count("\n") == 1


def test_idle_supervisor_is_small(root):
    cid = run_d("busybox", "sleep", "30")
    sup = int(state(root, cid)["supervisor"].split(".")[0])
    time.sleep(0.3)
    with open(f"/proc/{sup}/status") as f:
        rss_kb = int(next(ln for ln in f if ln.startswith("VmRSS:")).split()[1])
    # docker's target is 15 MB; before the supervisor re-execed as a lean monitor it was 14.9
    assert rss_kb < 13 * 1024, rss_kb
    assert ok(run_pybuild("ps", "-q", "--no-trunc")).stdout.split() == [cid]   # still supervised
    ok(run_pybuild("stop", "-t", "1", cid))     # sleep as pid 1 ignores SIGTERM: killed after 1 s
    assert ok(run_pybuild("wait", cid)).stdout == "137\n"


def test_two_starts_at_once_run_it_once(root):
    import subprocess
    import sys

    from busybox_fixture import REPO

    cid = ok(run_pybuild("create", "busybox", "sleep", "30")).stdout.strip()
    cmd = [sys.executable, "-m", "builder", "start", cid]
    procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    results = [(p.wait(30), *p.communicate()) for p in procs]
    assert 0 in [rc for rc, _, _ in results], results
    for rc, _, err in results:
        assert rc == 0 or err == f"pybuild: error: container {cid} is already running\n", results
    named = {p for p in os.listdir("/proc") if p.isdigit() and cid in _cmdline(p)}
    sups = [p for p in named if str(_ppid(p)) not in named]
    assert len(sups) == 1, named               # one supervisor (the keeper is its fork)
    assert inspect(cid)["State"]["Running"]


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _ppid(pid: str) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])
