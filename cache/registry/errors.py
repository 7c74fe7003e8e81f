"""The registry's user-facing errors: one line each, a StoreError so the CLI prints it plainly."""
from __future__ import annotations

import json

from cache.errors import StoreError


class RegistryError(StoreError):
    """A registry refused or failed a request, or its configuration is bad."""


class NotFound(RegistryError):
    """The manifest, blob or repository does not exist there."""


class Unauthorized(RegistryError):
    """Credentials missing or refused; the message ends with the `pybuild login` hint."""


class DigestMismatch(RegistryError):
    """Bytes received (or stored) do not hash to the digest they were asked for."""


class Blocked(RegistryError):
    """registries.conf says `blocked = true` for this repository."""


def display_host(host: str) -> str:
    """What users call a registry: docker.io, not its API host."""
    return "docker.io" if host in ("registry-1.docker.io", "index.docker.io") else host


def unauthorized(what: str, host: str, detail: str = "authentication required") -> Unauthorized:
    return Unauthorized(f"{what}: unauthorized: {detail} (run `pybuild login {display_host(host)}`)")


_CONTROL = dict.fromkeys((*range(0x20), *range(0x7f, 0xa0)), " ")


def sanitize(text, limit: int = 200) -> str:
    """Registry-supplied text made fit for one terminal line: control characters (ANSI
    escapes, CR/LF, C1) become spaces, runs of spaces one, and at most `limit` characters."""
    s = " ".join(str(text).translate(_CONTROL).split())
    return s if len(s) <= limit else s[:limit - 1] + "…"


def parse_error(data: bytes) -> tuple[str, str]:
    """(code, message) of an error body, sanitized: distribution's `{"errors": [{"code",
    "message"}]}`, or a token server's `details` / `error_description` / `message` / `error`
    (code ""); ("", "") when it is neither."""
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return "", ""
    if not isinstance(body, dict):
        return "", ""
    errs = body.get("errors")
    if isinstance(errs, list) and errs and isinstance(errs[0], dict):
        code, message = errs[0].get("code"), errs[0].get("message")
        return (sanitize(code, 60) if isinstance(code, str) else "",
                sanitize(message) if isinstance(message, str) else "")
    for k in ("details", "error_description", "message", "error"):
        if isinstance(body.get(k), str):
            return "", sanitize(body[k])
    return "", ""
