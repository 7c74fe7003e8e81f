"""Docker image references: `busybox` means `docker.io/library/busybox:latest`, as in docker."""
from __future__ import annotations

from cache.errors import StoreError
from cache.layout import is_digest

DEFAULT_REGISTRY = "docker.io"
# distribution/reference's grammar, checked by hand (`re` costs ~8 ms of every run's start-up);
# tests/cache/test_refs.py holds the regexes these agree with
_LOWER_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_ALNUM = _LOWER_ALNUM | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_LABEL_CHARS = _ALNUM | {"-"}
_IPV6_CHARS = frozenset("0123456789abcdefABCDEF:")
_DIGITS = frozenset("0123456789")


def _is_component(s: str) -> bool:
    """[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*: lowercase alphanumeric runs joined by `.`, `_`,
    `__` or any number of `-`."""
    i, n = 0, len(s)
    while True:
        start = i
        while i < n and s[i] in _LOWER_ALNUM:
            i += 1
        if i == start:
            return False        # empty, or a separator first, last or doubled
        if i == n:
            return True
        start = i
        while i < n and s[i] not in _LOWER_ALNUM:
            i += 1
        sep = s[start:i]
        if sep not in (".", "_", "__") and sep.strip("-"):
            return False


def _is_tag(s: str) -> bool:
    r"""[\w][\w.-]{0,127} (\w: Python's, a Unicode letter or digit, or `_`)."""
    return (0 < len(s) <= 128 and (s[0].isalnum() or s[0] == "_")
            and all(c.isalnum() or c in "_.-" for c in s))


def _is_label(s: str) -> bool:
    return bool(s) and _LABEL_CHARS.issuperset(s) and s[0] != "-" and s[-1] != "-"


def _is_domain(s: str) -> bool:
    """DNS-ish labels (letters, digits, inner `-`) joined by dots, or an IPv6 address in
    brackets; then an optional numeric port."""
    if s.startswith("["):
        end = s.find("]")
        if end < 2 or not _IPV6_CHARS.issuperset(s[1:end]):
            return False
        port = s[end + 1:]
    else:
        host, colon, port = s.partition(":")
        if not all(_is_label(label) for label in host.split(".")):
            return False
        port = colon + port
    return not port or (port[0] == ":" and len(port) > 1 and _DIGITS.issuperset(port[1:]))


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
        if not is_digest(digest):
            raise StoreError(f"invalid reference format: {ref!r} (digest must be sha256:<64 hex>)")
    tag = None
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
        if not _is_tag(tag):
            raise StoreError(f"invalid reference format: {ref!r} (bad tag {tag!r})")
    domain, path = _split_domain(name)
    if not _is_domain(domain):
        raise StoreError(f"invalid reference format: {ref!r} (bad registry host {domain!r})")
    if domain == DEFAULT_REGISTRY and "/" not in path:
        path = "library/" + path
    for comp in path.split("/"):
        if not _is_component(comp):
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


def display(ref: str, *, default_tag: bool) -> str:
    """A reference as BuildKit names it in progress: the full repository name with the tag and
    digest as written (`docker.io/library/busybox`); `default_tag` adds `:latest` when neither
    is (`load metadata for docker.io/library/busybox:latest`). `ref` itself if it is invalid."""
    try:
        repo, tag, digest = parse(ref)
    except StoreError:
        return ref
    name = ref.partition("@")[0]
    written = name.rfind(":") > name.rfind("/")
    shown = written or (default_tag and not digest)
    return repo + (f":{tag}" if shown else "") + (f"@{digest}" if digest else "")
