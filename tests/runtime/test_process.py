"""runtime.process: the sandbox's tree started by a caller that is not in the foreground (a
container's supervisor): no signal handler of the caller changes, and with tty the caller gets
the pty master to do with as it likes."""
from __future__ import annotations

import os
import signal

from rootfs_helpers import requires_root

from runtime import process
from runtime.spec import SandboxSpec

pytestmark = requires_root


def test_start_wait_leave_the_callers_signal_handlers_alone(busybox_layer):
    before = {s: signal.getsignal(s) for s in process.FORWARDED_SIGNALS}
    tree = process.start(SandboxSpec(lowerdirs=[busybox_layer], argv=["sh", "-c", "exit 5"]))
    assert {s: signal.getsignal(s) for s in process.FORWARDED_SIGNALS} == before
    assert tree.tty is None and tree.wait() == 5 and tree.wait() == 5


def test_tty_master_is_handed_to_the_caller(busybox_layer):
    """Read as runtime.tty's readers do: a slave fd of our own (so no early EIO), until the
    process has exited, then drain (an EIO can come before the last bytes: this lost "ok")."""
    import select

    from runtime import tty

    tree = process.start(SandboxSpec(lowerdirs=[busybox_layer], tty=True,
                                     argv=["sh", "-c", "tty; echo ok; exit 3"]))
    out = []
    pidfd = os.pidfd_open(tree.pid)
    peer = tty.hold_peer(tree.tty)
    try:
        while select.select([tree.tty, pidfd], [], [])[0] != [pidfd]:
            try:
                out.append(os.read(tree.tty, 4096))
            except OSError:       # EIO without a peer; the exit comes next
                select.select([pidfd], [], [])
                break
        tty.drain(tree.tty, out.append)
    finally:
        os.close(pidfd)
        os.close(tree.tty)
        if peer is not None:
            os.close(peer)
    assert tree.wait() == 3
    assert b"".join(out).replace(b"\r\n", b"\n") == b"/dev/pts/0\nok\n"


def test_the_command_as_pid1_dies_with_the_keeper_even_after_a_uid_change(busybox_layer):
    """setresuid clears PR_SET_PDEATHSIG: pid 1 sets it again, so killing the keeper (a killed
    caller's fate) still takes the command with it."""
    import time

    tree = process.start(SandboxSpec(lowerdirs=[busybox_layer], user="alice",
                                     argv=["sleep", "30"]))
    end = time.monotonic() + 10
    while True:
        with open(f"/proc/{tree.pid}/task/{tree.pid}/children") as f:
            kids = f.read().split()
        if kids and os.stat(f"/proc/{kids[0]}").st_uid == 1000:
            with open(f"/proc/{kids[0]}/comm") as f:
                if f.read().strip() == "sleep":
                    break
        assert time.monotonic() < end, "the command did not start"
        time.sleep(0.01)
    pid1 = int(kids[0])
    os.kill(tree.pid, signal.SIGKILL)
    assert tree.wait() == 137
    while os.path.exists(f"/proc/{pid1}"):
        assert time.monotonic() < end + 5, "pid 1 outlived its keeper"
        time.sleep(0.01)
