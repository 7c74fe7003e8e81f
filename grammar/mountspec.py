"""``RUN --mount=...``: BuildKit's CSV mount spec as a typed ``MountSpec`` (one parser).

``grammar.checks`` parses each spec before the build with ``expand=None``: a value holding
``$`` is only known once the builder expands it, so its checks wait. ``builder.mounts``
parses the same spec with the builder's expansion and gets every value checked and typed.
Rules follow BuildKit's parseMount (frontend/dockerfile/instructions/commands_runmount.go):
keys are case-insensitive, ``readonly``/``ro`` and ``readwrite``/``rw`` are Go booleans
(``strconv.ParseBool``; bare = true, last one wins); without either, cache and tmpfs mounts
are writable and the others read-only.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from dataclasses import dataclass

from .errors import FROM_EXPANSION, with_suggestion
from .goquote import go_quote

MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
SHARING_MODES = ("shared", "private", "locked")
_KEYS = {
    "bind": {"type", "target", "source", "from", "readonly", "readwrite"},
    "cache": {"type", "target", "source", "from", "readonly", "readwrite", "id", "sharing", "mode", "uid",
              "gid"},
    "tmpfs": {"type", "target", "size"},
    "secret": {"type", "target", "id", "env", "required", "mode", "uid", "gid"},
    "ssh": {"type", "target", "id", "required", "mode", "uid", "gid"},
}
_ALL_KEYS = sorted(set().union(*_KEYS.values()))
_ALIASES = {"dst": "target", "destination": "target", "src": "source", "ro": "readonly", "rw": "readwrite"}
_BARE = ("readonly", "readwrite", "required")  # keys that may stand alone (= true)
_GO_BOOL = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
            "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}
_SIZE = re.compile(r"(?i)\d+(\.\d+)?\s*([kmgtp]i?b?|b)?")


class MountError(ValueError):
    """A malformed mount spec; ``str()`` is the user's message."""


@dataclass(frozen=True)
class MountSpec:
    """One ``--mount``. Unset strings are ``""``; ``mode``/``uid``/``gid`` are None unless given.
    ``given`` holds the canonical keys that were written (aliases resolved)."""

    type: str = "bind"
    target: str = ""
    source: str = ""
    from_: str = ""
    readonly: bool = True
    id: str = ""
    sharing: str = ""
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: str = ""
    env: str = ""
    required: bool = False
    given: frozenset[str] = frozenset()


def go_parse_bool(text: str) -> bool:
    """Go's ``strconv.ParseBool``; ValueError for anything else."""
    try:
        return _GO_BOOL[text]
    except KeyError:
        raise ValueError(text) from None


def _fields(spec: str) -> list[str]:
    """One CSV record, Go encoding/csv rules as BuildKit reads it."""
    try:
        rows = list(csv.reader([spec], strict=True))
    except csv.Error:
        raise MountError(f"invalid mount {go_quote(spec)}: bad CSV syntax") from None
    return list(rows[0]) if rows else []


def parse_mount(spec: str, expand: Callable[[str], str | None] | None = None) -> MountSpec:
    """Parse one ``--mount`` value; raises MountError with BuildKit-like wording.

    ``expand(value)`` expands each value but ``from`` (which may not hold variables); when it
    is None, or returns None, the value is not known yet and only its syntax is checked."""
    raw: dict[str, str | None] = {}  # canonical key -> value; None: known only after expansion
    readonly: bool | None = None
    for fld in _fields(spec):
        key, eq, value = fld.partition("=")
        key = _ALIASES.get(key.lower(), key.lower())
        if not eq:
            if key not in _BARE:
                raise MountError(f"invalid field '{fld}' must be a key=value pair")
            value = "true"
        elif key == "from":
            if re.search(r"\$.", value):
                raise MountError(FROM_EXPANSION)
        elif expand is not None:
            value = expand(value)
        elif "$" in value:
            value = None
        if key in ("readonly", "readwrite") and value is not None:
            try:
                b = go_parse_bool(value)
            except ValueError:
                raise MountError(f"invalid value for {key}: {value}") from None
            readonly = b if key == "readonly" else not b
        raw[key] = value
    mtype = raw.get("type", "bind")
    if mtype is None:  # type=$T: nothing type-dependent can be checked yet
        return MountSpec(given=frozenset(raw))
    mtype = mtype.lower()
    if mtype not in MOUNT_TYPES:
        raise MountError(with_suggestion(f"unsupported mount type {go_quote(mtype)}", mtype, MOUNT_TYPES))
    allowed = _KEYS[mtype]
    for key, value in raw.items():
        if key in allowed:
            continue
        if key == "mode" and mtype == "bind":
            raise MountError('mode not allowed for "bind" type mounts')
        if key == "from" and mtype == "secret":
            raise MountError("secret mount should not have a from")
        if key == "sharing":
            raise MountError(f"invalid cache sharing set for {mtype} mount")
        if key in _ALL_KEYS:
            raise MountError(f"unexpected key '{key}' for mount type {go_quote(mtype)}")
        raise MountError(with_suggestion(f"unexpected key '{key}' in '{key}={value}'", key, _ALL_KEYS))
    out: dict = {"type": mtype, "given": frozenset(raw)}
    out["readonly"] = readonly if readonly is not None else mtype not in ("cache", "tmpfs")
    for key in ("target", "source", "id", "env"):
        if raw.get(key):
            out[key] = raw[key]
    if raw.get("from"):
        out["from_"] = raw["from"]
    required = raw.get("required")
    if required is not None:
        try:
            out["required"] = go_parse_bool(required)
        except ValueError:
            raise MountError(f"invalid value for required: {required}") from None
    sharing = raw.get("sharing")
    if sharing is not None:
        if sharing.lower() not in SHARING_MODES:
            raise MountError(f"unsupported sharing value {go_quote(sharing)}")
        out["sharing"] = sharing.lower()
    for key in ("uid", "gid"):
        v = raw.get(key)
        if v is not None:
            if not v.isascii() or not v.isdigit() or int(v) >= 2**32:
                raise MountError(f"invalid value for {key}: {v}")
            out[key] = int(v)
    mode = raw.get("mode")
    if mode is not None:
        if not re.fullmatch(r"[0-7]+", mode) or int(mode, 8) >= 2**32:
            raise MountError(f"invalid value for mode: {mode}")
        out["mode"] = int(mode, 8)
    size = raw.get("size")
    if size is not None:
        if not _SIZE.fullmatch(size):
            raise MountError(f"invalid value for size: {size}")
        out["size"] = size
    target = raw.get("target", "")
    if mtype in ("bind", "cache", "tmpfs") and target == "":
        raise MountError(f"mount type={mtype} requires a target (target=/path)")
    if target is not None and target.strip() == "/":
        raise MountError('invalid mount target "/"')
    return MountSpec(**out)
