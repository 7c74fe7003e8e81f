"""User-facing errors of the build side, and which failures are the user's to act on.

Every package has its own error class (grammar.errors.DockerfileError, cache.errors.StoreError,
runtime.errors.SandboxError, BuildError here); code that knows an OSError is about something
the user named (the context, a -f file, an --iidfile) converts it there, with a message that
says which. The CLI prints those as one line `pybuild: error: <message>`. An OSError that says
the machine is out of room or read-only is the user's too, wherever it happens. Anything else
is a bug: `pybuild: internal error: ...`, a traceback only with --debug.
"""
from __future__ import annotations

import errno

from cache.errors import StoreError
from grammar.errors import DockerfileError
from runtime.errors import SandboxError

# the disk pybuild writes to is full, over quota or read-only: not a bug, the user can fix it
_FREE = "free some space; `pybuild prune` removes unused data"
ENVIRONMENT_ERRNOS = {errno.ENOSPC: _FREE, errno.EDQUOT: _FREE, errno.EROFS: ""}


class BuildError(Exception):
    """A build failed for a reason the user can act on (bad flag, missing file, failed RUN)."""


def user_message(e: BaseException) -> str | None:
    """The one line to show for a failure that is the user's to act on, None for a bug."""
    if isinstance(e, (BuildError, DockerfileError, StoreError, SandboxError)):
        return str(e)
    if isinstance(e, OSError) and e.errno in ENVIRONMENT_ERRNOS:
        where = f": {e.filename}" if e.filename else ""
        hint = ENVIRONMENT_ERRNOS[e.errno]
        return f"{e.strerror}{where}" + (f" ({hint})" if hint else "")
    return None
