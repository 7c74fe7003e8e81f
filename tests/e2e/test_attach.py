"""`pybuild attach`, detach keys and resizing, as a user drives them: a CLI on a real pty (its
controlling terminal, so a resize sends it SIGWINCH) or on pipes, against containers of
busybox; docker 20.10 (the private dockerd) is the judge of `start -a -i` on a -i container."""
from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest
import test_containers
from busybox_fixture import REPO, run_pybuild
from e2e_helpers import ok, one_error_line
from test_containers import poll, run_d, traces

root = test_containers.root     # the fixture: a busybox store, every container removed after

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="containers need root (run as root)")


class Term:
    """The CLI on a pty of rows x cols that is its controlling terminal."""

    def __init__(self, *args: str, rows: int = 30, cols: int = 100):
        self.master, self.slave = os.openpty()
        self.resize(rows, cols)
        self.p = subprocess.Popen([sys.executable, "-m", "builder", *args], stdin=self.slave,
                                  stdout=self.slave, stderr=self.slave, cwd=REPO,
                                  start_new_session=True, preexec_fn=self._ctty)
        self.out = b""

    @staticmethod
    def _ctty() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    def resize(self, rows: int, cols: int) -> None:
        """As a terminal window does: the kernel sends SIGWINCH to its foreground group."""
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def _read(self, timeout: float) -> None:
        if select.select([self.master], [], [], timeout)[0]:
            try:
                self.out += os.read(self.master, 65536)
            except OSError:
                pass

    def expect(self, text: bytes, timeout: float = 15) -> None:
        end = time.monotonic() + timeout
        while text not in self.out:
            assert time.monotonic() < end, (text, self.out)
            self._read(0.05)
        self.out = self.out[self.out.index(text) + len(text):]

    def type(self, keys: bytes) -> None:
        """Keys typed; only once the CLI showed its container's prompt, so its terminal is raw
        (typed earlier, the line discipline would take ^Q or DEL for itself)."""
        os.write(self.master, keys)

    def wait(self, timeout: float = 15) -> tuple[int, str]:
        """Its exit code (it must exit on its own) and what it showed since the last expect."""
        end = time.monotonic() + timeout
        while self.p.poll() is None:
            assert time.monotonic() < end, self.out
            self._read(0.05)
        self._read(0.1)
        self.close()
        return self.p.returncode, self.out.decode(errors="replace").replace("\r\n", "\n")

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


@pytest.fixture
def terms():
    made: list[Term] = []

    def make(*args, **kw) -> Term:
        made.append(Term(*args, **kw))
        return made[-1]
    yield make
    for t in made:
        t.close()


def status(ref: str) -> str:
    return ok(run_pybuild("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", ref)).stdout.strip()


def cli_processes(word: str) -> list[int]:
    """Processes of `python -m builder ...` whose command line has word (a container's name)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"builder" in argv and word.encode() in argv:
            found.append(int(pid))
    return found


def test_attach_to_a_dit_shell_detach_and_attach_again(root, terms):
    cid = run_d("--name", "box", "--network", "none", "-it", "busybox", "sh")
    t = terms("attach", "box")
    t.expect(b"# ")                     # attach nudges the size: the shell redraws its prompt
    t.type(b"echo $((6*7))\r")
    t.expect(b"42\r\n")
    t.type(b"\x10\x11")                  # ctrl-p ctrl-q: docker 20.10's line, exit 1
    code, out = t.wait()
    assert code == 1 and out.endswith("read escape sequence\n"), out
    assert status("box") == "running 0"

    t = terms("attach", cid[:12], rows=33, cols=90)
    t.expect(b"# ")
    t.type(b"stty size; exit 5\r")
    t.expect(b"33 90\r\n")
    assert t.wait()[0] == 5               # the container's own exit code
    assert status("box") == "exited 5"
    assert cli_processes("box") == [] and cli_processes(cid[:12]) == []


def test_attach_follows_the_window_size(root, terms):
    run_d("--name", "win", "--network", "none", "-it", "busybox", "sh")
    t = terms("attach", "win", rows=30, cols=100)
    t.expect(b"# ")
    t.type(b"stty size\r")
    t.expect(b"30 100\r\n")
    t.resize(41, 123)
    time.sleep(0.3)
    t.type(b"stty size\r")
    t.expect(b"41 123\r\n")
    t.type(b"exit\r")
    assert t.wait()[0] == 0


def test_custom_detach_keys_start_ai_and_exec_it(root, terms):
    run_d("--name", "keys", "--network", "none", "-it", "busybox", "sh")
    t = terms("attach", "--detach-keys", "ctrl-x,x", "keys")
    t.expect(b"# ")
    t.type(b"\x10\x11echo pa''ssed\r")    # the default keys are only keys now
    t.expect(b"passed\r\n")
    t.type(b"\x18x")
    assert t.wait()[0] == 1 and status("keys") == "running 0"

    ok(run_pybuild("create", "--name", "made", "--network", "none", "-it", "busybox", "sh"))
    t = terms("start", "-a", "-i", "--detach-keys", "ctrl-a", "made")
    t.expect(b"# ")
    t.type(b"echo in-$((1+1))\r")
    t.expect(b"in-2\r\n")
    t.type(b"\x01")                      # docker start -a -i: silent, exit 0
    code, out = t.wait()
    assert code == 0 and "escape" not in out, out
    assert status("made") == "running 0"

    t = terms("exec", "-it", "--detach-keys", "DEL", "keys", "sh")
    t.expect(b"# ")
    t.type(b"echo $$ > /exec.pid; echo wr''ote\r")
    t.expect(b"wrote\r\n")
    t.type(b"\x7f")
    code, out = t.wait()
    assert code == 1 and out.endswith("read escape sequence\n"), out
    pid = ok(run_pybuild("exec", "keys", "cat", "/exec.pid")).stdout.strip()
    assert ok(run_pybuild("exec", "keys", "cat", f"/proc/{pid}/comm")).stdout == "sh\n"   # runs on
    ok(run_pybuild("rm", "-f", "keys"))
    poll(lambda: cli_processes("keys") == [])      # the exec's pty reader went with it


def test_bad_detach_keys_are_one_line(root):
    run_d("--name", "kk", "--network", "none", "-i", "busybox", "sh")
    line = "pybuild: error: Invalid detach keys (ctrl-P) provided"
    for args, code in ((("attach", "--detach-keys", "ctrl-P", "kk"), 1),
                       (("start", "-a", "--detach-keys", "ctrl-P", "kk"), 1),
                       (("exec", "-i", "--detach-keys", "ctrl-P", "kk", "sh"), 1),
                       (("run", "--rm", "--detach-keys", "ctrl-P", "busybox", "true"), 125)):
        r = run_pybuild(*args, input="")
        assert (r.returncode, r.stdout, r.stderr) == (code, "", line + "\n")
    assert ok(run_pybuild("run", "--rm", "--detach-keys", "ctrl-@,a,DEL", "busybox", "true"))


def test_attach_without_a_tty_streams_and_forwards_stdin(root):
    cid = run_d("--name", "pipe", "--network", "none", "-i", "busybox", "sh")
    p = subprocess.Popen([sys.executable, "-m", "builder", "attach", "pipe"], cwd=REPO,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        p.stdin.write(b"echo out; echo err >&2\n")
        p.stdin.flush()
        assert p.stdout.readline() == b"out\n"
        assert p.stderr.readline() == b"err\n"        # each stream to its own fd
        p.stdin.close()     # run -d -i (no StdinOnce): the container's stdin stays open
        time.sleep(0.5)
        assert status("pipe") == "running 0"
        p2 = subprocess.run([sys.executable, "-m", "builder", "attach", "pipe"], cwd=REPO,
                            input=b"echo second; exit 4\n", capture_output=True, timeout=30)
        assert (p2.returncode, p2.stdout, p2.stderr) == (4, b"second\n", b"")
        assert p.wait(15) == 4 and p.stdout.read() == b"second\n"   # every client: the same
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    r = ok(run_pybuild("logs", cid))
    assert (r.stdout, r.stderr) == ("out\nsecond\n", "err\n")
    one_error_line(run_pybuild("attach", "pipe"),
                   "You cannot attach to a stopped container, start it first", code=1)


def test_sig_proxy_sends_the_signal_to_the_container(root):
    script = 'trap "echo got TERM; exit 9" TERM; while :; do echo tick; sleep 0.1; done'
    run_d("--name", "sig", "--network", "none", "busybox", "sh", "-c", script)
    p = subprocess.Popen([sys.executable, "-m", "builder", "attach", "sig"], cwd=REPO,
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert p.stdout.readline() == b"tick\n"
        p.send_signal(signal.SIGTERM)
        assert p.wait(15) == 9 and p.stdout.read().endswith(b"got TERM\n")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert status("sig") == "exited 9"

    run_d("--name", "nosig", "--network", "none", "busybox", "sh", "-c", script)
    p = subprocess.Popen([sys.executable, "-m", "builder", "attach", "--sig-proxy=false",
                          "nosig"], cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    assert p.stdout.readline() == b"tick\n"
    p.send_signal(signal.SIGTERM)
    assert p.wait(15) == -signal.SIGTERM and status("nosig") == "running 0"
    p.stdout.close()


def test_a_stalled_client_is_let_go_and_the_log_keeps_everything(root):
    run_d("--name", "much", "--network", "none", "-i", "busybox", "sh", "-c",
          "read go; yes 0123456789abcdef | head -c 4000000; echo end; read never")
    stalled = subprocess.Popen([sys.executable, "-m", "builder", "attach", "--no-stdin", "much"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader = subprocess.Popen([sys.executable, "-m", "builder", "attach", "much"], cwd=REPO,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        time.sleep(1.5)                      # both attached
        stalled.send_signal(signal.SIGSTOP)
        reader.stdin.write(b"go\n")
        reader.stdin.flush()
        got = b""
        while not got.endswith(b"end\n"):
            chunk = reader.stdout.read1(65536)
            assert chunk, got[-100:]
            got += chunk
        assert len(got) == 4000000 + 4
        stalled.send_signal(signal.SIGCONT)
        out, err = stalled.communicate(timeout=15)
        assert stalled.returncode == 1 and len(out) < 4000000
        assert b"fell too far behind" in err and err.count(b"\n") == 1
        r = ok(run_pybuild("logs", "much"))
        assert len(r.stdout) == 4000000 + 4 and status("much") == "running 0"
    finally:
        for p in (stalled, reader):
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
                p.wait()


def test_start_ai_of_a_container_made_with_i_as_docker(root, docker_busybox):
    script = "cat; echo done >&2; exit 3"
    r = subprocess.run([*docker_busybox, "create", "-i", "--network", "none", "busybox", "sh",
                        "-c", script], capture_output=True, text=True, check=True)
    dcid = r.stdout.strip()
    try:
        want = subprocess.run([*docker_busybox, "start", "-a", "-i", dcid], input=b"hello\n",
                              capture_output=True, timeout=60)
    finally:
        subprocess.run([*docker_busybox, "rm", "-f", dcid], capture_output=True)
    cid = ok(run_pybuild("create", "-i", "--network", "none", "busybox", "sh", "-c", script)
             ).stdout.strip()
    got = run_pybuild("start", "-a", "-i", cid, input=b"hello\n")
    assert (got.returncode, got.stdout, got.stderr) == (want.returncode, want.stdout, want.stderr)
    assert (got.returncode, got.stdout, got.stderr) == (3, b"hello\n", b"done\n")
    assert traces(cid) == []


def test_stdin_once_closes_the_pipe_after_a_large_input_without_spinning(root):
    from test_exec_hardening import cpu_seconds, supervisor_pid

    cid = ok(run_pybuild("create", "-i", "--network", "none", "busybox", "sh", "-c",
                         "sleep 0.5; wc -c; exec sleep 30")).stdout.strip()
    p = subprocess.Popen([sys.executable, "-m", "builder", "start", "-a", "-i", cid], cwd=REPO,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        p.stdin.write(b"x" * 300000)       # more than a pipe holds: queued, then its end
        p.stdin.close()
        assert p.stdout.readline().strip() == b"300000"
        sup = supervisor_pid(root, cid)
        t0 = cpu_seconds(sup)
        time.sleep(1)
        assert cpu_seconds(sup) - t0 < 0.2          # the closed pipe is out of its poll
        ok(run_pybuild("kill", cid))
        assert p.wait(15) == 137
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_a_client_announcing_a_huge_frame_is_dropped_and_the_container_runs_on(root):
    """The attach socket's frames are length-prefixed: one that says 2 GiB is not buffered,
    its client is dropped; the supervisor, the log and other clients are not hurt."""
    import socket

    cid = run_d("--network", "none", "busybox", "sh", "-c", "while true; do echo tick; sleep 0.2; done")
    dirfd = os.open(root / "containers" / cid, os.O_RDONLY | os.O_DIRECTORY)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(f"/proc/self/fd/{dirfd}/attach.sock")     # the store path is long
        os.close(dirfd)
        s.sendall(b"h" + (1).to_bytes(4, "big") + b"\x00")
        s.sendall(b"i" + (2 ** 31).to_bytes(4, "big") + b"x" * 1000)
        got = b""
        while True:             # frames may come first; then the supervisor lets go
            data = s.recv(65536)
            if not data:
                break
            got += data
    assert status(cid).split()[0] == "running"
    assert poll(lambda: ok(run_pybuild("logs", cid)).stdout.count("tick") >= 3)
