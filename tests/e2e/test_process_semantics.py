"""Process semantics as docker has them, through the CLI: the command is pid 1 (a build's RUN
too) unless --init, with the kernel's pid-1 signal rules (no handler, no delivery: `stop` falls
back to SIGKILL); docker's exit codes; `-u` with supplementary groups for run and exec (docker's
getUser) and RUN (BuildKit's); an exec'd process inside the container's cgroup, never a zombie
of a pid 1 that reaps nothing."""
from __future__ import annotations

import os
import time

import pytest
import test_containers
from busybox_fixture import run_pybuild
from e2e_helpers import build, ok
from test_containers import poll, run_d

root = test_containers.root     # the fixture: a busybox store, every container removed after

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="containers need root (run as root)")


def test_the_command_is_pid1_unless_init(root):
    assert ok(run_pybuild("run", "--rm", "busybox", "sh", "-c", "echo $$")).stdout == "1\n"
    r = ok(run_pybuild("run", "--rm", "--init", "busybox", "sh", "-c", "echo $$; ps -o pid,args"))
    pid, head, *rows = r.stdout.splitlines()
    assert int(pid) > 1 and head.split() == ["PID", "COMMAND"]
    assert rows[0].split() == ["1", "pybuild-init"], rows      # the init is pid 1, as docker-init


def test_pid1_ignores_signals_it_has_no_handler_for_and_init_does_not(root):
    # docker: `kill -9 $$` from inside cannot kill pid 1; under --init the shell is pid 2
    r = run_pybuild("run", "--rm", "busybox", "sh", "-c", "kill -9 $$; kill $$; echo alive")
    assert (r.returncode, r.stdout) == (0, "alive\n")
    r = run_pybuild("run", "--rm", "--init", "busybox", "sh", "-c", "kill -9 $$; echo alive")
    assert (r.returncode, r.stdout) == (137, "")
    r = run_pybuild("run", "--rm", "--init", "busybox", "sh", "-c", "kill -TERM $$")
    assert r.returncode == 143      # 128+N for a signal


def test_stop_falls_back_to_sigkill_for_pid1_without_a_handler(root):
    plain = run_d("busybox", "sleep", "30")
    trapped = run_d("busybox", "sh", "-c", "trap 'exit 42' TERM; echo ready; "
                                           "while :; do sleep 0.1; done")
    inited = run_d("--init", "busybox", "sleep", "30")
    poll(lambda: run_pybuild("logs", trapped).stdout == "ready\n")
    t0 = time.monotonic()
    ok(run_pybuild("stop", "-t", "1", plain))     # SIGTERM is dropped: killed after 1 s
    assert 1 <= time.monotonic() - t0 < 5
    assert ok(run_pybuild("wait", plain)).stdout == "137\n"
    t0 = time.monotonic()
    ok(run_pybuild("stop", "-t", "5", trapped))   # a handler: the TERM arrives
    ok(run_pybuild("stop", "-t", "5", inited))    # the init forwards it to sleep (pid 2)
    assert time.monotonic() - t0 < 4
    assert ok(run_pybuild("wait", trapped, inited)).stdout == "42\n143\n"


def test_exec_failures_keep_dockers_codes(root):
    r = run_pybuild("run", "--rm", "busybox", "nosuch")
    assert r.returncode == 127 and r.stderr == (
        'pybuild: error: exec: "nosuch": executable file not found in $PATH\n')
    r = run_pybuild("run", "--rm", "busybox", "/etc/passwd")
    assert r.returncode == 126 and "permission denied" in r.stderr
    r = run_pybuild("run", "--rm", "-u", "bob", "busybox", "true")
    assert r.returncode == 125 and r.stderr == (
        "pybuild: error: unable to find user bob: no matching entries in passwd file\n")


def test_supplementary_groups_for_run_build_and_exec(root, tmp_path):
    _, _ = build(run_pybuild, tmp_path, "FROM busybox\n"
                 "RUN echo 'sudo:x:27:app' >> /etc/group && echo $$ > /run-pid\n"
                 "USER app\nRUN id > /tmp/id-in-run\n", tag="grp")
    # busybox's id lists getgroups() in the kernel's (sorted) order; GNU id puts the gid first.
    # RUN has BuildKit's groups (memberships only), a container docker's (the gid first)
    r = ok(run_pybuild("run", "--rm", "grp", "sh", "-c", "cat /run-pid /tmp/id-in-run; id"))
    assert r.stdout.splitlines() == [
        "1",                                                     # RUN is pid 1, as BuildKit's
        "uid=1000(app) gid=1000(app) groups=27(sudo)",
        "uid=1000(app) gid=1000(app) groups=27(sudo),1000(app)"]
    assert ok(run_pybuild("run", "--rm", "-u", "1000:1000", "grp", "id")).stdout == (
        "uid=1000(app) gid=1000(app) groups=1000(app)\n")       # an explicit group: just it
    assert ok(run_pybuild("run", "--rm", "-u", "root", "grp", "id")).stdout == (
        "uid=0(root) gid=0(root) groups=0(root)\n")
    cid = run_d("grp", "sleep", "30")
    assert ok(run_pybuild("exec", cid, "id")).stdout == (
        "uid=1000(app) gid=1000(app) groups=27(sudo),1000(app)\n")
    assert ok(run_pybuild("exec", "-u", "1000:27", cid, "id")).stdout == (
        "uid=1000(app) gid=27(sudo) groups=27(sudo)\n")
    ok(run_pybuild("rm", "-f", cid))


def test_exec_joins_the_containers_cgroup(root):
    cid = run_d("--memory", "64m", "--pids-limit", "50", "busybox", "sleep", "30")
    pid1 = int(ok(run_pybuild("inspect", "-f", "{{.State.Pid}}", cid)).stdout)
    with open(f"/proc/{pid1}/cgroup") as f:
        want = sorted(ln for ln in f.read().splitlines() if "/pybuild/" in ln)
    assert want
    got = ok(run_pybuild("exec", cid, "cat", "/proc/self/cgroup")).stdout.splitlines()
    assert sorted(ln for ln in got if "/pybuild/" in ln) == want
    ok(run_pybuild("exec", "-d", cid, "sleep", "31"))
    poll(lambda: "sleep 31" in run_pybuild("top", cid).stdout)
    ok(run_pybuild("rm", "-f", cid))


def test_a_detached_exec_is_not_left_a_zombie_of_pid1(root):
    # pid 1 is `sleep`, which reaps nothing: the exec'd process's parent stays outside (ppid 0)
    cid = run_d("busybox", "sleep", "30")
    ok(run_pybuild("exec", "-d", cid, "sh", "-c", "echo done > /bg"))
    poll(lambda: run_pybuild("exec", cid, "cat", "/bg").stdout == "done\n")
    r = ok(run_pybuild("exec", cid, "ps", "-o", "ppid,stat,args"))
    rows = [ln.split(None, 2) for ln in r.stdout.splitlines()[1:]]
    assert all(stat[0] != "Z" for _, stat, _ in rows), r.stdout
    assert [ppid for ppid, _, args in rows if args == "sleep 30"] == ["0"]
    ok(run_pybuild("rm", "-f", cid))


def test_run_d_waits_for_the_command_and_reports_a_set_up_failure(root):
    # docker run -d returns once the command runs, and fails itself when it cannot be set up
    from e2e_helpers import one_error_line

    r = run_pybuild("run", "-d", "--name", "nobody", "-u", "nosuch", "busybox", "true")
    assert one_error_line(r, code=125) == ("pybuild: error: unable to find user nosuch: no "
                                           "matching entries in passwd file")
    r = ok(run_pybuild("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "nobody"))
    assert r.stdout == "exited 125\n"
    r = ok(run_pybuild("create", "--name", "later", "-w", "/etc/passwd", "busybox", "true"))
    r = run_pybuild("start", "later")
    assert r.returncode != 0 and "/etc/passwd" in r.stderr and "Traceback" not in r.stderr
    # when it has returned, the command runs already: its pid 1 is the command itself
    cid = run_d("busybox", "sleep", "30")
    pid = ok(run_pybuild("inspect", "-f", "{{.State.Pid}}", cid)).stdout.strip()
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[0] == b"sleep"


@pytest.mark.parametrize("detached", [False, True])
def test_the_callers_umask_never_reaches_the_container(root, tmp_path, detached):
    """runc's umask 0022 for the command and a 0755 / , whatever pybuild's caller has (under
    077 a non-root USER could not exec /bin/sh, and files came out 0600)."""
    import subprocess
    import sys

    from busybox_fixture import REPO

    probe = "umask; touch /tmp/f; stat -c %a /tmp/f /"

    def pb(*args):
        return subprocess.run([sys.executable, "-m", "builder", *args], cwd=REPO, text=True,
                              capture_output=True, preexec_fn=lambda: os.umask(0o077), timeout=60)
    if detached:
        r = pb("run", "-d", "--name", "umask077", "--network", "none", "busybox", "sh", "-c", probe)
        assert r.returncode == 0, r.stderr
        assert ok(run_pybuild("wait", "umask077")).stdout.strip() == "0"
        out = ok(run_pybuild("logs", "umask077")).stdout
        ok(run_pybuild("rm", "umask077"))
    else:
        r = pb("run", "--rm", "--network", "none", "-u", "0", "busybox", "sh", "-c", probe)
        assert r.returncode == 0, r.stderr
        out = r.stdout
    lines = out.split()
    assert lines[:3] == ["0022", "644", "755"], out
    r = pb("run", "--rm", "--network", "none", "-u", "1000", "busybox", "sh", "-c", "echo ok")
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr
