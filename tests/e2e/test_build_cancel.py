"""^C during a build: the running RUN is killed at once and shows CANCELED (plain, json),
no later step starts, nothing is left running, mounted or half-written in the store, and the
next build reuses every step that finished."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from busybox_fixture import REPO

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (run as root)")

DOCKERFILE = "FROM busybox\nRUN echo done > /first\nRUN echo started; sleep 60\nRUN echo never\n"


def interrupted(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    """The build, ^C'd (SIGINT to its process group, as a terminal does) once the sleep runs."""
    (tmp_path / "Dockerfile").write_text(DOCKERFILE)
    def as_a_terminal_starts_it() -> None:
        # a job started in the background of a non-interactive shell inherits SIGINT ignored,
        # and Python then never raises KeyboardInterrupt: a terminal's command has the default
        os.setsid()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    p = subprocess.Popen([sys.executable, "-m", "builder", "build", *args, str(tmp_path)], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=as_a_terminal_starts_it)
    seen = []
    for line in p.stderr:
        seen.append(line)
        if '"line": "started"' in line or (" started" in line and "sleep" not in line):
            break               # the sleep's step printed its first line: it is running
    t = time.monotonic()
    os.killpg(p.pid, signal.SIGINT)
    out, err = p.communicate(timeout=30)
    return subprocess.CompletedProcess(p.args, p.returncode, out, "".join(seen) + err), \
        time.monotonic() - t


def sleeps() -> list[str]:
    r = subprocess.run(["pgrep", "-f", "sleep 60"], capture_output=True, text=True)
    return r.stdout.split()


def test_ctrl_c_cancels_the_running_step_and_the_next_build_reuses_the_rest(busybox_root, pybuild,
                                                                            tmp_path):
    r, took = interrupted(tmp_path, "--progress", "plain")
    assert r.returncode == 130, r.stderr
    assert took < 15, took          # the 60 s sleep did not run out
    lines = r.stderr.splitlines()
    assert any(ln.endswith(" CANCELED") for ln in lines), r.stderr
    assert "echo never" not in r.stderr and "pybuild: interrupted" in lines[-1]
    assert sleeps() == []
    with open("/proc/self/mounts") as f:
        assert str(busybox_root) not in f.read()
    assert os.listdir(busybox_root / "tmp") == []
    again, _ = interrupted(tmp_path, "--progress", "plain")     # the first RUN is CACHED now
    out = again.stderr
    first = out[out.index("RUN echo done > /first"):]
    assert first.splitlines()[1].endswith(" CACHED"), out
    assert again.returncode == 130 and sleeps() == []


def test_json_progress_says_canceled(busybox_root, tmp_path):
    r, _ = interrupted(tmp_path, "--progress", "json")
    events = [json.loads(ln) for ln in r.stderr.splitlines() if ln.startswith("{")]
    assert any(e["status"] == "canceled" and "sleep 60" in e["name"] for e in events), events
    assert r.returncode == 130 and sleeps() == []
