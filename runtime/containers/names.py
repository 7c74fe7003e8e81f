"""docker's names for containers and volumes (RestrictedNamePattern), in one place for the
records (runtime.containers.state) and the volumes, without importing re (on `run`'s path)."""
from __future__ import annotations

_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_NAME_CHARS = _ALNUM | frozenset("_.-")


def valid_name(name: str) -> bool:
    """docker's RestrictedNamePattern, `^[a-zA-Z0-9][a-zA-Z0-9_.-]+$` as Go matches it (the
    whole text: no final newline), without importing re: volume and container names."""
    return len(name) >= 2 and name[0] in _ALNUM and all(c in _NAME_CHARS for c in name[1:])
