"""runtime.cgroups on this machine's real cgroups: docker's units and flag checks, which version
applies, a cgroup made/joined/removed, a dead owner's leftover swept, a process tree with
limits that is inside its cgroup and leaves nothing when waited for (also when killed), the
command inside from its start with the keeper outside, and a join the kernel refuses."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from busybox_fixture import REPO
from rootfs_helpers import requires_root

from cache import owner
from runtime import cgroups, process
from runtime.errors import SandboxError
from runtime.spec import Resources, SandboxSpec

VERSION, OWN = cgroups.hierarchies()
needs_controllers = pytest.mark.skipif(
    not {"memory", "cpu", "pids"} <= OWN.keys(),
    reason="needs the memory, cpu and pids cgroup controllers (mount them, or enable them in v2)")


@pytest.mark.parametrize("text, value", [
    ("512", 512), ("64k", 64 << 10), ("32m", 32 << 20), ("32M", 32 << 20), ("1g", 1 << 30),
    ("1.5g", 3 << 29), ("32mb", 32 << 20), ("32MiB", 32 << 20), ("10 m", 10 << 20), ("7b", 7),
])
def test_sizes_as_docker_reads_them(text, value):
    assert cgroups.parse_size(text) == value


@pytest.mark.parametrize("text", ["x", "", "-1", "1x", "m", "1.2.3z"])
def test_bad_sizes_are_docker_s_line(text):
    with pytest.raises(SandboxError, match=f"invalid argument \"{text}\" for \"-m, --memory\" "
                                           f"flag: invalid size: '{text}'"):
        cgroups.parse_size(text)


@pytest.mark.parametrize("text, value", [("1k", 1000), ("1.5MB", 1_500_000), ("2g", 2 * 10**9),
                                         ("10", 10), ("3KiB", 3000)])
def test_decimal_sizes_as_log_opt_max_size_reads_them(text, value):
    assert cgroups.parse_size(text, None, decimal=True) == value
    with pytest.raises(SandboxError, match="^invalid size: '1x'$"):
        cgroups.parse_size("1x", None, decimal=True)


def test_flags_as_docker_checks_them():
    r = cgroups.resources(memory="32m", memory_swap="-1", cpus="0.5", cpu_shares="512", pids_limit="20")
    assert r == Resources(memory=32 << 20, memory_swap=-1, nano_cpus=500_000_000, cpu_shares=512,
                          pids_limit=20)
    assert not cgroups.resources(pids_limit="-1").any() and not cgroups.resources(pids_limit="0").any()
    for kwargs, message in [({"memory": "5m"}, "Minimum memory limit allowed is 6MB"),
                            ({"memory_swap": "64m"}, "always set the Memory limit"),
                            ({"memory": "64m", "memory_swap": "32m"}, "larger than memory limit"),
                            ({"cpus": "1e6"}, "Range of CPUs is from 0.01"),
                            ({"cpus": "half"}, 'for "--cpus" flag'),
                            ({"pids_limit": "2.5"}, 'for "--pids-limit" flag')]:
        with pytest.raises(SandboxError, match=message):
            cgroups.resources(**kwargs)


def test_the_version_of_this_machine():
    with open("/proc/self/cgroup") as f:
        lines = f.read().splitlines()
    hybrid = any(ln.split(":")[1] for ln in lines)
    assert (1 if hybrid else 2) == VERSION
    for path in OWN.values():
        assert os.path.isfile(os.path.join(path, "cgroup.procs"))


def _limits_of(paths):
    values = {}
    for p in paths:
        for name in ("memory.limit_in_bytes", "cpu.cfs_quota_us", "cpu.cfs_period_us", "pids.max",
                     "memory.max", "cpu.max"):
            if os.path.exists(os.path.join(p, name)):
                with open(os.path.join(p, name)) as f:
                    values[name] = f.read().strip()
    return values


@requires_root
@needs_controllers
def test_create_join_remove():
    paths = cgroups.create(Resources(memory=32 << 20, nano_cpus=500_000_000, pids_limit=7))
    try:
        assert all(os.path.basename(p).startswith(f"ctr-{owner.token()}-") for p in paths)
        v = _limits_of(paths)
        if VERSION == 1:
            assert (v["memory.limit_in_bytes"], v["cpu.cfs_quota_us"], v["cpu.cfs_period_us"],
                    v["pids.max"]) == (str(32 << 20), "50000", "100000", "7")
        else:
            assert (v["memory.max"], v["cpu.max"], v["pids.max"]) == (str(32 << 20), "50000 100000", "7")
        pid = os.fork()
        if pid == 0:
            try:
                cgroups.move(cgroups.opened(paths), 0)
                signal.pause()
            finally:
                os._exit(0)
        end = time.monotonic() + 5
        while not all(pid in cgroups.procs(p) for p in paths):
            assert time.monotonic() < end
            time.sleep(0.005)
        cgroups.remove(paths)       # kills what is inside, then rmdirs
        os.waitpid(pid, 0)
    finally:
        cgroups.remove(paths)
    assert not any(os.path.exists(p) for p in paths)


@requires_root
@needs_controllers
def test_a_dead_owner_s_empty_cgroup_is_swept():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    dead = f"ctr-{pid}.1-{os.urandom(6).hex()}"
    parent = os.path.join(OWN["pids"], cgroups.PARENT)
    os.makedirs(os.path.join(parent, dead))
    paths = cgroups.create(Resources(pids_limit=5))
    cgroups.remove(paths)
    assert not os.path.exists(os.path.join(parent, dead))


@requires_root
@needs_controllers
@pytest.mark.parametrize("kill", [False, True])
def test_a_tree_with_limits_is_inside_and_leaves_nothing(busybox_layer, kill):
    r, w = os.pipe()
    tree = process.start(SandboxSpec(lowerdirs=[busybox_layer], stdout=w, init=not kill,
                                     resources=Resources(memory=64 << 20, pids_limit=30),
                                     argv=["sh", "-c", "cat /proc/self/cgroup; sleep 1 & sleep 30"]))
    os.close(w)
    paths = list(tree.cgroup)
    # the limits' hierarchies, plus the accounting ones every container gets (stats, pause)
    assert all(any(p.startswith(OWN[c] + "/") for p in paths) for c in ("memory", "pids"))
    out = b""
    while b"\n0::" not in out:
        chunk = os.read(r, 4096)
        assert chunk
        out += chunk
    os.close(r)
    assert out.decode().count("/pybuild/ctr-") == len(paths)   # v1: a line per hierarchy
    if kill:
        tree.kill()
    else:
        tree.signal(signal.SIGTERM)
    assert tree.wait() in (137, 143)
    assert not any(os.path.exists(p) for p in paths)


@requires_root
@pytest.mark.skipif(VERSION == 1 and "freezer" not in OWN,
                    reason="needs the cgroup freezer (v1: mount the freezer hierarchy)")
def test_a_tree_without_limits_has_a_cgroup_that_freezes(busybox_layer):
    """What `pybuild commit` pauses and `pybuild stats` reads: a tree with empty Resources gets
    a cgroup of its own; frozen, its counter stops; thawed, it goes on."""
    r, w = os.pipe()
    tree = process.start(SandboxSpec(lowerdirs=[busybox_layer], stdout=w, resources=Resources(),
                                     argv=["sh", "-c", "i=0; while :; do i=$((i+1)); echo $i; "
                                           "sleep 0.01; done"]))
    os.close(w)
    try:
        assert tree.cgroup
        os.read(r, 64)
        with open(f"/proc/{tree.pid}/task/{tree.pid}/children") as f:
            kids = f.read().split()
        ver, dirs = cgroups.of_pid(int(kids[0]))
        assert dirs["freezer"] in tree.cgroup or dirs[""] in tree.cgroup
        cgroups.freeze(ver, dirs["freezer"], True)
        time.sleep(0.05)
        os.set_blocking(r, False)
        try:
            while os.read(r, 65536):
                pass
        except BlockingIOError:
            pass
        time.sleep(0.2)
        with pytest.raises(BlockingIOError):
            os.read(r, 65536)                  # frozen: nothing more written
        cgroups.freeze(ver, dirs["freezer"], False)
        time.sleep(0.2)
        assert os.read(r, 65536)               # thawed: it counts on
    finally:
        tree.kill()
        tree.wait()
        os.close(r)
    assert not any(os.path.exists(p) for p in tree.cgroup)


@requires_root
@needs_controllers
@pytest.mark.parametrize("init", [False, True])
def test_the_command_starts_inside_its_cgroups_and_the_keeper_stays_out(busybox_layer, init):
    """The keeper moves pid 1 in while pid 1 mounts the rootfs; the command, reading its own
    /proc/self/cgroup without forking (as pid 1, or init's child), is inside in every
    hierarchy from its first instruction, and so is pid 1; the keeper is in none."""
    r, w = os.pipe()
    tree = process.start(SandboxSpec(
        lowerdirs=[busybox_layer], stdout=w, init=init, resources=Resources(),
        argv=["sh", "-c", "while read l; do echo \"self $l\"; done < /proc/self/cgroup; "
                          "while read l; do echo \"one $l\"; done < /proc/1/cgroup; echo end; "
                          "sleep 30"]))
    os.close(w)
    try:
        out = b""
        while not out.endswith(b"end\n"):
            chunk = os.read(r, 4096)
            assert chunk
            out += chunk
        with open(f"/proc/{tree.pid}/cgroup") as f:
            keeper = f.read()
    finally:
        tree.kill()
        tree.wait()
        os.close(r)
    lines = out.decode().splitlines()
    for who in ("self", "one"):
        inside = [ln for ln in lines if ln.startswith(who + " ") and "/pybuild/ctr-" in ln]
        assert len(inside) == len(tree.cgroup), out.decode()
    assert "/pybuild/ctr-" not in keeper
    assert not any(os.path.exists(p) for p in tree.cgroup)


@requires_root
@pytest.mark.skipif(VERSION != 1 or "cpu" not in OWN
                    or not os.path.exists(os.path.join(OWN["cpu"], "cpu.rt_runtime_us")),
                    reason="needs the v1 cpu controller with real-time group scheduling "
                           "(cpu.rt_runtime_us: a kernel with CONFIG_RT_GROUP_SCHED, booted "
                           "with cgroup v1)")
def test_a_join_the_kernel_refuses_is_one_line_125_and_leaves_no_cgroup():
    """A real-time caller's pid 1 cannot enter a v1 cpu cgroup with no real-time budget (a new
    cgroup's cpu.rt_runtime_us is 0): the kernel refuses the keeper's move with EINVAL."""
    p = subprocess.Popen(["chrt", "-f", "1", sys.executable, "-m", "builder", "run", "--rm",
                          "--network", "none", "busybox", "true"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 125
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("pybuild: error: cannot move the container's "
                                                   "process into its cgroup "), err
    assert "Invalid argument" in err
    mine = f"ctr-{p.pid}."
    for d in set(OWN.values()):
        parent = os.path.join(d, cgroups.PARENT)
        assert not [n for n in (os.listdir(parent) if os.path.isdir(parent) else [])
                    if n.startswith(mine)]


@requires_root
def test_the_prime_thread_is_gone_and_the_switch_interval_is_python_s_after_a_run(busybox_layer):
    """process.start primes the cgroup lock from a thread while it makes the run dir
    (cgroups.prime): once the tree has ended no thread is left behind, and the GIL's switch
    interval, lowered for the thread's start, is Python's again."""
    before = sys.getswitchinterval()
    tasks = set(os.listdir("/proc/self/task"))   # other tests' daemon threads may be about

    def new_tasks() -> set[str]:
        return set(os.listdir("/proc/self/task")) - tasks
    tree = process.start(SandboxSpec(lowerdirs=[busybox_layer], argv=["true"], network="none",
                                     resources=Resources()))
    assert tree.wait() == 0
    end = time.monotonic() + 5
    while new_tasks() and time.monotonic() < end:
        time.sleep(0.001)
    assert new_tasks() == set()
    assert sys.getswitchinterval() == before
