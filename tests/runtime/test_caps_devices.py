"""runtime.caps, the --device parser and the devices cgroup on this machine's kernel: docker's
capability arithmetic and lines, a sandbox's sets with --cap-add/--cap-drop (also for a
non-root user and with SETUID dropped), the devices cgroup of every sandbox (a RUN's too)
holding docker's rules while it runs and gone after, a dead owner's leftover swept, --device
nodes and --privileged."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import pytest
from busybox_fixture import REPO
from rootfs_helpers import requires_root
from sbhelpers import sh

from runtime import caps, cgroups, process, rootfs
from runtime.errors import SandboxError
from runtime.spec import SandboxSpec

VERSION, OWN = cgroups.hierarchies()
needs_devices = pytest.mark.skipif(cgroups.DEVICES not in OWN,
                                   reason="needs the cgroup v1 devices controller")
ALL = caps.available_mask()
MISSING = [n for i, n in enumerate(caps.CAP_NAMES) if not ALL >> i & 1]   # not in our bounding set
needs_loop = pytest.mark.skipif(not os.path.exists("/dev/loop-control"),
                                reason="needs /dev/loop-control (modprobe loop)")


def bit(name: str) -> int:
    return 1 << caps.CAP_NAMES.index(name)


def test_docker_capability_arithmetic():
    d = caps.DEFAULT_CAP_MASK
    assert caps.mask() == d == 0xa80425fb
    assert caps.mask(["sys_admin"]) == d | bit("SYS_ADMIN")
    assert caps.mask(["CAP_SYS_ADMIN"], ["Chown"]) == (d | bit("SYS_ADMIN")) & ~bit("CHOWN")
    assert caps.mask(["NET_ADMIN"], ["ALL"]) == bit("NET_ADMIN")
    assert caps.mask([], ["all"]) == 0
    assert caps.mask(["ALL"], ["MKNOD"]) == ALL & ~bit("MKNOD")
    assert caps.mask(["ALL"], ["ALL"]) == ALL       # docker: --cap-add ALL wins
    assert caps.mask(["chown"], ["chown"]) == d     # dropped, then added again
    assert caps.mask(privileged=True, cap_drop=["ALL"]) == ALL
    assert caps.names(bit("KILL") | bit("BPF")) == ["CAP_KILL", "CAP_BPF"]


@pytest.mark.parametrize("add, drop, line", [
    (["NOPE"], [], 'invalid CapAdd: unknown capability: "CAP_NOPE"'),
    ([], ["cap_foo"], 'invalid CapDrop: unknown capability: "CAP_FOO"'),
    (["CAP_"], [], 'invalid CapAdd: unknown capability: "CAP_"'),
])
def test_unknown_capabilities_are_docker_s_line(add, drop, line):
    with pytest.raises(SandboxError) as e:
        caps.mask(add, drop)
    assert str(e.value) == line


@pytest.mark.skipif(not MISSING, reason="this process holds every capability the kernel knows "
                                        "(run it where the bounding set lacks one, e.g. in a "
                                        "container without CAP_SYS_RESOURCE)")
def test_a_capability_the_caller_lacks_cannot_be_added():
    with pytest.raises(SandboxError, match="capability not supported by your kernel or not "
                                           f'available in the current environment: "CAP_{MISSING[0]}"'):
        caps.mask([MISSING[0]])


@pytest.mark.parametrize("text, want", [
    ("/dev/sda", ("/dev/sda", "/dev/sda", "rwm")),
    ("/dev/sda:/dev/xvdc", ("/dev/sda", "/dev/xvdc", "rwm")),
    ("/dev/sda:/dev/xvdc:r", ("/dev/sda", "/dev/xvdc", "r")),
    ("/dev/sda:rw", ("/dev/sda", "/dev/sda", "rw")),
    ("/dev/sda:/dev/../dev/x/", ("/dev/sda", "/dev/x", "rwm")),
])
def test_device_flag_as_docker_parses_it(text, want):
    d = rootfs.parse_device(text)
    assert (d["PathOnHost"], d["PathInContainer"], d["CgroupPermissions"]) == want


@pytest.mark.parametrize("text, line", [
    ("", "bad format for path: "), (":/dev/x", "bad format for path: :/dev/x"),
    ("/a:/b:r:w", "bad format for path: /a:/b:r:w"), ("/a:/b:rwx", "bad mode specified: rwx"),
    ("/a:/b:rr", "bad mode specified: rr"), ("/a:rel", "rel is not an absolute path"),
    ("rel", "rel is not an absolute path"), ("rel:rw", "rel is not an absolute path"),
])
def test_bad_device_flags_are_docker_s_lines(text, line):
    with pytest.raises(SandboxError) as e:
        rootfs.parse_device(text)
    assert str(e.value) == line


def test_device_nodes_take_the_host_node_and_refuse_what_is_none(tmp_path):
    st = os.stat("/dev/null")
    [n] = rootfs.device_nodes([rootfs.parse_device("/dev/null:/dev/mynull:rw")])
    assert n == {"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3, "mode": 0o666,
                 "uid": st.st_uid, "gid": st.st_gid, "perms": "rw"}
    assert cgroups.device_rule(n) == "c 1:3 rw"
    (tmp_path / "f").write_text("x")
    for path, why in ((str(tmp_path / "f"), "not a device node"),
                      (str(tmp_path / "gone"), "no such file or directory")):
        with pytest.raises(SandboxError) as e:
            rootfs.device_nodes([rootfs.parse_device(path)])
        assert str(e.value) == ("error gathering device information while adding custom "
                                f'device "{path}": {why}')


def test_privileged_lists_the_host_devices_but_its_own_dev_parts():
    paths = {n["path"] for n in rootfs.device_nodes([], privileged=True)}
    assert "/dev/null" in paths and "/dev/console" not in paths
    assert not any(p.startswith(("/dev/pts/", "/dev/shm/", "/dev/mqueue/")) for p in paths)


@requires_root
def test_cap_flags_set_the_sandbox_s_sets(busybox_layer):
    grep = "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status"
    for kw, want in (({"cap_drop": ["ALL"]}, 0),
                     ({"cap_add": ["SYS_ADMIN"]}, caps.DEFAULT_CAP_MASK | bit("SYS_ADMIN")),
                     ({"privileged": True}, ALL)):
        rc, out, err = sh([busybox_layer], grep, **kw)
        assert rc == 0, err
        got = dict(ln.split(":\t") for ln in out.splitlines())
        w = f"{want:016x}"
        assert got == {"CapInh": "0" * 16, "CapPrm": w, "CapEff": w, "CapBnd": w, "CapAmb": "0" * 16}


@requires_root
def test_the_user_switch_needs_no_setuid_capability_left(busybox_layer):
    rc, out, err = sh([busybox_layer], "id -u; grep -E '^Cap(Eff|Bnd)' /proc/self/status",
                      user="nobody", cap_drop=["SETUID", "SETGID"])
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == "65534"
    assert lines[1:] == ["CapEff:\t" + "0" * 16,
                         f"CapBnd:\t{caps.DEFAULT_CAP_MASK & ~bit('SETUID') & ~bit('SETGID'):016x}"]


def _devices_dir(tree: process.ProcessTree) -> str:
    [d] = [p for p in tree.cgroup if p.startswith(OWN[cgroups.DEVICES] + "/")]
    return d


@requires_root
@needs_devices
@pytest.mark.parametrize("kw, rules", [
    ({}, sorted(cgroups.DEVICE_RULES)),
    ({"devices": [rootfs.parse_device("/dev/kmsg:/dev/k:r")]},
     sorted([*cgroups.DEVICE_RULES, "c 1:11 r"])),
    ({"privileged": True}, ["a *:* rwm"]),
])
def test_every_sandbox_runs_in_a_devices_cgroup_with_docker_s_rules(busybox_layer, kw, rules):
    """A RUN step's spec (no resources): the devices cgroup is its only one, gone after."""
    with tempfile.TemporaryFile() as out:
        spec = SandboxSpec(lowerdirs=[busybox_layer], argv=["sh", "-c", "cat /proc/self/cgroup; sleep 5"],
                           stdout=out.fileno(), network="none", **kw)
        tree = process.start(spec)
        try:
            d = _devices_dir(tree)
            assert len(tree.cgroup) == 1
            with open(os.path.join(d, "devices.list")) as f:
                assert sorted(f.read().splitlines()) == rules
            assert tree.started(timeout=10) is None
            end = time.monotonic() + 10
            while b"devices:" not in (seen := os.pread(out.fileno(), 4096, 0)):
                assert time.monotonic() < end, seen
                time.sleep(0.01)
        finally:
            tree.kill()
            assert tree.wait() == 137
        assert f"devices:{d[len(OWN[cgroups.DEVICES]):]}\n" in seen.decode()
    assert not os.path.exists(d)


@requires_root
@needs_devices
@needs_loop
def test_a_device_node_is_made_and_only_its_perms_allowed(busybox_layer):
    host = "/dev/loop-control"      # a char device outside docker's default rules
    rc, out, err = sh([busybox_layer], "ls -ln /dev/sub/k | cut -c1-10; : < /dev/sub/k && echo read; "
                      ": > /dev/sub/k", devices=[rootfs.parse_device(f"{host}:/dev/sub/k:r")])
    st = os.stat(host)
    want = "c" + "".join("rwxrwxrwx"[i] if st.st_mode >> (8 - i) & 1 else "-" for i in range(9))
    assert out.splitlines() == [want, "read"]
    assert rc != 0 and "Operation not permitted" in err
    rc, out, err = sh([busybox_layer], f"mknod /k c {os.major(st.st_rdev)} {os.minor(st.st_rdev)} "
                                       "&& : < /k && echo read")
    assert rc != 0 and "Operation not permitted" in err and out == ""


@requires_root
@needs_devices
def test_a_dead_owner_s_devices_cgroup_is_swept(busybox_layer):
    code = "from runtime import cgroups; print(cgroups.create(None)[0])"
    left = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip()
    assert os.path.isdir(left)      # its process ended without removing it (a kill -9)
    made = cgroups.create(None)
    try:
        assert not os.path.exists(left)
    finally:
        cgroups.remove(made)
    assert not any(os.path.exists(p) for p in made)


def _unified() -> str | None:
    """This process's cgroup dir in a cgroup2 mount (hybrid hosts have one beside v1)."""
    own = cgroups._own_cgroups().get("")
    for root, point, fstype, _ in cgroups._mountinfo():
        if fstype == "cgroup2" and own is not None:
            return cgroups._under(point, root, own)
    return None


UNIFIED = _unified()
needs_cgroup2 = pytest.mark.skipif(UNIFIED is None or os.geteuid() != 0,
                                   reason="needs root and a cgroup2 mount")
PROBE = ("echo x > /dev/null && echo null; head -c1 /dev/zero | wc -c; "
         "mknod /tmp/pbb b 7 0 && echo mknod; (: < /tmp/pbb) 2>/dev/null && echo block; "
         "rm -f /tmp/pbb; (: < /dev/loop-control) 2>/dev/null && echo read-lc; "
         "(: > /dev/loop-control) 2>/dev/null && echo write-lc; true")


@needs_cgroup2
@pytest.mark.parametrize("rules, want", [
    (cgroups.DEVICE_RULES, ["null", "1", "mknod"]),
    ([*cgroups.DEVICE_RULES, "c 10:237 r"], ["null", "1", "mknod", "read-lc"]),
    (["a *:* rwm"], ["null", "1", "mknod", "block", "read-lc", "write-lc"]),
    (["c 1:3 w"], ["null", "0"]),
])
@needs_loop
def test_the_v2_device_program_allows_what_the_v1_rules_allow(tmp_path, rules, want):
    from runtime import devicefilter

    d = os.path.join(UNIFIED, f"pybuild-test-{os.getpid()}")
    os.mkdir(d)
    try:
        devicefilter.attach(d, rules)
        r = subprocess.run(["sh", "-c", f"echo $$ > {d}/cgroup.procs; {PROBE}"],
                           capture_output=True, text=True, cwd=tmp_path)
        assert r.stdout.split() == want, r.stderr
    finally:
        os.rmdir(d)


@requires_root
@needs_cgroup2
def test_a_sandbox_on_v2_gets_the_program_and_leaves_no_cgroup(busybox_layer, monkeypatch):
    """runtime.cgroups' v2 path, on this host's real cgroup2 hierarchy (told it is the one)."""
    parent = os.path.join(UNIFIED, cgroups.PARENT)
    existed = os.path.isdir(parent)

    def kids() -> set[str]:
        return {n for n in os.listdir(parent) if os.path.isdir(os.path.join(parent, n))}

    before = kids() if existed else set()
    monkeypatch.setattr(cgroups, "hierarchies", lambda proc="self": (2, {"": UNIFIED}))
    try:
        rc, out, err = sh([busybox_layer], PROBE.replace("/tmp/", "/") + "; cat /proc/self/cgroup",
                          network="none")
        assert rc == 0, err
        lines = out.split()
        assert lines[:3] == ["null", "1", "mknod"] and "read-lc" not in lines
        assert any(ln.startswith("0::/") and f"/{cgroups.PARENT}/ctr-" in ln for ln in lines), out
        assert kids() == before
    finally:
        if not existed:         # this host's v2 hierarchy is not pybuild's: leave it as it was
            os.rmdir(parent)
