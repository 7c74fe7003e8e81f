"""User-facing errors of the build side.

Every package has its own error class (grammar.errors.DockerfileError, cache.errors.StoreError,
runtime.errors.SandboxError, BuildError here); the CLI prints any of them as one line
`pybuild: error: <message>` and exits 1. Anything else is a bug and shows a traceback only
with --debug.
"""


class BuildError(Exception):
    """A build failed for a reason the user can act on (bad flag, missing file, failed RUN)."""
