"""`run -d --restart` as a user drives it, on busybox:latest: the supervisor runs a crashing
command again in the same container (same upper dir, same log) with docker's backoff, counts
the restarts, gives up after on-failure's N, and never restarts what `stop` or `kill` ended;
and run's other lifecycle flags: --stop-signal, --stop-timeout, --label[-file], --read-only,
--log-opt max-size/max-file."""
from __future__ import annotations

import json
import os
import re
import time

import pytest
import test_containers
from busybox_fixture import run_pybuild
from e2e_helpers import ok, one_error_line
from test_containers import poll, ps_rows, run_d, state

root = test_containers.root     # the fixture: a busybox store, every container removed after

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="containers need root (run as root)")


def inspect(ref: str) -> dict:
    [doc] = json.loads(ok(run_pybuild("inspect", ref)).stdout)
    return doc


def test_on_failure_3_runs_four_times_in_the_same_container(root):
    from runtime.containers.state import parse_time

    # each run appends to a file of the container's upper dir and prints how many runs it saw
    cid = run_d("--name", "crash", "--restart", "on-failure:3", "busybox", "sh", "-c",
                "echo x >> /runs; wc -l < /runs; exit 3")
    assert ok(run_pybuild("wait", "crash")).stdout == "3\n"
    assert ok(run_pybuild("logs", "crash")).stdout.split() == ["1", "2", "3", "4"]
    doc = inspect("crash")
    assert doc["RestartCount"] == 3 and doc["State"]["ExitCode"] == 3
    assert doc["State"]["Status"] == "exited" and not doc["State"]["Restarting"]
    assert doc["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    # docker's backoff: 100 + 200 + 400 ms between the four runs
    st = state(root, cid)
    took = parse_time(st["finished"]) - parse_time(doc["Created"])
    assert took >= 0.7, took
    [row] = ps_rows("-a")
    assert re.fullmatch(r"Exited \(3\) .* ago", row[4]), row


def test_on_failure_does_not_restart_a_success_and_no_is_the_default(root):
    ok_id = run_d("--restart", "on-failure", "busybox", "sh", "-c", "echo once")
    plain = run_d("busybox", "sh", "-c", "echo once; exit 1")
    for cid in (ok_id, plain):
        ok(run_pybuild("wait", cid))
        assert ok(run_pybuild("logs", cid)).stdout == "once\n"
        assert inspect(cid)["RestartCount"] == 0
    assert inspect(plain)["HostConfig"]["RestartPolicy"] == {"Name": "no", "MaximumRetryCount": 0}


def test_always_shows_restarting_and_stop_ends_it_for_good(root):
    run_d("--name", "flappy", "--restart", "always", "busybox", "sh", "-c", "exit 1")
    # the backoff doubles (0.1, 0.2, 0.4, 0.8 s...): ps soon catches it waiting
    # (ps's "(1)" is the exit code, docker's; RestartCount is 0 until the first restart)
    poll(lambda: any(re.fullmatch(r"Restarting \(1\) .* ago", r[4]) for r in ps_rows()))
    doc = poll(lambda: (d := inspect("flappy"))["State"]["Status"] == "restarting"
               and d["RestartCount"] >= 1 and d)
    assert doc["State"]["Restarting"] and doc["State"]["ExitCode"] == 1
    assert doc["State"]["Running"] and doc["State"]["Pid"] == 0       # docker's spelling of it
    assert ok(run_pybuild("stop", "flappy")).stdout == "flappy\n"
    count = inspect("flappy")["RestartCount"]
    assert count >= 1
    time.sleep(1.0)
    doc = inspect("flappy")
    assert (doc["State"]["Status"], doc["RestartCount"]) == ("exited", count)
    assert ps_rows() == []


def test_stop_and_kill_of_a_running_always_container_are_final_and_start_resets(root):
    run_d("--name", "svc", "--restart", "always", "busybox", "sh", "-c", "echo up; exec sleep 30")
    poll(lambda: inspect("svc")["State"]["Pid"])
    ok(run_pybuild("stop", "-t", "1", "svc"))
    time.sleep(0.5)
    assert inspect("svc")["State"]["Status"] == "exited"
    assert ok(run_pybuild("start", "svc")).stdout == "svc\n"        # the stop is forgotten
    poll(lambda: inspect("svc")["State"]["Pid"])
    ok(run_pybuild("kill", "svc"))
    ok(run_pybuild("wait", "svc"))
    time.sleep(0.5)
    doc = inspect("svc")
    assert (doc["State"]["Status"], doc["State"]["ExitCode"], doc["RestartCount"]) == ("exited", 137, 0)
    assert ok(run_pybuild("logs", "svc")).stdout == "up\nup\n"


def test_unless_stopped_restarts_an_exit_of_its_own(root):
    run_d("--name", "us", "--restart", "unless-stopped", "busybox", "sh", "-c", "echo r; sleep 0.2")
    poll(lambda: inspect("us")["RestartCount"] >= 2)
    ok(run_pybuild("stop", "us"))
    assert inspect("us")["State"]["Status"] == "exited"


_BAD_FLAGS = [
    (["--restart", "bogus"], "invalid restart policy: unknown policy 'bogus'; use one of 'no', "
                             "'always', 'on-failure', or 'unless-stopped'"),
    (["--restart", "on-failure:x"], "invalid restart policy format: maximum retry count must be "
                                    "an integer"),
    (["--restart", "on-failure:-1"], "invalid restart policy: maximum retry count cannot be "
                                     "negative"),
    (["--restart", "always:2"], "invalid restart policy: maximum retry count can only be used "
                                "with 'on-failure'"),
    (["--restart", ":3"], "invalid restart policy format: no policy provided before colon"),
    (["--rm", "--restart", "always"], "Conflicting options: --restart and --rm"),
]


def test_bad_restart_flags_are_docker_errors(root):
    for flags, message in _BAD_FLAGS:
        r = one_error_line(run_pybuild("run", "-d", *flags, "busybox", "true"), code=125)
        assert r == f"pybuild: error: {message}"
        assert ok(run_pybuild("ps", "-aq")).stdout == ""


def test_help_says_no_restart_after_a_reboot(root):
    text = " ".join(ok(run_pybuild("run", "--help")).stdout.split())
    assert "nothing brings containers back after a reboot" in text


# ---- the other lifecycle flags of run: --stop-signal, --stop-timeout, --label, --read-only ----

def test_stop_timeout_is_stops_default_and_stop_signal_is_used(root):
    run_d("--name", "stubborn", "--stop-timeout", "1", "busybox", "sh", "-c",
          "trap '' TERM; echo ready; while :; do sleep 0.1; done")
    poll(lambda: ok(run_pybuild("logs", "stubborn")).stdout == "ready\n")
    t = time.monotonic()
    ok(run_pybuild("stop", "stubborn"))             # no -t: its own 1 s, not docker's 10
    took = time.monotonic() - t
    assert 0.9 <= took < 5, took
    doc = inspect("stubborn")
    assert doc["State"]["ExitCode"] == 137 and doc["Config"]["StopTimeout"] == 1

    # the command is pid 1, which the kernel spares a signal it has no handler for: the shell's
    # trap shows which signal came (docker run --stop-signal behaves the same)
    run_d("--name", "usr1", "--stop-signal", "SIGUSR1", "busybox", "sh", "-c",
          "trap 'echo got usr1; exit 42' USR1; echo ready; while :; do sleep 0.1; done")
    poll(lambda: ok(run_pybuild("logs", "usr1")).stdout == "ready\n")
    ok(run_pybuild("stop", "usr1"))
    doc = inspect("usr1")
    assert doc["State"]["ExitCode"] == 42 and doc["Config"]["StopSignal"] == "SIGUSR1"
    assert ok(run_pybuild("logs", "usr1")).stdout == "ready\ngot usr1\n"
    r = one_error_line(run_pybuild("run", "-d", "--stop-signal", "FOO", "busybox", "true"), code=125)
    assert r == "pybuild: error: Invalid signal: FOO"


def test_real_time_stop_signals_and_a_bad_signal_leaves_no_stop_request(root):
    # SIGRTMIN is 34 (glibc and docker's signal map): RTMIN+3 is 37, the number the trap knows
    script = "trap 'echo got 37; exit 7' 37; echo ready; while :; do sleep 0.1; done"
    run_d("--name", "rt", "--stop-signal", "SIGRTMIN+3", "busybox", "sh", "-c", script)
    poll(lambda: ok(run_pybuild("logs", "rt")).stdout == "ready\n")
    assert ok(run_pybuild("stop", "-t", "5", "rt")).stdout == "rt\n"
    doc = inspect("rt")
    assert doc["State"]["ExitCode"] == 7 and doc["Config"]["StopSignal"] == "SIGRTMIN+3"

    run_d("--name", "rtkill", "--restart", "always", "busybox", "sh", "-c",
          "trap 'exit 9' USR1; trap 'exit 8' 63; echo ready; while :; do sleep 0.1; done")
    poll(lambda: ok(run_pybuild("logs", "rtkill")).stdout == "ready\n")
    for cmd in (["stop", "-s", "FOO"], ["restart", "-s", "FOO"], ["kill", "-s", "FOO"]):
        r = one_error_line(run_pybuild(*cmd, "rtkill"), code=1)
        assert r == "pybuild: error: Invalid signal: FOO"
    assert inspect("rtkill")["State"]["Status"] == "running"
    # no stop request was left: an exit of its own (USR1 is not its stop signal) restarts it
    assert ok(run_pybuild("kill", "-s", "USR1", "rtkill")).stdout == "rtkill\n"
    poll(lambda: (d := inspect("rtkill"))["RestartCount"] == 1 and d["State"]["Pid"])
    poll(lambda: ok(run_pybuild("logs", "rtkill")).stdout == "ready\nready\n")
    assert ok(run_pybuild("kill", "-s", "SIGRTMAX-1", "rtkill")).stdout == "rtkill\n"
    # pid 1 gets only signals it handles: a second restart means the trap of 63 ran
    poll(lambda: inspect("rtkill")["RestartCount"] == 2)


def test_labels_from_flags_and_files_over_the_images(root, tmp_path):
    f = tmp_path / "labels"
    f.write_text("# a comment\n\ntier=from-file\nowner=file\n")
    cid = run_d("-l", "owner=flag", "--label", "bare", "--label-file", str(f), "busybox", "sleep", "30")
    labels = inspect(cid)["Config"]["Labels"]
    assert {k: labels[k] for k in ("tier", "owner", "bare")} == {"tier": "from-file",
                                                                 "owner": "flag", "bare": ""}
    assert "org.pybuild.fixture.busybox.sha256" in labels          # the image's, kept
    assert ok(run_pybuild("ps", "-q", "--filter", "label=owner=flag")).stdout.split() == [cid[:12]]
    one_error_line(run_pybuild("run", "-d", "--label-file", str(tmp_path / "nope"), "busybox",
                               "true"), "no such file or directory", code=125)


def test_read_only_rootfs_keeps_dev_proc_tmpfs_and_volumes_writable(root):
    script = ("touch /x; touch /dev/shm/a && echo shm; touch /scratch/a && echo tmpfs; "
              "touch /data/a && echo volume; echo x > /dev/null && echo dev")
    r = run_pybuild("run", "--rm", "--read-only", "--tmpfs", "/scratch", "-v", "rovol:/data",
                    "busybox", "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "touch: /x: Read-only file system\n"
    assert r.stdout == "shm\ntmpfs\nvolume\ndev\n"
    cid = run_d("--read-only", "busybox", "sh", "-c", "touch /y; sleep 30")
    poll(lambda: "Read-only file system" in run_pybuild("logs", cid).stderr)
    assert inspect(cid)["HostConfig"]["ReadonlyRootfs"] is True
    ok(run_pybuild("volume", "rm", "-f", "rovol"))


def test_log_opt_rotates_the_json_file_log(root):
    cid = run_d("--log-opt", "max-size=1k", "--log-opt", "max-file=3", "busybox", "sh", "-c",
                "i=0; while [ $i -lt 200 ]; do echo line $i; i=$((i+1)); done")
    assert ok(run_pybuild("wait", cid)).stdout == "0\n"
    log = root / "containers" / cid / f"{cid}-json.log"
    sizes = [os.path.getsize(f"{log}{s}") for s in ("", ".1", ".2")]
    assert not os.path.exists(f"{log}.3") and all(0 < n <= 1024 + 64 for n in sizes), sizes
    shown = ok(run_pybuild("logs", cid)).stdout.splitlines()
    assert shown[-1] == "line 199" and shown == [f"line {i}" for i in range(200 - len(shown), 200)]
    assert 20 < len(shown) < 200
    assert inspect(cid)["HostConfig"]["LogConfig"] == {
        "Type": "json-file", "Config": {"max-size": "1k", "max-file": "3"}}
    for opt, message in (("foo=1", "unknown log opt 'foo' for json-file log driver"),
                         ("max-size=x", "invalid size: 'x'"),
                         ("max-file=0", "max-file cannot be less than 1")):
        r = one_error_line(run_pybuild("run", "-d", "--log-opt", opt, "busybox", "true"), code=125)
        assert r == f"pybuild: error: {message}"


def test_a_foreground_run_with_a_policy_exits_with_the_first_code_and_restarts_on(root):
    """docker run --restart without -d: attached to the first run (its output, its code), the
    container goes on under its supervisor; --rm conflicts, as docker says."""
    r = run_pybuild("run", "--name", "fg", "--network", "none", "--restart", "on-failure:2",
                    "busybox", "sh", "-c", "echo run; exit 3", timeout=30)
    assert r.returncode == 3 and r.stdout == "run\n", r.stderr
    assert poll(lambda: run_pybuild("inspect", "-f", "{{.State.Status}} {{.RestartCount}}",
                                    "fg").stdout == "exited 2\n", 15)
    assert ok(run_pybuild("logs", "fg")).stdout == "run\n" * 3
    one_error_line(run_pybuild("run", "--rm", "--restart", "always", "busybox", "true"),
                   "Conflicting options: --restart and --rm", code=125)
