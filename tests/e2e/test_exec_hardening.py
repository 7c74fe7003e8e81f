"""What a container's root can reach of the host through `exec` and HEALTHCHECK probes (runc
CVE-2016-9962's pattern), and what a supervisor keeps across restarts, on busybox:latest: only
stdio crosses into the container, the caller's and the supervisor's fds stay behind, a probe
that closes its output does not make the supervisor spin, a probe that cannot be forked is
recorded as failed, the attach socket is 0600, and a reused keeper pid is never joined."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import test_containers
from busybox_fixture import REPO, run_pybuild
from e2e_helpers import descendants, ok
from test_containers import poll, run_d, state

root = test_containers.root     # the fixture: a busybox store, every container removed after

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="containers need root (run as root)")

TICK = os.sysconf("SC_CLK_TCK")


def fd_names(text: str) -> set[str]:
    return set(text.split())


def holders(path: str, among=None) -> list[int]:
    """The host processes (of `among`, default all) with `path` open."""
    found = []
    for pid in among if among is not None else filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == path:
                    found.append(int(pid))
                    break
            except OSError:
                pass
    return found


def supervisor_pid(root, cid) -> int:
    return int(state(root, cid)["supervisor"].split(".")[0])


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def test_exec_passes_on_only_stdio_not_the_callers_fds(root, tmp_path):
    run_d("--name", "fdx", "busybox", "sleep", "30")
    marker = tmp_path / "caller-secret"
    marker.write_text("host")
    fd = os.open(marker, os.O_RDONLY)
    try:
        r = subprocess.run([sys.executable, "-m", "builder", "exec", "fdx", "ls", "/proc/self/fd"],
                           cwd=REPO, capture_output=True, text=True, pass_fds=(fd,), timeout=60)
        assert r.returncode == 0, r.stderr
        assert fd_names(r.stdout) == {"0", "1", "2", "3"}      # 3: the dir ls reads
        # the exec'd command, as a process in the container sees it while it runs, and the
        # joiner on the host: neither holds the caller's fd
        cli = subprocess.Popen([sys.executable, "-m", "builder", "exec", "fdx", "sleep", "3"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               pass_fds=(fd,))
        try:
            poll(lambda: len(descendants(cli.pid)) >= 2)
            time.sleep(0.3)
            assert holders(str(marker), descendants(cli.pid)) == []
            seen = ok(run_pybuild("exec", "fdx", "sh", "-c",
                                  'for p in $(pidof sleep); do grep -q "^sleep.3" /proc/$p/cmdline'
                                  ' && ls /proc/$p/fd; done')).stdout
            assert fd_names(seen) == {"0", "1", "2"}
        finally:
            cli.kill()
            cli.wait()
    finally:
        os.close(fd)


def test_health_probes_carry_none_of_the_supervisors_fds(root):
    cid = run_d("--name", "fdh", "-i", "-t", "--health-cmd", "ls /proc/self/fd > /fds; sleep 2",
                "--health-interval", "100ms", "--health-timeout", "10s", "busybox", "sleep", "30")
    poll(lambda: run_pybuild("exec", "fdh", "cat", "/fds").stdout.strip() != "")
    assert fd_names(ok(run_pybuild("exec", "fdh", "cat", "/fds")).stdout) == {"0", "1", "2", "3"}
    sup = supervisor_pid(root, cid)
    log = os.path.join(root, "containers", cid, f"{cid}-json.log")
    sock = os.path.join(root, "containers", cid, "attach.sock")
    # while a probe runs (its sleep 2), only the supervisor itself holds the container's log
    poll(lambda: len(descendants(sup)) > len(descendants(int(state(root, cid)["pid"]))) + 1)
    assert holders(log) == [sup]
    assert oct(os.stat(sock).st_mode & 0o777) == "0o600"


def test_supervisor_keeps_no_fds_of_earlier_runs(root):
    cid = run_d("--name", "flap", "--restart", "always", "-t", "-i", "busybox", "sh", "-c",
                "sleep 0.4; exit 1")
    sup = supervisor_pid(root, cid)

    def count_at(n: int) -> int:
        poll(lambda: state(root, cid).get("restart_count") == n
             and state(root, cid)["status"] == "running", deadline=20, step=0.01)
        time.sleep(0.1)
        assert supervisor_pid(root, cid) == sup
        return len(os.listdir(f"/proc/{sup}/fd"))
    first = count_at(1)
    assert count_at(3) == first


def test_a_probe_that_closes_its_output_does_not_spin_the_supervisor(root):
    cid = run_d("--name", "hup", "--network", "none", "--health-cmd", "exec >&- 2>&-; sleep 20",
                "--health-interval", "100ms", "--health-timeout", "30s", "busybox", "sleep", "30")
    sup = supervisor_pid(root, cid)
    poll(lambda: len(descendants(sup)) > len(descendants(int(state(root, cid)["pid"]))) + 1)
    time.sleep(0.3)
    t0 = cpu_seconds(sup)
    time.sleep(1)
    assert cpu_seconds(sup) - t0 < 0.2


def test_a_probe_that_cannot_be_forked_is_a_failure_not_a_dead_monitor(root):
    cg = "/sys/fs/cgroup/pids/pybuild-sec1-test"
    cid = run_d("--name", "nofork", "--network", "none", "--health-cmd", "true",
                "--health-interval", "100ms", "busybox", "sleep", "30")
    sup = supervisor_pid(root, cid)
    with open(f"/proc/{sup}/cgroup") as f:
        home = next(line.split(":", 2)[2].strip() for line in f if ":pids:" in line)
    os.makedirs(cg, exist_ok=True)
    try:
        with open(f"{cg}/pids.max", "w") as f:
            f.write("1")
        with open(f"{cg}/cgroup.procs", "w") as f:
            f.write(str(sup))

        def failed():
            log = (state(root, cid).get("health") or {}).get("Log") or []
            return log and "cannot start the health check" in log[-1]["Output"]
        poll(failed)
        assert "Resource temporarily unavailable" in state(root, cid)["health"]["Log"][-1]["Output"]
    finally:
        with open(f"/sys/fs/cgroup/pids{home}/cgroup.procs", "w") as f:
            f.write(str(sup))
        os.rmdir(cg)
    ok(run_pybuild("kill", "nofork"))
    ok(run_pybuild("wait", "nofork"))
    assert state(root, cid)["status"] == "exited" and state(root, cid)["exit_code"] == 137


def test_a_reused_keeper_pid_is_not_joined(root):
    cid = run_d("--name", "reuse", "--network", "none", "busybox", "sleep", "30")
    path = os.path.join(root, "containers", cid, "state.json")
    with open(path) as f:
        st = json.load(f)
    # a host process (sh with a host child) where the keeper was: as if its pid were reused
    host = subprocess.Popen(["sh", "-c", "sleep 30 & wait"])
    try:
        poll(lambda: descendants(host.pid))
        for pid_start in (st.get("pid_start"), None):   # start time or not: host ns refused
            with open(path, "w") as f:
                json.dump({**st, "pid": host.pid, "pid_start": pid_start}, f)
            r = run_pybuild("exec", "reuse", "cat", "/etc/hostname")
            assert r.returncode != 0 and "is not running" in r.stderr, (r.stdout, r.stderr)
            assert json.loads(ok(run_pybuild("inspect", "reuse")).stdout)[0]["State"]["Pid"] == 0
        # the real keeper with a start time that is not its own: refused too
        assert st["pid_start"]
        with open(path, "w") as f:
            json.dump({**st, "pid_start": st["pid_start"] + 1}, f)
        assert run_pybuild("exec", "reuse", "true").returncode != 0
    finally:
        host.kill()
        host.wait()
        with open(path, "w") as f:
            json.dump(st, f)
    assert ok(run_pybuild("exec", "reuse", "true")).returncode == 0
