"""Docker image references: `busybox` means `docker.io/library/busybox:latest`, as in docker."""
from __future__ import annotations

import re

from cache.errors import StoreError

DEFAULT_REGISTRY = "docker.io"
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# distribution/reference's domain: DNS-ish labels (letters, digits, inner '-') joined by dots, or
# an IPv6 address in brackets; then an optional numeric port
_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"^(?:{_LABEL}(?:\.{_LABEL})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?$")


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        return first, rest
    return DEFAULT_REGISTRY, name


def parse(ref: str) -> tuple[str, str | None, str | None]:
    """`ref` -> (full repository name, tag, digest); tag defaults to `latest` without a digest.
    Raises StoreError for anything docker would call an invalid reference format."""
    if not ref or ref != ref.strip():
        raise StoreError(f"invalid reference format: {ref!r}")
    name, digest = ref, None
    if "@" in ref:
        name, digest = ref.split("@", 1)
        if not _DIGEST.match(digest):
            raise StoreError(f"invalid reference format: {ref!r} (digest must be sha256:<64 hex>)")
    tag = None
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
        if not _TAG.match(tag):
            raise StoreError(f"invalid reference format: {ref!r} (bad tag {tag!r})")
    domain, path = _split_domain(name)
    if not _DOMAIN.match(domain):
        raise StoreError(f"invalid reference format: {ref!r} (bad registry host {domain!r})")
    if domain == DEFAULT_REGISTRY and "/" not in path:
        path = "library/" + path
    for comp in path.split("/"):
        if not _COMPONENT.match(comp):
            raise StoreError(f"invalid reference format: {ref!r} (repository name must be "
                             "lowercase letters, digits and . _ -)")
    if tag is None and digest is None:
        tag = "latest"
    return f"{domain}/{path}", tag, digest


def normalize(ref: str) -> str:
    """The full `domain/path:tag` string we key tags.json on (digest refs are not tags)."""
    repo, tag, digest = parse(ref)
    if digest is not None and tag is None:
        raise StoreError(f"cannot tag by digest: {ref}")
    return f"{repo}:{tag}"


def familiar_repo(repo: str) -> str:
    """`docker.io/library/busybox` -> `busybox`, `docker.io/x/y` -> `x/y` (docker's display)."""
    if repo.startswith(DEFAULT_REGISTRY + "/"):
        repo = repo[len(DEFAULT_REGISTRY) + 1:]
        if repo.startswith("library/") and repo.count("/") == 1:
            repo = repo[len("library/"):]
    return repo


def familiar(full: str) -> str:
    repo, _, tag = full.rpartition(":")
    return f"{familiar_repo(repo)}:{tag}"


def split_tag(full: str) -> tuple[str, str]:
    repo, _, tag = full.rpartition(":")
    return repo, tag
