"""`contextlib.contextmanager` for modules on `pybuild run`'s path: the decorator runs at import
time, contextlib (and the collections and functools it imports, ~3 ms) only at the first call,
which `pybuild run` never makes (the overlay and native `mounted` views are the build's)."""
from __future__ import annotations


def contextmanager(func):
    """A function returning func's generator as a context manager, as
    @contextlib.contextmanager does, contextlib imported when it is first called."""
    def call(*args, **kwargs):
        import contextlib

        return contextlib.contextmanager(func)(*args, **kwargs)

    call.__name__, call.__qualname__, call.__doc__ = func.__name__, func.__qualname__, func.__doc__
    call.__module__, call.__wrapped__ = func.__module__, func
    return call
