"""docker's confirmation before a prune: the warning and `Are you sure you want to continue?
[y/N]` on stdout, one line read from stdin; anything but y/yes (an empty or closed stdin too)
cancels. `-f`/`--force` skips it (the callers' flag)."""
from __future__ import annotations

import sys


def confirm(warning: str, cancelled: str) -> None:
    """Ask; a refusal raises BuildError(`cancelled`): one line, nothing removed."""
    from builder.errors import BuildError

    sys.stdout.write(f"{warning}\nAre you sure you want to continue? [y/N] ")
    sys.stdout.flush()
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise BuildError(cancelled)
