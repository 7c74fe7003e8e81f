"""Faults around containers, as a user causes them, on busybox:latest: kill -9 of a foreground
`pybuild run`, of a container's command, of a supervisor while it waits to restart; a store on a
full disk while a container logs. (The supervisor killed while its container runs and two
`run -d --name x` at once are tests/e2e/test_containers.py's.)"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import test_containers
from busybox_fixture import REPO, copy_store, run_pybuild
from e2e_helpers import cmdline, descendants, ok, one_error_line
from test_containers import pid_alive, poll, ps_rows, run_d, state, traces

root = test_containers.root     # the fixture: a busybox store, every container removed after

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="containers need root (run as root)")


def inspect(ref: str) -> dict:
    [doc] = json.loads(ok(run_pybuild("inspect", ref)).stdout)
    return doc


def _own_cgroups(owner_pid: int) -> list[str]:
    """The container cgroups named for `owner_pid` (runtime.cgroups names them ctr-<pid>.<start>-)."""
    from runtime import cgroups

    _, own = cgroups.hierarchies()
    found = []
    for path in set(own.values()):
        parent = os.path.join(path, cgroups.PARENT)
        if os.path.isdir(parent):
            found += [os.path.join(parent, n) for n in os.listdir(parent)
                      if n.startswith(f"ctr-{owner_pid}.")]
    return found


def test_kill_9_of_a_foreground_run_leaves_no_process_or_mount(root):
    cmd = [sys.executable, "-m", "builder", "run", "--memory", "64m", "busybox", "sleep", "31"]
    p = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        poll(lambda: any(cmdline(k) == b"sleep\x0031\x00" for k in descendants(p.pid)))
        tree = descendants(p.pid)
        assert _own_cgroups(p.pid)
        p.kill()
        p.wait(10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    poll(lambda: not any(pid_alive(k) for k in tree))   # the tree dies with it (pdeathsig)
    poll(lambda: traces(str(root)) == [])               # and so do its mounts
    # nobody is left to rmdir its cgroup: the next run with a limit sweeps the dead owner's
    ok(run_pybuild("run", "--rm", "--memory", "64m", "busybox", "true"))
    assert _own_cgroups(p.pid) == []


def test_kill_9_of_the_command_is_exit_137(root):
    cid = run_d("--name", "victim", "busybox", "sleep", "32")
    pid1 = poll(lambda: inspect("victim")["State"]["Pid"])
    [cmd] = [k for k in [pid1, *descendants(pid1)] if cmdline(k) == b"sleep\x0032\x00"]
    os.kill(cmd, signal.SIGKILL)
    assert ok(run_pybuild("wait", "victim")).stdout == "137\n"
    [row] = ps_rows("-a")
    assert row[4].startswith("Exited (137) ") and row[-1] == "victim"
    assert inspect("victim")["State"]["ExitCode"] == 137
    poll(lambda: traces(cid) == [])


def test_supervisor_killed_while_restarting_is_dead_and_rm_f_cleans_up(root):
    cid = run_d("--name", "loop", "--restart", "always", "busybox", "sh", "-c", "exit 2")
    poll(lambda: inspect("loop")["RestartCount"] >= 3 and inspect("loop")["State"]["Restarting"])
    st = state(root, cid)
    sup = int(st["supervisor"].split(".")[0])
    os.kill(sup, signal.SIGKILL)
    poll(lambda: not pid_alive(sup))
    doc = inspect("loop")
    assert (doc["State"]["Status"], doc["State"]["Dead"], doc["State"]["Running"]) == ("dead", True, False)
    [row] = ps_rows("-a")
    assert row[4] == "Dead (supervisor gone)"
    assert ps_rows() == []
    one_error_line(run_pybuild("wait", "loop"), "exit code is unknown", code=1)
    assert ok(run_pybuild("rm", "-f", "loop")).stdout == "loop\n"
    assert not (root / "containers" / cid).exists() and traces(cid) == []


@pytest.fixture
def small_root(busybox_store, tmp_path, monkeypatch):
    """A busybox store on an 8 MiB tmpfs (PYBUILD_ROOT); unmounted after."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], check=True)
    try:
        r = copy_store(busybox_store.root, mnt / "root")
        monkeypatch.setenv("PYBUILD_ROOT", str(r))
        yield r
    finally:
        cdir = mnt / "root" / "containers"
        for cid in (os.listdir(cdir) if cdir.exists() else []):
            if len(cid) == 64:
                run_pybuild("rm", "-f", cid)
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_while_logging_keeps_the_container_and_its_state(small_root):
    cid = run_d("--name", "chatty", "busybox", "sh", "-c",
                "i=0; while :; do echo line $i 0123456789012345678901234567890123456789; "
                "i=$((i+1)); done")
    vfs = os.statvfs(small_root)

    def full() -> bool:
        s = os.statvfs(small_root)
        return s.f_bavail * s.f_frsize < 64 * 1024
    poll(full, deadline=30)
    assert vfs.f_blocks * vfs.f_frsize <= 8 * 1024 * 1024
    time.sleep(0.5)                              # it goes on writing to a full disk
    doc = inspect("chatty")
    assert doc["State"]["Running"] and doc["State"]["Status"] == "running"
    assert ps_rows()[0][4].startswith("Up ")
    r = run_pybuild("logs", "--tail", "3", "chatty")
    assert r.returncode == 0 and r.stdout.startswith("line ") and "Traceback" not in r.stderr
    assert json.loads((small_root / "containers" / cid / "state.json").read_text())["pid"]
    sup = int(state(small_root, cid)["supervisor"].split(".")[0])
    ok(run_pybuild("stop", "-t", "2", "chatty"))
    # its end is recorded: SIGKILL after 2 s, as a pid 1 shell ignores SIGTERM (docker's too)
    assert ok(run_pybuild("wait", "chatty")).stdout == "137\n"
    assert ok(run_pybuild("rm", "-f", "chatty")).stdout == "chatty\n"
    assert not (small_root / "containers" / cid).exists()
    poll(lambda: not pid_alive(sup) and traces(cid) == [])
