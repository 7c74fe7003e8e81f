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
    tree = process.start(SandboxSpec(lowerdirs=[busybox_layer], tty=True,
                                     argv=["sh", "-c", "tty; echo ok; exit 3"]))
    out = b""
    try:
        while True:
            try:
                chunk = os.read(tree.tty, 4096)
            except OSError:      # EIO: the slave side closed
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(tree.tty)
    assert tree.wait() == 3
    assert out.replace(b"\r\n", b"\n") == b"/dev/pts/0\nok\n"
