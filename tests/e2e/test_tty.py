"""TTY and stdin as docker has them, through the CLI: `run -it` and `exec -it` driven through a
real pty (the window size is the caller's), -i -t without a terminal refused as docker does,
`run -d -t` logging its pty as stdout (80x24), `run -d -i` keeping stdin open."""
from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import sys
import termios
import time

import pytest
import test_containers
from busybox_fixture import REPO, run_pybuild
from e2e_helpers import ok
from test_containers import run_d

root = test_containers.root     # the fixture: a busybox store, every container removed after

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="containers need root (run as root)")


def drive(args: list[str], keys: bytes, rows: int = 30, cols: int = 100, timeout: float = 20,
          prompt: bytes | None = b"# ") -> tuple[int, str]:
    """Run the CLI on a pty of rows x cols (stdin, stdout, stderr), type keys once `prompt`
    shows (None: at once, typed ahead); (exit code, everything it showed). The slave stays open
    here, so the master reads until the CLI exits."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    p = subprocess.Popen([sys.executable, "-m", "builder", *args], stdin=slave, stdout=slave,
                         stderr=slave, cwd=REPO, start_new_session=True)
    out, typed = b"", prompt is None
    try:
        if typed:
            os.write(master, keys)
        end = time.monotonic() + timeout
        while p.poll() is None:
            assert time.monotonic() < end, out
            if select.select([master], [], [], 0.1)[0]:
                out += os.read(master, 65536)
            if not typed and prompt in out:
                os.write(master, keys)
                typed = True
        os.set_blocking(master, False)
        while select.select([master], [], [], 0)[0]:
            out += os.read(master, 65536)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
        os.close(slave)
    return p.returncode, out.decode(errors="replace").replace("\r\n", "\n")


def test_run_it_is_a_real_pty_with_the_callers_window_size(root):
    code, out = drive(["run", "-it", "--rm", "busybox", "sh"],
                      b"stty size; tty; echo T=$TERM; exit 5\r")
    assert code == 5, out
    assert "30 100\n" in out and "/dev/pts/0\n" in out and "T=xterm\n" in out


def test_input_device_is_not_a_tty(root):
    for args in (["run", "-i", "-t", "--rm", "busybox", "true"], ["run", "-it", "busybox", "sh"]):
        r = run_pybuild(*args, input="")
        assert (r.returncode, r.stdout, r.stderr) == (
            1, "", "pybuild: error: the input device is not a TTY\n")
    assert not (root / "containers").exists() or not os.listdir(root / "containers")
    cid = run_d("busybox", "sleep", "30")
    r = run_pybuild("exec", "-it", cid, "sh", input="")
    assert (r.returncode, r.stderr) == (1, "pybuild: error: the input device is not a TTY\n")
    r = ok(run_pybuild("run", "--rm", "-t", "busybox", "tty", input=b""))   # -t alone: no terminal needed
    assert r.stdout == b"/dev/pts/0\r\n"          # the pty's own line ends, as docker shows them


def test_run_d_t_logs_the_pty_as_stdout_and_run_d_i_keeps_stdin_open(root):
    cid = run_d("-t", "busybox", "sh", "-c", "stty size; tty; echo T=$TERM; echo err >&2")
    assert ok(run_pybuild("wait", cid)).stdout == "0\n"
    r = ok(run_pybuild("logs", cid, input=b""))
    assert (r.stdout, r.stderr) == (b"24 80\r\n/dev/pts/0\r\nT=xterm\r\nerr\r\n", b"")

    held = run_d("-i", "busybox", "sh", "-c", "read x; echo never")
    closed = run_d("busybox", "sh", "-c", "read x || echo EOF")
    assert ok(run_pybuild("wait", closed)).stdout == "0\n"     # stdin /dev/null: EOF at once
    assert run_pybuild("logs", closed).stdout == "EOF\n"
    time.sleep(0.5)
    status = ok(run_pybuild("inspect", "-f", "{{.State.Status}}", held)).stdout
    assert status == "running\n" and run_pybuild("logs", held).stdout == ""


def test_exec_it_drives_a_shell_in_a_pty(root):
    cid = run_d("busybox", "sleep", "30")
    code, out = drive(["exec", "-it", cid, "sh"],
                      b"stty size; tty; echo in > /made; echo T=$TERM; exit 3\r", rows=40, cols=120)
    assert code == 3, out
    assert "40 120\n" in out and "/dev/pts/0\n" in out and "T=xterm\n" in out
    assert ok(run_pybuild("exec", cid, "cat", "/made")).stdout == "in\n"
    r = ok(run_pybuild("exec", "-t", cid, "sh", "-c", "stty size; tty", input=b""))  # 80x24
    assert r.stdout == b"24 80\r\n/dev/pts/0\r\n"


def test_keys_typed_ahead_are_kept_and_start_ai_attaches_a_created_it_container(root):
    code, out = drive(["run", "-it", "--rm", "busybox", "sh"], b"echo early; exit 4\r", prompt=None)
    assert code == 4 and "\nearly\n" in out, out      # raw mode without flushing (docker's)

    cid = ok(run_pybuild("create", "-it", "busybox", "sh")).stdout.strip()
    code, out = drive(["start", "-a", "-i", cid], b"stty size; tty; exit 6\r", prompt=None,
                      rows=33, cols=90)
    assert code == 6, out
    assert "33 90\n" in out and "/dev/pts/0\n" in out     # the attaching terminal's size
    assert ok(run_pybuild("inspect", "-f", "{{.State.ExitCode}}", cid)).stdout == "6\n"
    r = run_pybuild("start", "-a", "-i", cid, input="")
    assert (r.returncode, r.stderr) == (1, "pybuild: error: the input device is not a TTY\n")
