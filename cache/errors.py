"""The one user-facing error class of cache/: the CLI prints it as `pybuild: error: <message>`."""


class StoreError(Exception):
    """Something a user can act on: unknown image, bad archive, digest mismatch, unsafe layer."""
