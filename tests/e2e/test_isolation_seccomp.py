"""Seccomp as docker applies it, on busybox:latest: the same battery of refused system calls in
`pybuild run`, in a RUN step and in `docker run` (the session's private dockerd), pybuild the
same or stricter on each; `--security-opt` (unconfined, a profile FILE, no-new-privileges, bad
values) in run, run -d, create/start and exec, and shown by inspect."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import test_containers
from busybox_fixture import REPO
from e2e_helpers import build, ok, one_error_line

root = test_containers.root     # busybox_root; every container removed after

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="containers need root (run as root)")

# name -> a busybox command whose exit status and first stderr line are compared
PROBES = {
    "unshare_user": "unshare -U true",
    "unshare_root": "unshare -r true",
    "unshare_mnt": "unshare -m true",
    "unshare_net": "unshare -n true",
    "mount_tmpfs": "mount -t tmpfs x /mnt",
    "umount_sys": "umount /sys",
    "setns": "nsenter -t 1 -n true",
    "pivot_root": "pivot_root / /",
    "sethostname": "hostname probe",
    "syslog": "dmesg",
    "swapoff": "swapoff /dev/null",
    "chroot": "chroot / true",                  # allowed: CAP_SYS_CHROOT is kept
    "personality32": "linux32 true",            # personality(PER_LINUX32): allowed
    "mkdir": "mkdir /tmp/probe-dir",
}
BATTERY = "; ".join(
    f"out=$({cmd} 2>&1 >/dev/null); echo \"{name} $? ${{out%%\n*}}\"" for name, cmd in PROBES.items()
) + "; grep '^Seccomp:' /proc/self/status"


def parse(text: str) -> dict[str, tuple[int, str]]:
    out = {}
    for line in text.splitlines():
        if line.startswith("Seccomp:"):
            out["seccomp"] = (int(line.split()[1]), "")
            continue
        name, code, *msg = line.split(" ", 2)
        out[name] = (int(code), msg[0] if msg else "")
    return out


def pybuild_run(pybuild, *args, command=BATTERY):
    return pybuild("run", "--rm", "--network", "none", *args, "busybox", "sh", "-c", command)


def docker(cli, *args):
    return subprocess.run([*cli, *args], capture_output=True, text=True, timeout=120, check=False)


def check_battery(got: dict, where: str) -> None:
    """What docker's default profile (and capabilities) give, whoever judges."""
    assert got["seccomp"][0] == 2, (where, got)
    for name in ("unshare_user", "unshare_root", "unshare_mnt", "unshare_net", "mount_tmpfs",
                 "umount_sys", "setns", "pivot_root", "sethostname", "syslog", "swapoff"):
        assert got[name][0] != 0, (where, name, got[name])
    for name in ("chroot", "personality32", "mkdir"):
        assert got[name][0] == 0, (where, name, got[name])
    assert "Operation not permitted" in got["unshare_user"][1], got["unshare_user"]


def same_or_stricter(ours: dict, theirs: dict, where: str) -> None:
    assert ours.keys() == theirs.keys()
    for name, (code, msg) in theirs.items():
        if code != 0:       # docker refuses: so must we, with the same errno's words
            assert ours[name] == (code, msg), (where, name, ours[name], theirs[name])


def run_step_battery(pybuild, ctx) -> dict:
    (ctx / "probe.sh").write_text(BATTERY + "\n")
    build(pybuild, ctx, "FROM busybox\nCOPY probe.sh /\nRUN sh /probe.sh > /probe.txt\n",
          tag="seccomp-probe")
    return parse(ok(pybuild("run", "--rm", "--network", "none", "seccomp-probe",
                            "cat", "/probe.txt")).stdout)


def test_run_and_run_step_refuse_what_docker_refuses(root, pybuild, tmp_path):
    ours = parse(ok(pybuild_run(pybuild)).stdout)
    check_battery(ours, "run")
    in_run = run_step_battery(pybuild, tmp_path)
    check_battery(in_run, "RUN")
    assert in_run == ours


def test_docker_refuses_the_same(dockerd, root, pybuild, tmp_path):
    tar = tmp_path / "bb.tar"
    ok(pybuild("tag", "busybox", "pybuild-test/seccomp:1"))
    ok(pybuild("save", "-o", str(tar), "pybuild-test/seccomp:1"))
    assert docker(dockerd, "load", "-i", str(tar)).returncode == 0
    try:
        r = docker(dockerd, "run", "--rm", "--network", "none", "pybuild-test/seccomp:1", "sh",
                   "-c", BATTERY)
        assert r.returncode == 0, r.stderr
        theirs = parse(r.stdout)
    finally:
        docker(dockerd, "rmi", "pybuild-test/seccomp:1")
    check_battery(theirs, "docker")
    same_or_stricter(parse(ok(pybuild_run(pybuild)).stdout), theirs, "run")
    same_or_stricter(run_step_battery(pybuild, tmp_path), theirs, "RUN")


# the calls issue 11 names that busybox cannot make: a static C probe (fixtures/seccomp_probe.c)
REFUSED = ("keyctl", "add_key", "request_key", "kexec_load", "bpf", "perf_event_open",
           "userfaultfd", "open_by_handle_at", "io_uring_setup", "mount", "umount2", "pivot_root",
           "setns", "clone_newuser", "socket_alg", "socket_vsock", "personality_odd", "swapon",
           "init_module", "acct", "settimeofday", "syslog", "unshare_user")


@pytest.fixture
def probe_image(root, pybuild, tmp_path):
    """busybox with /probe (built static here) and /probe-run.txt, its output in a RUN step."""
    assert shutil.which("gcc"), "the probe needs gcc and libc6-dev (./install.sh --test installs them)"
    ctx = tmp_path / "probe-ctx"
    ctx.mkdir()
    r = subprocess.run(["gcc", "-static", "-O1", "-o", str(ctx / "probe"),
                        str(REPO / "fixtures" / "seccomp_probe.c")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    build(pybuild, ctx, "FROM busybox\nCOPY probe /probe\nRUN /probe > /probe-run.txt\n",
          tag="pybuild-test/seccomp-probe:1")
    return "pybuild-test/seccomp-probe:1"


def probe_answers(text: str) -> dict[str, str]:
    return dict(line.split() for line in text.splitlines())


def check_probe(got: dict, where: str) -> None:
    for name in REFUSED:
        assert got[name] == "EPERM", (where, name, got[name])
    assert got["clone3"] == "ENOSYS", where        # glibc falls back to clone
    assert got["nr_1000"] == "ENOSYS", where


def test_syscalls_busybox_cannot_make_are_refused_in_run_and_run_step(probe_image, pybuild):
    ours = probe_answers(ok(pybuild("run", "--rm", "--network", "none", probe_image, "/probe")).stdout)
    check_probe(ours, "run")
    in_run = probe_answers(ok(pybuild("run", "--rm", "--network", "none", probe_image, "cat",
                                      "/probe-run.txt")).stdout)
    assert in_run == ours


def test_docker_refuses_the_same_syscalls(dockerd, probe_image, pybuild, tmp_path):
    tar = tmp_path / "probe.tar"
    ok(pybuild("save", "-o", str(tar), probe_image))
    assert docker(dockerd, "load", "-i", str(tar)).returncode == 0
    try:
        r = docker(dockerd, "run", "--rm", "--network", "none", probe_image, "/probe")
        assert r.returncode == 0, r.stderr
        theirs = probe_answers(r.stdout)
    finally:
        docker(dockerd, "rmi", probe_image)
    ours = probe_answers(ok(pybuild("run", "--rm", "--network", "none", probe_image, "/probe")).stdout)
    for name, answer in theirs.items():
        if answer in ("EPERM", "ENOSYS"):   # refused: so is ours, with the same errno
            assert ours[name] == answer, (name, ours[name], answer)
        else:       # docker let it reach the kernel: ours the same, or refused (stricter)
            assert ours[name] in (answer, "EPERM", "ENOSYS"), (name, ours[name], answer)
    # docker 20.10's profile is older than ours (it lets io_uring through, for one)
    assert sum(theirs[n] == "EPERM" for n in REFUSED) >= len(REFUSED) - 3, theirs


def test_unconfined_profile_file_and_no_new_privileges(root, pybuild, tmp_path):
    r = ok(pybuild_run(pybuild, "--security-opt", "seccomp=unconfined",
                       command="grep '^Seccomp:' /proc/self/status; unshare -U true; echo $?"))
    assert r.stdout.split() == ["Seccomp:", "0", "0"]     # root's caps allow a user namespace

    profile = tmp_path / "nomkdir.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}))
    r = pybuild_run(pybuild, "--security-opt", f"seccomp={profile}", command="mkdir /x")
    assert r.returncode == 1 and "Permission denied" in r.stderr, r.stderr

    r = ok(pybuild_run(pybuild, "--security-opt", "no-new-privileges",
                       command="grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status"))
    assert r.stdout.split() == ["NoNewPrivs:", "1", "Seccomp:", "2"]
    r = ok(pybuild_run(pybuild, "--security-opt", "no-new-privileges=false",
                       command="grep '^NoNewPrivs:' /proc/self/status"))
    assert r.stdout.split() == ["NoNewPrivs:", "0"]
    r = ok(pybuild_run(pybuild, command="grep '^NoNewPrivs:' /proc/self/status"))
    assert r.stdout.split() == ["NoNewPrivs:", "0"]        # docker's default: setuid works


def test_init_is_filtered_too(root, pybuild):
    r = ok(pybuild_run(pybuild, "--init",
                       command="grep '^Seccomp:' /proc/1/status /proc/self/status"))
    assert [ln.split()[-1] for ln in r.stdout.splitlines()] == ["2", "2"]


@pytest.mark.parametrize("opt, words", [
    ("foo=bar", 'invalid --security-opt 2: "foo=bar"'),
    ("foo", 'Invalid --security-opt: "foo"'),
    ("no-new-privileges=maybe", 'invalid --security-opt 2: "no-new-privileges=maybe"'),
    ("seccomp=/nonexistent.json", "opening seccomp profile (/nonexistent.json) failed"),
    ("seccomp=BAD", "compacting json for seccomp profile"),
    ("seccomp=BADACTION", "decoding seccomp profile failed: unknown action 'SCMP_ACT_NOPE'"),
])
def test_bad_security_opt_is_one_line_and_leaves_nothing(root, pybuild, tmp_path, opt, words):
    (tmp_path / "bad.json").write_text('{"defaultAction":')
    (tmp_path / "badaction.json").write_text('{"defaultAction": "SCMP_ACT_NOPE"}')
    opt = opt.replace("=BADACTION", f"={tmp_path}/badaction.json").replace("=BAD", f"={tmp_path}/bad.json")
    for cmd in (["run", "--rm", "--network", "none"], ["run", "-d", "--network", "none"],
                ["create", "--network", "none"]):
        r = pybuild(*cmd, "--security-opt", opt, "busybox", "true")
        one_error_line(r, words, code=125)
    assert ok(pybuild("ps", "-aq")).stdout.split() == []
    assert not os.listdir(root / "tmp") if (root / "tmp").exists() else True


def test_detached_start_and_exec_keep_the_options_and_inspect_shows_them(root, pybuild, tmp_path):
    cid = ok(pybuild("run", "-d", "--network", "none", "--security-opt", "no-new-privileges",
                     "busybox", "sleep", "60")).stdout.strip()
    r = ok(pybuild("exec", cid, "grep", "-E", "^(NoNewPrivs|Seccomp):", "/proc/self/status"))
    assert r.stdout.split() == ["NoNewPrivs:", "1", "Seccomp:", "2"]
    r = pybuild("exec", cid, "unshare", "-U", "true")
    assert r.returncode == 1 and "Operation not permitted" in r.stderr, r.stderr
    doc = json.loads(ok(pybuild("inspect", cid)).stdout)[0]
    assert doc["HostConfig"]["SecurityOpt"] == ["no-new-privileges"]

    cid = ok(pybuild("run", "-d", "--network", "none", "--security-opt", "seccomp=unconfined",
                     "busybox", "sleep", "60")).stdout.strip()
    r = ok(pybuild("exec", cid, "grep", "^Seccomp:", "/proc/self/status"))
    assert r.stdout.split() == ["Seccomp:", "0"]

    profile = tmp_path / "p.json"
    profile.write_text('{ "defaultAction": "SCMP_ACT_ALLOW",\n "syscalls": [{"names": ["mkdir", '
                       '"mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}] }')
    cid = ok(pybuild("create", "--network", "none", "--security-opt", f"seccomp={profile}",
                     "busybox", "sh", "-c", "mkdir /x; echo $?")).stdout.strip()
    profile.unlink()        # the record keeps the profile's text, as docker's does
    doc = json.loads(ok(pybuild("inspect", cid)).stdout)[0]
    assert doc["HostConfig"]["SecurityOpt"] == [
        'seccomp={"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],'
        '"action":"SCMP_ACT_ERRNO","errnoRet":13}]}']
    r = ok(pybuild("start", "-a", cid))
    assert r.stdout.strip() == "1" and "Permission denied" in r.stderr

    cid = ok(pybuild("run", "-d", "--network", "none", "busybox", "sleep", "60")).stdout.strip()
    assert json.loads(ok(pybuild("inspect", cid)).stdout)[0]["HostConfig"]["SecurityOpt"] is None
    r = ok(pybuild("exec", cid, "grep", "^Seccomp:", "/proc/self/status"))
    assert r.stdout.split() == ["Seccomp:", "2"]
