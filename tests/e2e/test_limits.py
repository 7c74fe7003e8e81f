"""`pybuild run` with docker's limit flags on real cgroups: a memory hog is OOM-killed (137),
a fork bomb stops at --pids-limit, --cpus shows as the CFS quota, bad values fail as docker's
one line, and no cgroup is left behind (foreground, and -d after stop/rm)."""
from __future__ import annotations

import os
import time

import pytest
from busybox_fixture import run_pybuild
from e2e_helpers import ok, one_error_line

from runtime import cgroups

VERSION, OWN = cgroups.hierarchies()
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="cgroups need root (run as root)"),
    pytest.mark.skipif(not {"memory", "cpu", "pids"} <= OWN.keys(),
                       reason="needs the memory, cpu and pids cgroup controllers "
                              "(mount them, or enable them in the v2 subtree_control)"),
]


def leftovers() -> list[str]:
    out = []
    for c in ("memory", "cpu", "pids"):
        parent = os.path.join(OWN[c], cgroups.PARENT)
        if os.path.isdir(parent):
            out += [os.path.join(parent, n) for n in os.listdir(parent)
                    if os.path.isdir(os.path.join(parent, n))]
    return out


@pytest.fixture(autouse=True)
def no_leftovers():
    before = set(leftovers())
    yield
    assert set(leftovers()) - before == set()


def test_memory_hog_is_oom_killed_137(busybox_root):
    r = run_pybuild("run", "--rm", "--memory", "32m", "busybox", "tail", "/dev/zero")
    assert (r.returncode, r.stdout, r.stderr) == (137, "", "")


def test_within_the_memory_limit_works(busybox_root):
    r = ok(run_pybuild("run", "--rm", "-m", "64m", "busybox", "sh", "-c",
                       "head -c 10000000 /dev/zero | tr '\\0' a | wc -c; "
                       "cat /proc/self/cgroup | grep memory"))
    assert r.stdout.splitlines()[0].strip() == "10000000"
    assert "/pybuild/ctr-" in r.stdout


def test_pids_limit_stops_a_fork_bomb(busybox_root):
    r = run_pybuild("run", "--rm", "--pids-limit", "20", "busybox", "sh", "-c",
                    "for i in $(seq 200); do sleep 10 & echo started; done; wait")
    # ash gives up at the first fork that fails (EAGAIN), as it does under docker
    assert r.returncode == 2 and "can't fork: Resource temporarily unavailable" in r.stderr, r
    started = r.stdout.split().count("started")
    assert 10 < started <= 20       # the limit counts pid 1 and the shell too


def test_cpus_is_the_cfs_quota(busybox_root):
    name = "cpu.cfs_quota_us" if VERSION == 1 else "cpu.max"
    r = ok(run_pybuild("run", "--rm", "--cpus", "0.5", "busybox", "cat", "/proc/self/cgroup"))
    mine = [ln for ln in r.stdout.splitlines() if ln.split(":")[1] == ("cpu" if VERSION == 1 else "")]
    assert "/pybuild/ctr-" in mine[0]
    # the container has no /sys/fs/cgroup of its own: read the file from the host while it runs
    quota = _while_running(["--cpus", "0.5"], "cpu", name)
    assert quota in ("50000", "50000 100000")


def _while_running(flags, controller, file) -> str:
    """Start a detached-from-us foreground run that sleeps, read its cgroup file from the host."""
    import subprocess
    import sys

    from busybox_fixture import REPO

    from cache import owner

    # --init: the TERM below reaches sleep (as pid 1 it would ignore it, docker's rule)
    p = subprocess.Popen([sys.executable, "-m", "builder", "run", "--rm", "--init", *flags, "busybox",
                          "sleep", "30"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        parent = os.path.join(OWN[controller], cgroups.PARENT)
        end = time.monotonic() + 20
        while time.monotonic() < end:
            for n in os.listdir(parent) if os.path.isdir(parent) else []:
                f = os.path.join(parent, n, file)
                if (owner.of_name(n) or "").split(".")[0] == str(p.pid) and _runs(parent, n):
                    with open(f) as fh:
                        return fh.read().strip()
            time.sleep(0.02)
        raise AssertionError("no cgroup of the run appeared")
    finally:
        p.terminate()
        p.wait(timeout=20)


def _runs(parent, name) -> bool:
    """Whether the command (sleep) runs in the cgroup: a TERM sent before it does is lost."""
    try:
        with open(os.path.join(parent, name, "cgroup.procs")) as f:
            pids = f.read().split()
    except OSError:
        return False
    for pid in pids:
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == "sleep":
                    return True
        except OSError:
            pass
    return False


@pytest.mark.parametrize("flags, message", [
    (["-m", "x"], "invalid argument \"x\" for \"-m, --memory\" flag: invalid size: 'x'"),
    (["--memory", "4m"], "Minimum memory limit allowed is 6MB"),
    (["--cpus", "abc"], "invalid argument \"abc\" for \"--cpus\" flag"),
    (["--pids-limit", "ten"], "invalid argument \"ten\" for \"--pids-limit\" flag"),
    (["--memory-swap", "64m"], "You should always set the Memory limit"),
])
def test_bad_values_are_one_line_125(busybox_root, flags, message):
    r = run_pybuild("run", "--rm", *flags, "busybox", "true")
    assert message in one_error_line(r, code=125)


def test_detached_container_is_limited_and_leaves_no_cgroup(busybox_root):
    cid = ok(run_pybuild("run", "-d", "--memory", "32m", "busybox", "sh", "-c",
                         "grep memory /proc/self/cgroup; sleep 30")).stdout.strip()
    try:
        end = time.monotonic() + 10
        while "memory" not in (logs := run_pybuild("logs", cid).stdout) and time.monotonic() < end:
            time.sleep(0.05)
        assert "/pybuild/" in logs, logs  # the command runs in a cgroup of pybuild's
        ok(run_pybuild("stop", "-t", "1", cid))
    finally:
        run_pybuild("rm", "-f", cid)
