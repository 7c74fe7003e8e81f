"""The registry's user-facing errors: one line each, a StoreError so the CLI prints it plainly."""
from __future__ import annotations

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
