"""Run one command in a sandbox to completion, in the foreground: RUN and `pybuild run`.

The process tree, its rootfs and its pty come from `runtime.process` (which a detached
container's supervisor uses directly); this module adds what only a foreground caller wants:
signals this process receives relayed to the command, a pty relayed to this process's terminal,
and a sandbox that never outlives an exception here (Ctrl-C as KeyboardInterrupt kills it).
"""
from __future__ import annotations

import _signal as signal  # the C module `signal` wraps: same calls, int constants, no enum
import os

from runtime import process, tty
from runtime.spec import SandboxSpec


def run(spec: SandboxSpec, *, forward_signals: bool = False, relay_stdin: bool = False,
        on_start=None, on_end=None) -> int:
    """Run spec to completion; return the exit status (128+n when killed by signal n).

    forward_signals: relay SIGINT/TERM/HUP/QUIT/USR1/USR2/WINCH received by this process to the
    command (for `pybuild run`; only possible from the main thread). With spec.tty the pty is
    relayed to this process's stdout, and stdin to it when relay_stdin (docker -it).
    on_start(tree) / on_end(tree): told of the process tree once it runs and when it is over
    (a build's ^C kills the trees it was told of).
    """
    tree = process.start(spec)
    old = {}
    if on_start is not None:
        on_start(tree)
    try:
        if forward_signals:
            try:
                for sig in process.FORWARDED_SIGNALS:
                    if not (sig == signal.SIGWINCH and tree.tty is not None):   # the relay follows it
                        old[sig] = signal.signal(sig, lambda n, _f: tree.signal(n))
            except ValueError:      # not the main thread (the first call says so: none is set)
                pass
        if tree.tty is not None:
            try:
                tty.relay(tree.tty, tree.pid, relay_stdin)
            finally:
                os.close(tree.tty)
        return tree.wait()
    except BaseException:
        tree.abort()
        raise
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
        if on_end is not None:
            on_end(tree)
