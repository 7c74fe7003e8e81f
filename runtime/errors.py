"""The runtime's one user-facing error class.

`builder.cli` prints a SandboxError as `pybuild: error: <message>`, so the message is one line
that says what failed and, where it can, what to do about it.
"""


class SandboxError(Exception):
    """The sandbox could not be set up or the kernel refused an operation the user can fix."""


class KernelCallError(SandboxError):
    """A system call failed; keeps the errno so callers can fall back (e.g. ENOSYS, ENOENT)."""

    def __init__(self, what: str, errno: int, hint: str = ""):
        import os
        self.errno = errno
        self.what = what
        msg = f"{what}: {os.strerror(errno)}"
        super().__init__(f"{msg} ({hint})" if hint else msg)


class ConfigError(SandboxError):
    """A container's configuration (the user's flags against the image's config) cannot be run."""


class ContainerError(SandboxError):
    """A container named by the user is missing, in the wrong state, or its name is taken."""
