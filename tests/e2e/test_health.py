"""HEALTHCHECK as a user meets it, on busybox:latest: the supervisor probes a detached container
with the image's Healthcheck or run's --health-* flags; `ps` shows "(health: starting)",
"(healthy)", "(unhealthy)", `ps --filter health=` selects on it, `inspect` has State.Health with
docker's last-5 log; a probe over its timeout is killed; the idle supervisor stays small."""
from __future__ import annotations

import json
import os
import re

import pytest
import test_containers
from busybox_fixture import run_pybuild
from e2e_helpers import cmdline, ok, one_error_line
from test_containers import poll, ps_rows, run_d, state

root = test_containers.root     # the fixture: a busybox store, every container removed after

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="containers need root (run as root)")


def health(ref: str) -> dict | None:
    [doc] = json.loads(ok(run_pybuild("inspect", ref)).stdout)
    return doc["State"].get("Health")


def container_pids(ref: str) -> list[int]:
    from builder.commands.containers import namespace_pids

    [doc] = json.loads(ok(run_pybuild("inspect", ref)).stdout)
    return namespace_pids(doc["State"]["Pid"])


def status_of(name: str) -> str:
    return next((r[4] for r in ps_rows("-a") if r[-1] == name), "")


def test_starting_then_healthy_and_the_filter(root):
    run_d("--name", "web", "--health-cmd", "cat /ready", "--health-interval", "150ms",
          "busybox", "sh", "-c", "sleep 0.8; echo yes > /ready; exec sleep 30")
    assert re.fullmatch(r"Up .* \(health: starting\)", status_of("web"))
    assert health("web")["Status"] == "starting"
    poll(lambda: status_of("web").endswith("(healthy)"))
    h = health("web")
    assert h["Status"] == "healthy" and h["FailingStreak"] == 0
    assert h["Log"][-1]["ExitCode"] == 0 and h["Log"][-1]["Output"] == "yes\n"
    assert h["Log"][-1]["Start"] <= h["Log"][-1]["End"]
    poll(lambda: len(health("web")["Log"]) == 5 and health("web")["Log"][0]["ExitCode"] == 0)
    other = run_d("busybox", "sleep", "30")
    assert ok(run_pybuild("ps", "-q", "--filter", "health=healthy")).stdout.split() == [
        ok(run_pybuild("inspect", "-f", "{{.Id}}", "web")).stdout.strip()[:12]]
    assert ok(run_pybuild("ps", "-q", "--filter", "health=none")).stdout.split() == [other[:12]]
    one_error_line(run_pybuild("ps", "--filter", "health=sick"), "health", code=1)


def test_failures_make_it_unhealthy_after_retries(root):
    run_d("--name", "sick", "--health-cmd", "echo nope; exit 1", "--health-interval", "100ms",
          "--health-retries", "2", "busybox", "sleep", "30")
    poll(lambda: status_of("sick").endswith("(unhealthy)"))
    h = health("sick")
    assert h["FailingStreak"] >= 2 and h["Log"][-1] | {"Start": 0, "End": 0} == {
        "Start": 0, "End": 0, "ExitCode": 1, "Output": "nope\n"}
    assert ok(run_pybuild("ps", "-q", "--filter", "health=unhealthy")).stdout.strip() != ""
    ok(run_pybuild("kill", "sick"))
    ok(run_pybuild("wait", "sick"))
    assert health("sick")["Status"] == "unhealthy"        # docker's mark on a stopped one
    assert re.fullmatch(r"Exited \(137\) .* ago", status_of("sick"))


def test_start_period_keeps_failures_from_counting_and_start_interval(root):
    # inside the start period probes come every --health-start-interval, not every hour
    run_d("--name", "slow", "--health-cmd", "exit 1", "--health-interval", "1h",
          "--health-start-interval", "100ms", "--health-retries", "1",
          "--health-start-period", "30s", "busybox", "sleep", "30")
    poll(lambda: len(health("slow")["Log"]) >= 3)
    h = health("slow")
    assert (h["Status"], h["FailingStreak"]) == ("starting", 0)


def test_a_probe_over_its_timeout_is_killed(root):
    cid = run_d("--name", "hang", "--health-cmd", "sleep 7", "--health-timeout", "200ms",
                "--health-interval", "100ms", "busybox", "sleep", "30")
    poll(lambda: (health("hang") or {}).get("Log"))
    entry = health("hang")["Log"][0]
    assert (entry["ExitCode"], entry["Output"]) == (-1, "Health check exceeded timeout (200ms)")
    # the killed probe's `sleep 7` is not left in the container
    pids = container_pids(cid)
    cmds = [cmdline(p) for p in pids]
    assert cmds.count(b"sleep\x007\x00") <= 1, cmds       # at most the probe running now


def test_image_healthcheck_and_no_healthcheck(root, tmp_path):
    (tmp_path / "Dockerfile").write_text(
        "FROM busybox\nHEALTHCHECK --interval=100ms --retries=5 CMD [\"true\"]\n")
    ok(run_pybuild("build", "-q", "-t", "hc-image", str(tmp_path)))
    run_d("--name", "fromimage", "hc-image", "sleep", "30")
    [doc] = json.loads(ok(run_pybuild("inspect", "fromimage")).stdout)
    assert doc["Config"]["Healthcheck"] == {"Test": ["CMD", "true"], "Interval": 100_000_000,
                                            "Retries": 5}
    poll(lambda: status_of("fromimage").endswith("(healthy)"))
    run_d("--name", "flagwins", "--health-cmd", "exit 1", "--health-retries", "1", "hc-image",
          "sleep", "30")
    poll(lambda: status_of("flagwins").endswith("(unhealthy)"))     # the image's interval kept
    run_d("--name", "nocheck", "--no-healthcheck", "hc-image", "sleep", "30")
    assert re.fullmatch(r"Up [^(]*", status_of("nocheck")) and health("nocheck") is None


def test_idle_supervisor_with_a_healthcheck_is_small(root):
    cid = run_d("--health-cmd", "true", "--health-interval", "100ms", "busybox", "sleep", "30")
    poll(lambda: len((health(cid) or {}).get("Log") or []) >= 2)
    sup = int(state(root, cid)["supervisor"].split(".")[0])
    with open(f"/proc/{sup}/status") as f:
        rss_kb = int(next(ln for ln in f if ln.startswith("VmRSS:")).split()[1])
    assert rss_kb < 15 * 1024, rss_kb


_BAD_FLAGS = [
    (["--no-healthcheck", "--health-retries", "2"], "--no-healthcheck conflicts with --health-* "
                                                    "options"),
    (["--health-interval", "5x"], 'invalid argument "5x" for "--health-interval" flag: time: '
                                  'unknown unit "x" in duration "5x"'),
    (["--health-timeout=-1s"], "--health-timeout cannot be negative"),
    (["--health-interval", "10us"], "Interval in Healthcheck cannot be less than 1ms"),
    (["--health-retries", "-1"], "--health-retries cannot be negative"),
]


def test_bad_health_flags(root):
    for flags, message in _BAD_FLAGS:
        r = one_error_line(run_pybuild("run", "-d", *flags, "busybox", "true"), code=125)
        assert r == f"pybuild: error: {message}"
