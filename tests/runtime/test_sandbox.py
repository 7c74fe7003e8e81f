"""runtime.sandbox.run on a real busybox rootfs: what a command inside sees, and what it leaves."""
from __future__ import annotations

import os
import signal
import stat
import time

import pytest
from rootfs_helpers import requires_root
from sbhelpers import capture, sh, tree

from runtime.caps import DEFAULT_CAP_MASK
from runtime.errors import SandboxError
from runtime.process import start
from runtime.spec import Mount, SandboxSpec

pytestmark = requires_root


# --- exit status and signals ------------------------------------------------------------------

@pytest.mark.parametrize("script,code", [("true", 0), ("exit 3", 3), ("exit 255", 255),
                                         ("kill -TERM $$", 128 + 15), ("kill -KILL $$", 128 + 9)])
def test_exit_status(busybox_layer, script, code):
    """Under an init (docker --init) the command is pid 2: a signal it sends itself kills it."""
    assert sh([busybox_layer], script, init=True)[0] == code
    if "kill" not in script:
        assert sh([busybox_layer], script)[0] == code


def test_pid1_survives_the_signals_it_has_no_handler_for(busybox_layer):
    """The command is pid 1 (docker's): the kernel drops a signal it has no handler for, even
    SIGKILL from inside; one it traps arrives."""
    assert sh([busybox_layer], "kill -TERM $$; kill -KILL $$; echo alive")[:2] == (0, "alive\n")
    assert sh([busybox_layer], "trap 'exit 7' TERM; kill -TERM $$; sleep 5")[0] == 7


def test_signal_sent_to_sandbox_reaches_the_command(busybox_layer):
    sb = start(SandboxSpec(lowerdirs=[busybox_layer], argv=["sh", "-c", ("trap 'exit 42' USR1; "
                                                                   "while :; do sleep 0.05; done")]))
    time.sleep(0.5)
    sb.signal(signal.SIGUSR1)
    assert sb.wait() == 42


def test_forward_signals_relays_ours_to_the_command_and_restores_the_handlers(busybox_layer):
    """`pybuild run`'s relay: a SIGUSR1 this process gets reaches the command; afterwards our
    handlers are what they were."""
    import threading

    from runtime.sandbox import run

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    spec = SandboxSpec(lowerdirs=[busybox_layer], argv=["sh", "-c", "trap 'exit 42' USR1; "
                                                        "while :; do sleep 0.05; done"])
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGUSR1))
    timer.start()
    try:
        assert run(spec, forward_signals=True) == 42
    finally:
        timer.cancel()
    assert {s: signal.getsignal(s) for s in before} == before


def test_forward_signals_off_the_main_thread_runs_without_a_relay(busybox_layer):
    """Only the main thread can set handlers: from another thread the command just runs."""
    import threading

    from runtime.sandbox import run

    before = signal.getsignal(signal.SIGTERM)
    got = []
    t = threading.Thread(target=lambda: got.append(run(
        SandboxSpec(lowerdirs=[busybox_layer], argv=["sh", "-c", "exit 3"]), forward_signals=True)))
    t.start()
    t.join(30)
    assert got == [3] and signal.getsignal(signal.SIGTERM) is before


def test_leftover_processes_die_with_the_command(busybox_layer):
    t = time.monotonic()
    rc, out, _ = sh([busybox_layer], "sleep 60 & echo started")
    assert rc == 0 and out == "started\n"
    assert time.monotonic() - t < 10


def test_orphans_are_reaped_by_pid1(busybox_layer):
    script = ("sh -c 'sleep 0.1 & exit 0'; sleep 0.5; "
              "for s in /proc/[0-9]*/stat; do cut -d' ' -f3 $s; done | grep -c Z || true")
    rc, out, _ = sh([busybox_layer], script)
    assert rc == 0 and out.strip() == "0"


# --- environment, cwd, user, hostname -------------------------------------------------------------

def test_env_and_default_path_and_home(busybox_layer):
    _, out, _ = sh([busybox_layer], 'echo "$FOO|$PATH|$HOME"', env=["FOO=bar baz"])
    assert out == "bar baz|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin|/root\n"
    _rc, out, _ = sh([busybox_layer], 'echo "$PATH|$HOME"', env=["PATH=/bin", "HOME=/x"], user="alice")
    assert out == "/bin|/x\n"
    assert sh([busybox_layer], 'echo $HOME', user="alice")[1] == "/home/alice\n"


def test_later_env_entry_wins(busybox_layer):
    assert sh([busybox_layer], "echo $A", env=["A=1", "A=2"])[1] == "2\n"


def test_cwd(busybox_layer):
    assert sh([busybox_layer], "pwd", cwd="/etc")[1] == "/etc\n"


def test_missing_cwd_is_a_clear_error(busybox_layer):
    with pytest.raises(SandboxError, match="cannot change to working directory /nope: no such file"):
        sh([busybox_layer], "pwd", cwd="/nope")


@pytest.mark.parametrize("user,expect,container", [
    ("", "0 0 10", "0 0 0 10"),     # root's /etc/group memberships (a container: the gid first)
    ("root", "0 0 10", "0 0 0 10"),
    ("alice", "1000 1000 10 50", "1000 1000 1000 10 50"),
    ("1000", "1000 1000 10 50", "1000 1000 1000 10 50"),
    ("alice:staff", "1000 50", "1000 50 50"),   # an explicit group: no memberships
    ("1234", "1234 0", "1234 0 0"),             # numeric, no passwd entry: gid 0
    ("1234:5678", "1234 5678", "1234 5678 5678"),
    ("nobody:wheel", "65534 10", "65534 10 10"),
])
def test_user_forms(busybox_layer, user, expect, container):
    """A build's RUN: BuildKit's groups (memberships only); a container: docker's getUser."""
    for want, gid_in_groups in ((expect, False), (container, True)):
        _rc, out, _ = sh([busybox_layer], "echo $(id -u) $(id -g) "
                         "$(grep Groups: /proc/self/status | cut -f2)", user=user,
                         gid_in_groups=gid_in_groups)
        uid, gid, *groups = out.split()
        want_uid, want_gid, *want_groups = want.split()
        assert (uid, gid, sorted(groups, key=int)) == (want_uid, want_gid,
                                                        sorted(want_groups, key=int))


def test_unknown_user_and_group(busybox_layer):
    with pytest.raises(SandboxError, match="^unable to find user bob: no matching entries in passwd file$"):
        sh([busybox_layer], "id", user="bob")
    with pytest.raises(SandboxError, match="unable to find group nope: no matching entries in group file"):
        sh([busybox_layer], "id", user="alice:nope")


def test_hostname_and_etc_files(busybox_layer):
    _rc, out, _ = sh([busybox_layer], "hostname; cat /etc/hostname; cat /etc/hosts")
    assert out.startswith("buildkitsandbox\nbuildkitsandbox\n127.0.0.1\tlocalhost buildkitsandbox\n")
    assert sh([busybox_layer], "hostname", hostname="web1")[1] == "web1\n"


def test_etc_hosts_is_read_only(busybox_layer):
    rc, _, err = sh([busybox_layer], "echo x >> /etc/hosts")
    assert rc != 0 and "Read-only" in err


# --- the view: pid 1, /proc, /dev, /sys, capabilities, fds -------------------------------------

def test_the_command_is_pid1_and_with_init_pid2(busybox_layer):
    _rc, out, _ = sh([busybox_layer], "echo $$; cat /proc/1/cmdline; echo; ls -d /proc/[0-9]* | wc -l")
    pid, cmdline, count = out.split("\n")[:3]
    assert pid == "1" and cmdline.split("\x00")[:2] == ["sh", "-c"], (pid, cmdline)
    assert int(count) <= 3   # sh, ls, wc: no host processes
    _rc, out, _ = sh([busybox_layer], "echo $$; cat /proc/1/cmdline; echo; ls -d /proc/[0-9]* | wc -l",
                     init=True)
    pid, cmdline, count = out.split("\n")[:3]
    assert pid == "2" and cmdline in ("pybuild-init\x00", "pybuild-init"), (pid, cmdline)
    assert int(count) <= 4   # init, sh, ls, wc: no host processes


def test_pid1_cannot_be_opened_for_writing_or_traced(busybox_layer):
    """CVE-2019-5736: with --init pid 1 is the host python; the container must not reach its
    binary."""
    import sys
    before = os.stat(sys.executable)
    _rc, out, err = sh([busybox_layer], "readlink /proc/1/exe || echo no-exe; echo hi > /proc/1/exe; "
                                       "cat /proc/1/environ; ls -l /proc/1/fd/0", init=True)
    lines = err.splitlines()
    assert out.startswith("no-exe\n") and "python" not in out and len(lines) == 3, (out, err)
    assert all("Permission denied" in ln for ln in lines), err
    after = os.stat(sys.executable)
    assert (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns)


def test_masked_paths(busybox_layer):
    rc, out, err = sh([busybox_layer], "cat /proc/interrupts /proc/keys /proc/timer_list | wc -c; "
                                       "ls -A /sys/firmware | wc -l; touch /sys/firmware/x")
    assert out.split()[:2] == ["0", "0"]
    assert rc != 0 and "Read-only file system" in err


def test_proc_sys_and_sysfs_are_read_only(busybox_layer):
    rc, _, err = sh([busybox_layer], "echo 1 > /proc/sys/kernel/domainname")
    assert rc != 0 and "Read-only file system" in err
    rc, _out, err = sh([busybox_layer], "echo 1 > /sys/kernel/uevent_helper; touch /sys/x")
    assert rc != 0 and "Read-only file system" in err


def test_proc_is_fresh_and_hardened(busybox_layer):
    _rc, out, _ = sh([busybox_layer], "grep -E ' /proc | /dev | /sys ' /proc/mounts")
    lines = {ln.split()[1]: ln.split()[3].split(",") for ln in out.splitlines()}
    assert {"nosuid", "nodev", "noexec"} <= set(lines["/proc"])
    assert "ro" in lines["/sys"] and "nosuid" in lines["/dev"]


def test_minimal_dev(busybox_layer):
    _rc, out, _ = sh([busybox_layer], "ls -A /dev; echo x > /dev/null; head -c 4 /dev/zero | wc -c; "
                                     "readlink /dev/ptmx; readlink /dev/fd")
    names = set(out.split())
    assert {"null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx", "fd",
            "stdin", "stdout", "stderr"} <= names
    assert not names & {"sda", "vda", "mem", "kmsg", "kvm"}
    assert "pts/ptmx" in out and "/proc/self/fd" in out


def test_capabilities_are_dockers_14(busybox_layer):
    _rc, out, _ = sh([busybox_layer], "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status")
    caps = dict(ln.split(":\t") for ln in out.splitlines())
    want = f"{DEFAULT_CAP_MASK:016x}"
    assert want == "00000000a80425fb"
    assert caps == {"CapInh": "0" * 16, "CapPrm": want, "CapEff": want, "CapBnd": want, "CapAmb": "0" * 16}


def test_non_root_user_has_no_effective_caps_and_new_privs_allowed(busybox_layer):
    _rc, out, _ = sh([busybox_layer], "grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status", user="alice")
    caps = dict(ln.split(":\t") for ln in out.splitlines())
    assert caps == {"CapEff": "0" * 16, "CapBnd": "00000000a80425fb", "NoNewPrivs": "0"}


def test_no_host_fds_leak(busybox_layer, tmp_path):
    leak = os.open(tmp_path, os.O_RDONLY)          # a host dir fd, inheritable on purpose
    os.set_inheritable(leak, True)
    try:
        _rc, out, _ = sh([busybox_layer], "ls /proc/$$/fd; true")
    finally:
        os.close(leak)
    assert out.split() == ["0", "1", "2"]


def test_rlimits_are_kept(busybox_layer):
    import resource
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert sh([busybox_layer], "ulimit -n")[1].strip() == str(soft)


# --- stdio, exec errors -------------------------------------------------------------------

def test_stdin_passes_through(busybox_layer):
    assert capture([busybox_layer], ["tr", "a-z", "A-Z"], stdin=b"hello\n")[:2] == (0, "HELLO\n")


def test_missing_command_exits_127(busybox_layer):
    rc, _, err = capture([busybox_layer], ["nosuchcmd"])
    assert rc == 127 and 'exec: "nosuchcmd": executable file not found in $PATH' in err
    rc, _out, err = capture([busybox_layer], ["/bin/nosuch"])
    assert rc == 127 and "no such file or directory" in err


def test_not_executable_exits_126(busybox_layer):
    rc, _out, err = capture([busybox_layer], ["/etc/passwd"])
    assert rc == 126 and "permission denied" in err


def test_path_lookup_uses_the_containers_path(busybox_layer):
    rc, out, _ = capture([busybox_layer], ["busybox", "echo", "ok"], env=["PATH=/nowhere:/bin"])
    assert (rc, out) == (0, "ok\n")
    assert capture([busybox_layer], ["busybox"], env=["PATH=/nowhere"])[0] == 127


# --- network ----------------------------------------------------------------------------------

def test_network_none_has_only_loopback_up(busybox_layer):
    _rc, out, _ = sh([busybox_layer], "ls /sys/class/net; cat /sys/class/net/lo/flags; "
                                     "ping -c1 -W1 127.0.0.1 >/dev/null && echo pong", network="none")
    assert out.split() == ["lo", "0x9", "pong"]


def test_network_host_sees_host_interfaces(busybox_layer):
    host = sorted(os.listdir("/sys/class/net"))
    assert sh([busybox_layer], "ls /sys/class/net")[1].split() == host


# --- the upper dir: what becomes the layer ---------------------------------------------------

def test_writes_land_in_upper_and_nothing_injected_does(busybox_layer, upper):
    u, w = upper
    rc, _, _ = sh([busybox_layer], "echo hi > /new; mkdir -p /var/lib/x; echo y > /tmp/t; "
                                   "ls /proc /dev /sys /etc/hosts >/dev/null", upperdir=u, workdir=w)
    assert rc == 0
    assert tree(u) == ["new", "tmp", "tmp/t", "var", "var/lib", "var/lib/x"]
    assert (u / "new").read_text() == "hi\n"


def test_a_command_that_writes_nothing_leaves_an_empty_upper(busybox_layer, upper):
    u, w = upper
    assert sh([busybox_layer], "cat /etc/hosts /etc/resolv.conf >/dev/null", upperdir=u, workdir=w)[0] == 0
    assert tree(u) == []


def test_deletions_are_overlay_whiteouts(busybox_layer, upper):
    u, w = upper
    rc, _, err = sh([busybox_layer], "rm /etc/group; rm -rf /home; mkdir /home; touch /home/new",
                    upperdir=u, workdir=w)
    assert rc == 0, err
    st = os.lstat(u / "etc/group")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert os.getxattr(u / "home", "trusted.overlay.opaque") == b"y"
    assert sorted(os.listdir(u / "home")) == ["new"]


def test_layers_stack_top_first(busybox_layer, tmp_path):
    top, mid = tmp_path / "top", tmp_path / "mid"
    for d, text in ((top, "top"), (mid, "mid")):
        (d / "etc").mkdir(parents=True)
        (d / "etc/who").write_text(text)
    (mid / "etc/only-mid").write_text("m")
    _rc, out, _ = sh([top, mid, busybox_layer], "cat /etc/who /etc/only-mid")
    assert out == "topm"


def test_image_without_etc_or_proc_gets_mount_points_that_stay_out_of_the_layer(tmp_path, upper):
    """A rootfs with only /bin: /proc /dev /sys /etc come from the stub layer, not the upper."""
    import shutil

    from rootfs_helpers import make_busybox_rootfs
    layer = make_busybox_rootfs(tmp_path / "l")
    shutil.rmtree(layer / "etc")
    u, w = upper
    rc, out, _ = sh([layer], "ls /; cat /etc/hostname", upperdir=u, workdir=w)
    assert rc == 0 and {"proc", "dev", "sys", "etc"} <= set(out.split())
    assert tree(u) == []


@requires_root
def test_the_stub_holds_only_what_no_layer_has(tmp_path):
    """rootfs.make_stub leaves out a mount point some layer already has at its path, as a dir, a
    file or a whiteout (a bottom layer could never show through it); a symlink on the way in a
    layer tells nothing, so that entry stays; when every layer has everything, no stub at all."""
    from runtime.rootfs import make_stub

    low = tmp_path / "low"
    for d in ("proc", "dev", "sys", "etc"):
        (low / d).mkdir(parents=True)
    stub = tmp_path / "stub"
    assert make_stub(str(stub), [], [str(low)])
    assert sorted(str(p.relative_to(stub)) for p in stub.rglob("*")) == [
        "etc", "etc/hostname", "etc/hosts", "etc/resolv.conf"]
    assert os.stat(stub / "etc/hosts").st_mtime_ns == 0

    top = tmp_path / "top"
    (top / "etc").mkdir(parents=True)
    os.mknod(top / "etc/hosts", stat.S_IFCHR | 0o600, os.makedev(0, 0))    # a whiteout
    (top / "etc/hostname").write_text("x\n")
    linked = tmp_path / "linked"
    (linked / "real").mkdir(parents=True)
    (linked / "real/resolv.conf").write_text("")
    (linked / "etc").symlink_to("real")
    stub2 = tmp_path / "stub2"
    assert make_stub(str(stub2), [], [str(top), str(linked), str(low)])
    assert sorted(str(p.relative_to(stub2)) for p in stub2.rglob("*")) == ["etc", "etc/resolv.conf"]

    (low / "etc/resolv.conf").write_text("")
    stub3 = tmp_path / "stub3"
    assert not make_stub(str(stub3), [], [str(top), str(low)]) and not stub3.exists()


def test_shadowed_stub_placeholders_are_removed_from_upper(busybox_layer, tmp_path, upper):
    """An opaque /etc above the stub hides the stub's /etc/hosts: the sandbox creates it, then
    removes it from the upper dir after the run, restoring /etc's mtime."""
    top = tmp_path / "opaque"
    (top / "etc").mkdir(parents=True)
    (top / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    os.setxattr(top / "etc", "trusted.overlay.opaque", b"y")
    os.utime(top / "etc", ns=(10**18, 10**18))
    u, w = upper
    rc, out, _ = sh([top, busybox_layer], "ls /etc; cat /etc/hostname", upperdir=u, workdir=w)
    assert rc == 0 and "hosts" in out.split() and out.endswith("buildkitsandbox\n")
    assert not (u / "etc/hosts").exists() and not (u / "etc/resolv.conf").exists()
    # /etc was copied up to hold the placeholders: it stays (an opaque dir, as in the lower
    # layer), with the lower layer's mtime back, so the layer records no change to it
    assert os.stat(u / "etc").st_mtime_ns == 10**18


# --- mounts -----------------------------------------------------------------------------------

def test_bind_tmpfs_and_readonly_mounts(busybox_layer, tmp_path, upper):
    cache = tmp_path / "cache"
    cache.mkdir()
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "f").write_text("data")
    u, w = upper
    mounts = [Mount(target="/root/.cache", type="cache", source=str(cache)),
              Mount(target="/src", source=str(ro), readonly=True),
              Mount(target="/scratch", type="tmpfs", options=["size=1m"])]
    rc, out, err = sh([busybox_layer], "echo c > /root/.cache/c; cat /src/f; echo; touch /src/x 2>&1; "
                                       "echo t > /scratch/t; grep ' /scratch ' /proc/mounts",
                      upperdir=u, workdir=w, mounts=mounts)
    assert rc == 0, err
    assert out.startswith("data\n") and "Read-only file system" in out and "tmpfs" in out
    assert (cache / "c").read_text() == "c\n"
    assert not (ro / "x").exists()
    assert tree(u) == []


def test_bad_specs_are_clear_errors(busybox_layer):
    with pytest.raises(SandboxError, match="no command"):
        capture([busybox_layer], [])
    with pytest.raises(SandboxError, match="network nosuchnet not found"):
        capture([busybox_layer], ["true"], network="nosuchnet")
    with pytest.raises(SandboxError, match="mount source /nonexistent does not exist"):
        capture([busybox_layer], ["true"], mounts=[Mount(target="/x", source="/nonexistent")])
    with pytest.raises(SandboxError, match="layer dir .* is missing"):
        capture(["/nonexistent-layer"], ["true"])


def test_killing_the_sandbox_leaves_no_process_behind(busybox_layer):
    sb = start(SandboxSpec(lowerdirs=[busybox_layer], argv=["sleep", "3217"]))
    time.sleep(0.3)
    sb.kill()
    assert sb.wait() == 128 + 9
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = [p for p in os.listdir("/proc") if p.isdigit() and _cmdline(p) == "sleep\x003217"]
        if not left:
            break
        time.sleep(0.05)
    assert not left


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().rstrip(b"\0").decode(errors="replace")
    except OSError:
        return ""
