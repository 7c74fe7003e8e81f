"""`stats` as a user reads it on busybox:latest: docker's columns from each container's own
cgroup (every container gets one, limits or not, gone when it ends), a busy loop's CPU %, a
memory limit and what is in use against it, -a's zero rows, --format, --no-trunc, streaming
until Ctrl-C."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import test_containers
from busybox_fixture import REPO, run_pybuild
from e2e_helpers import ok, one_error_line
from test_containers import poll, run_d

root = test_containers.root     # a busybox store; every container removed after

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="containers need root (run as root)")

HEADER = ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O",
          "PIDS"]


def rows(text: str) -> dict[str, list[str]]:
    lines = text.splitlines()
    assert re.split(r"\s{3,}", lines[0]) == HEADER, lines[0]
    out = {}
    for ln in lines[1:]:
        cells = re.split(r"\s{3,}", ln.strip())
        out[cells[1]] = cells
    return out


def pid1(name: str) -> int:
    return int(ok(run_pybuild("inspect", "-f", "{{.State.Pid}}", name)).stdout)


def test_every_container_has_a_cgroup_that_goes_with_it(root):
    run_d("--name", "plain", "busybox", "sleep", "60")
    with open(f"/proc/{pid1('plain')}/cgroup") as f:
        lines = [ln for ln in f.read().splitlines() if "/pybuild/ctr-" in ln]
    assert lines, "no cgroup of its own"
    mem = [ln.split(":", 2)[2] for ln in lines if ":memory:" in ln or ln.startswith("0::")]
    ok(run_pybuild("stop", "-t", "0", "plain"))
    for path in mem:
        for base in ("/sys/fs/cgroup/memory", "/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
            assert not os.path.exists(base + path)


def test_stats_no_stream_columns_and_figures(root):
    hog = run_d("--name", "hog", "busybox", "sh", "-c", "while :; do :; done")
    run_d("--name", "mem", "--network", "host", "-m", "64m", "busybox", "sh", "-c",
          "dd if=/dev/zero of=/dev/shm/fill bs=1M count=20 2>/dev/null; sleep 60")
    run_d("--name", "gone", "busybox", "true")
    poll(lambda: ok(run_pybuild("inspect", "-f", "{{.State.Status}}", "gone")).stdout == "exited\n")
    poll(lambda: run_pybuild("exec", "mem", "test", "-s", "/dev/shm/fill").returncode == 0
         and run_pybuild("exec", "mem", "sh", "-c", "[ $(stat -c %s /dev/shm/fill) = 20971520 ]")
         .returncode == 0)
    t0 = time.monotonic()
    r = ok(run_pybuild("stats", "--no-stream"))
    took = time.monotonic() - t0
    got = rows(r.stdout)
    assert set(got) == {"hog", "mem"}                       # running ones only
    h, m = got["hog"], got["mem"]
    assert h[0] == hog[:12]
    assert float(h[2].rstrip("%")) > 5.0, h                 # a busy loop (on a loaded host)
    usage, limit = m[3].split(" / ")
    assert limit == "64MiB", m
    assert usage.endswith("MiB") and 20 <= float(usage[:-3]) < 64, m
    assert 30.0 < float(m[4].rstrip("%")) < 100.0, m
    assert m[5] == "0B / 0B"                                # --network host: no network of its own
    assert int(h[7]) in (1, 2) and int(m[7]) in (1, 2)      # the command (+ pid 1 before it)
    assert took < 5, took

    got = rows(ok(run_pybuild("stats", "--no-stream", "-a")).stdout)
    assert got["gone"][2:] == ["0.00%", "0B / 0B", "0.00%", "0B / 0B", "0B / 0B", "0"]
    r = ok(run_pybuild("stats", "--no-stream", "--no-trunc", "--format", "{{json .}}", "hog"))
    doc = json.loads(r.stdout)
    assert doc["ID"] == hog and doc["Name"] == "hog" and doc["Container"] == "hog"
    assert set(doc) == {"Container", "ID", "Name", "CPUPerc", "MemUsage", "MemPerc", "NetIO",
                        "BlockIO", "PIDs"}
    r = ok(run_pybuild("stats", "--no-stream", "--format", "table {{.Name}}\t{{.PIDs}}", "mem"))
    assert [re.split(r"\s{3,}", ln) for ln in r.stdout.splitlines()] == [["NAME", "PIDS"],
                                                                          ["mem", m[7]]]
    one_error_line(run_pybuild("stats", "--no-stream", "nope"), "No such container: nope", code=1)
    one_error_line(run_pybuild("stats", "--no-stream", "--format", "{{.Nope}}", "mem"), code=1)


def test_stats_streams_until_ctrl_c(root):
    run_d("--name", "s1", "busybox", "sleep", "60")
    p = subprocess.Popen([sys.executable, "-m", "builder", "stats", "s1"], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(2.8)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=10)
    assert p.returncode == 0, err
    frames = out.decode().split("\033[2J\033[H")[1:]
    assert len(frames) >= 2, out
    assert all("s1" in f and "CONTAINER ID" in f for f in frames)
