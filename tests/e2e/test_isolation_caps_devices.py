"""Capabilities and device access as a user sees them, next to docker's: one battery of checks
run in `pybuild run --network none busybox`, in a RUN step of a build, and in `docker run
--network none` of the same image (the tests' own dockerd), pybuild the same or stricter on
each; then --cap-add/--cap-drop/--privileged/--device against docker's, their bad values as
docker's one line (exit 125, nothing left), and no devices cgroup left behind."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from busybox_fixture import REPO, run_pybuild
from e2e_helpers import build, ok, one_error_line

from cache import owner
from runtime import caps, cgroups

VERSION, OWN = cgroups.hierarchies()
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="containers need root (run as root)")
needs_devices = pytest.mark.skipif(cgroups.DEVICES not in OWN,
                                   reason="needs the cgroup v1 devices controller")

MASKED = ("/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys",
          "/proc/latency_stats", "/proc/sched_debug", "/proc/scsi", "/proc/timer_list",
          "/proc/timer_stats", "/sys/firmware", "/sys/devices/virtual/powercap")
BATTERY = "\n".join((
    """for f in CapInh CapPrm CapEff CapBnd CapAmb; do
         echo "$f=$(grep "^$f:" /proc/self/status | cut -f2)"; done""",
    'mknod /tmp/bdev b 7 0 2>/tmp/err; echo "mknod_block=$? $(cat /tmp/err)"',
    'head -c1 /tmp/bdev >/dev/null 2>/tmp/err; echo "open_block=$? $(cat /tmp/err)"',
    "mknod /tmp/cnull c 1 3 2>/tmp/err && echo x > /tmp/cnull 2>>/tmp/err",
    'echo "open_null=$? $(cat /tmp/err)"',
    "mknod /tmp/cmem c 1 1 2>/tmp/err; head -c1 /tmp/cmem >/dev/null 2>>/tmp/err",
    'echo "open_mem=$? $(cat /tmp/err)"',
    "rm -f /tmp/bdev /tmp/cnull /tmp/cmem /tmp/err",
    "points() { cut -d' ' -f2 /proc/self/mounts; }",
    "line() { sort | tr '\\n' ' '; }",
    f"""echo "masked=$(points | grep -xE '{"|".join(MASKED)}' | line)" """,
    """echo "readonly=$(grep -E ' /proc/(bus|fs|irq|sys|sysrq-trigger) ' /proc/self/mounts |
         cut -d' ' -f2,4 | grep ' ro,' | cut -d' ' -f1 | line)" """,
    """echo "proc=$(grep ' /proc proc ' /proc/self/mounts | cut -d' ' -f4)" """,
    """echo "sys=$(grep ' /sys sysfs ' /proc/self/mounts | cut -d' ' -f4)" """,
    """echo "fds=$(ls /proc/self/fd | line)" """,
    # counted by the shell's own glob, no fork: `ls /proc | grep -c` saw 3 or 4 of its own
    # processes as the scheduler had it (ls, grep, the $() subshell), a race, not a difference
    """n=0; for p in /proc/[0-9]*; do n=$((n+1)); done; echo "pids=$n" """,
    """echo "mounts=$(points | line)" """,
))

needs_loop = pytest.mark.skipif(not os.path.exists("/dev/loop-control"),
                                reason="needs loop devices for a block device of its own (modprobe loop)")


def parse(text: str) -> dict[str, str]:
    return dict(ln.split("=", 1) for ln in text.splitlines() if "=" in ln)


def bits(hexmask: str) -> int:
    return int(hexmask, 16)


def docker(cli, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*cli, *args], capture_output=True, text=True)


def pb_run(*args: str) -> subprocess.CompletedProcess:
    return run_pybuild("run", "--rm", "--network", "none", *args)


def devices_leftovers() -> set[str]:
    parent = os.path.join(OWN.get(cgroups.DEVICES, "/nonexistent"), cgroups.PARENT)
    return set(os.listdir(parent)) if os.path.isdir(parent) else set()


@pytest.fixture(autouse=True)
def no_devices_cgroup_left():
    before = devices_leftovers()
    yield
    assert devices_leftovers() - before == set()


@pytest.fixture
def loop_device(tmp_path):
    """A host block device of the test's own: a loop device over a file starting PYBUILDLOOP."""
    f = tmp_path / "disk"
    with open(f, "wb") as fh:
        fh.write(b"PYBUILDLOOP")
        fh.truncate(1 << 20)
    r = subprocess.run(["losetup", "--find", "--show", str(f)], capture_output=True, text=True)
    assert r.returncode == 0, f"losetup cannot attach a loop device: {r.stderr.strip()}"
    dev = r.stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=True)


def assert_same_or_stricter(pb: dict, dk: dict, where: str) -> None:
    for f in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert bits(pb[f]) & ~bits(dk[f]) == 0, (where, f, pb[f], dk[f])
    # docker: a block node can be made (CAP_MKNOD, `b *:* m`) but not opened; mem neither
    assert dk["open_block"].startswith("1 ") and "Operation not permitted" in dk["open_block"]
    assert pb["open_block"].startswith("1 ") and "Operation not permitted" in pb["open_block"], where
    assert pb["open_mem"].startswith("1 ") and "Operation not permitted" in pb["open_mem"], where
    assert pb["open_null"] == dk["open_null"] == "0 ", where
    assert set(dk["masked"].split()) <= set(pb["masked"].split()), where
    assert set(dk["readonly"].split()) <= set(pb["readonly"].split()), where
    for fs in ("proc", "sys"):
        dk_flags, pb_flags = set(dk[fs].split(",")), set(pb[fs].split(","))
        assert {"nosuid", "nodev", "noexec"} & dk_flags <= pb_flags, (where, fs)
        assert "ro" not in dk_flags or "ro" in pb_flags, (where, fs)
    assert len(pb["fds"].split()) <= len(dk["fds"].split()), (where, pb["fds"], dk["fds"])
    assert int(pb["pids"]) <= int(dk["pids"]), (where, pb["pids"], dk["pids"])


@needs_devices
def test_battery_run_and_run_step_as_strict_as_docker(docker_busybox, busybox_root, tmp_path):
    script = tmp_path / "ctx" / "battery.sh"
    script.parent.mkdir()
    script.write_text(BATTERY)
    dk = docker(docker_busybox, "run", "--rm", "--network", "none", "-v", f"{script}:/battery.sh:ro",
                "busybox", "sh", "/battery.sh")
    assert dk.returncode == 0, dk.stderr
    dk = parse(dk.stdout)
    pb = parse(ok(pb_run("-v", f"{script}:/battery.sh:ro", "busybox", "sh", "/battery.sh")).stdout)
    assert_same_or_stricter(pb, dk, "pybuild run")
    # host mounts invisible: every mount point is one docker has too, or a path pybuild masks
    allowed = set(dk["mounts"].split()) | set(MASKED)
    assert set(pb["mounts"].split()) <= allowed, set(pb["mounts"].split()) - allowed

    _cfg, fs = build(run_pybuild, script.parent, "FROM busybox\nCOPY battery.sh /\n"
                     "RUN sh /battery.sh > /battery.txt\n", "--network", "none")
    with fs() as root:
        step = parse((root / "battery.txt").read_text())
    assert_same_or_stricter(step, dk, "RUN step")


@needs_devices
def test_cap_flags_as_docker(docker_busybox, busybox_root):
    for flags, check in ((["--cap-drop", "ALL"], lambda m: m == 0),
                         (["--cap-add", "SYS_ADMIN"], lambda m: m >> 21 & 1),
                         (["--cap-drop", "chown", "--cap-add", "cap_net_admin"],
                          lambda m: not m & 1 and m >> 12 & 1)):
        argv = [*flags, "busybox", "grep", "CapEff", "/proc/self/status"]
        d = docker(docker_busybox, "run", "--rm", "--network", "none", *argv)
        p = pb_run(*argv)
        assert d.returncode == 0 and p.returncode == 0, (d.stderr, p.stderr)
        assert d.stdout == p.stdout, flags
        assert check(bits(p.stdout.split()[1])), (flags, p.stdout)


def test_bad_cap_and_device_values_are_one_line_125(busybox_root, docker_busybox):
    before = ok(run_pybuild("ps", "-a", "-q")).stdout
    for flags, words in (
            (["--cap-add", "NOPE"], ['invalid CapAdd: unknown capability: "CAP_NOPE"']),
            (["--cap-drop", "cap_nope"], ['invalid CapDrop: unknown capability: "CAP_NOPE"']),
            (["--device", "/dev/null:rel"], ["rel is not an absolute path"]),
            (["--device", "/dev/null:/dev/x:rwx"], ["bad mode specified: rwx"]),
            (["--device", "/dev/null:/dev/x:r:w"], ["bad format for path: /dev/null:/dev/x:r:w"]),
            (["--device", "/etc/passwd"], ['adding custom device "/etc/passwd": not a device node']),
            (["--device", "/nonexistent"],
             ['adding custom device "/nonexistent": no such file or directory'])):
        for detach in ([], ["-d"]):
            r = run_pybuild("run", "--rm", *detach, "--network", "none", *flags, "busybox", "true")
            one_error_line(r, *words, code=125)
        d = docker(docker_busybox, "run", "--rm", "--network", "none", *flags, "busybox", "true")
        assert d.returncode != 0 and words[0] in d.stderr, d.stderr     # docker's own words
    assert ok(run_pybuild("ps", "-a", "-q")).stdout == before      # no container was made


@needs_devices
@needs_loop
def test_device_flag_makes_the_node_and_allows_only_its_perms(busybox_root, loop_device,
                                                              docker_busybox):
    script = "ls -ln /dev/mynull | cut -c1-10; echo hi > /dev/mynull && echo written"
    d = docker(docker_busybox, "run", "--rm", "--network", "none", "--device", "/dev/null:/dev/mynull",
               "busybox", "sh", "-c", script)
    p = pb_run("--device", "/dev/null:/dev/mynull", "busybox", "sh", "-c", script)
    assert p.returncode == 0 and p.stdout == d.stdout == "crw-rw-rw-\nwritten\n", (p, d)

    # a block device with "r": readable, not writable; unknown to a container without it
    p = pb_run("--device", f"{loop_device}:/dev/xda:r", "busybox", "sh", "-c",
               "head -c 11 /dev/xda; echo; echo x > /dev/xda")
    assert p.stdout == "PYBUILDLOOP\n" and p.returncode == 1, p
    assert "Operation not permitted" in p.stderr
    st = os.stat(loop_device)
    p = pb_run("busybox", "sh", "-c", f"mknod /b b {os.major(st.st_rdev)} {os.minor(st.st_rdev)} "
                                      f"&& head -c 11 /b")
    assert p.returncode == 1 and "Operation not permitted" in p.stderr and "PYBUILD" not in p.stdout


@needs_devices
@needs_loop
def test_privileged_has_every_capability_and_host_device(busybox_root, loop_device):
    script = (f"grep -E '^Cap(Eff|Bnd)' /proc/self/status; head -c 11 {loop_device}; echo; "
              "grep -E ' /sys sysfs ' /proc/self/mounts | cut -d' ' -f4 | cut -d, -f1; "
              "cut -d' ' -f2 /proc/self/mounts | grep -c -xE '/proc/(keys|kcore|acpi|sys)' ; true")
    p = ok(pb_run("--privileged", "busybox", "sh", "-c", script))
    lines = p.stdout.splitlines()
    want = f"{caps.available_mask():016x}"
    assert lines[:2] == [f"CapEff:\t{want}", f"CapBnd:\t{want}"]
    assert lines[2] == "PYBUILDLOOP"            # the host's node, usable
    assert lines[3] == "rw"                      # docker: sysfs read-write
    assert lines[4] == "0"                       # nothing masked or made read-only in /proc


def test_detached_container_keeps_its_sets_through_restart_and_exec(busybox_root):
    cid = ok(run_pybuild("run", "-d", "--network", "none", "--cap-drop", "ALL", "--cap-add", "kill",
                         "--device", "/dev/null:/dev/mynull:rw", "busybox", "sleep", "300")).stdout.strip()
    try:
        doc = ok(run_pybuild("container", "inspect", "-f", "{{json .HostConfig}}", cid)).stdout
        hc = json.loads(doc)
        assert hc["CapAdd"] == ["kill"] and hc["CapDrop"] == ["ALL"] and hc["Privileged"] is False
        assert hc["Devices"] == [{"PathOnHost": "/dev/null", "PathInContainer": "/dev/mynull",
                                  "CgroupPermissions": "rw"}]
        want = f"CapEff:\t{1 << 5:016x}\n"
        for _ in range(2):
            assert ok(run_pybuild("exec", cid, "grep", "CapEff", "/proc/self/status")).stdout == want
            assert ok(run_pybuild("exec", cid, "ls", "/dev/mynull")).stdout == "/dev/mynull\n"
            ok(run_pybuild("restart", "-t", "0", cid))
        priv = ok(run_pybuild("exec", "--privileged", cid, "grep", "CapEff", "/proc/self/status"))
        assert priv.stdout == f"CapEff:\t{caps.available_mask():016x}\n"
    finally:
        run_pybuild("rm", "-f", cid)


@needs_devices
@pytest.mark.parametrize("how", ["fails", "interrupted"])
def test_a_run_step_s_devices_cgroup_goes_whatever_ends_it(busybox_root, tmp_path, how):
    (tmp_path / "Dockerfile").write_text("FROM busybox\nRUN " + ("false" if how == "fails" else
                                                                 "sleep 30") + "\n")
    p = subprocess.Popen([sys.executable, "-m", "builder", "build", "--network", "none", "-t", "x",
                          str(tmp_path)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        if how == "interrupted":
            parent = os.path.join(OWN[cgroups.DEVICES], cgroups.PARENT)
            end = time.monotonic() + 30
            while not any((owner.of_name(n) or "").split(".")[0] == str(p.pid) and cgroups.procs(
                    os.path.join(parent, n)) for n in devices_leftovers()):
                assert time.monotonic() < end and p.poll() is None, "the RUN step's cgroup never appeared"
                time.sleep(0.02)
            p.send_signal(signal.SIGINT)
        assert p.wait(timeout=60) != 0
    finally:
        p.kill()
        p.wait()
