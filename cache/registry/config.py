"""containers-registries.conf (v2, and v1's three lists) read the way containers/image reads it:
the longest matching `prefix` picks a [[registry]], its `location` replaces the prefix, its
mirrors come first for pulls, `blocked` refuses, `insecure` allows http and unverified TLS.

Short names are not resolved through `unqualified-search-registries`: like docker, `busybox`
always means docker.io (the list is checked for its type and otherwise ignored)."""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from cache.registry.errors import Blocked, RegistryError, display_host

SYSTEM_CONF = "/etc/containers/registries.conf"
DOCKER_IO = "docker.io"
DOCKER_API_HOST = "registry-1.docker.io"


@dataclass(frozen=True)
class Endpoint:
    host: str            # API host[:port]: "127.0.0.1:5000", "registry-1.docker.io" for docker.io
    path: str            # repository path on that host, after prefix rewriting
    insecure: bool = False
    mirror: bool = False

    @property
    def name(self) -> str:
        """host/path as users write it (docker.io, not its API host)."""
        host = DOCKER_IO if self.host == DOCKER_API_HOST else self.host
        return f"{host}/{self.path}"


@dataclass
class Mirror:
    location: str
    insecure: bool = False
    pull_from_mirror: str = "all"     # all | digest-only | tag-only


@dataclass
class Registry:
    prefix: str
    location: str
    insecure: bool = False
    blocked: bool = False
    mirror_by_digest_only: bool = False
    mirrors: list[Mirror] = field(default_factory=list)


def is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1, with or without a port."""
    h = host
    if h.startswith("["):
        h = h[1:h.find("]")] if "]" in h else h[1:]
    elif h.count(":") == 1:
        h = h.partition(":")[0]
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def api_host(location_host: str) -> str:
    return DOCKER_API_HOST if location_host in (DOCKER_IO, "index.docker.io") else location_host


def _split(location: str) -> tuple[str, str]:
    host, _, path = location.partition("/")
    return host, path


def _matches(repo: str, prefix: str) -> bool:
    if prefix.startswith("*."):
        host = repo.partition("/")[0]
        return host.endswith(prefix[1:])
    return repo == prefix or repo.startswith(prefix + "/")


def _rewrite(repo: str, prefix: str, location: str) -> str:
    if prefix.startswith("*."):
        return repo if not location else location + repo[len(repo.partition("/")[0]):]
    return location + repo[len(prefix):]


class RegistriesConf:
    def __init__(self, registries: list[Registry] | None = None, source: str = ""):
        self.registries = list(registries or [])
        self.source = source

    def find(self, repo_full: str) -> Registry | None:
        """The [[registry]] whose prefix matches repo_full longest (wildcards count by length too)."""
        best = None
        for r in self.registries:
            if _matches(repo_full, r.prefix) and (best is None or len(r.prefix) > len(best.prefix)):
                best = r
        return best

    def _own(self, repo_full: str, reg: Registry | None) -> Endpoint:
        if reg is None:
            host, path = _split(repo_full)
            return Endpoint(api_host(host), path, False, False)
        if reg.blocked:
            where = f" in {self.source}" if self.source else ""
            raise Blocked(f"registry {reg.prefix} is blocked{where}: {repo_full} cannot be used")
        host, path = _split(_rewrite(repo_full, reg.prefix, reg.location))
        return Endpoint(api_host(host), path, reg.insecure, False)

    def pull_endpoints(self, repo_full: str, *, by_digest: bool = False) -> list[Endpoint]:
        """Mirrors first (in file order), then the registry itself; raises Blocked.
        `by_digest`: the reference is a digest (digest-only mirrors are skipped otherwise)."""
        reg = self.find(repo_full)
        own = self._own(repo_full, reg)
        out = []
        if reg is not None:
            for m in reg.mirrors:
                mode = "digest-only" if reg.mirror_by_digest_only else m.pull_from_mirror
                if (mode == "digest-only" and not by_digest) or (mode == "tag-only" and by_digest):
                    continue
                host, path = _split(_rewrite(repo_full, reg.prefix, m.location))
                out.append(Endpoint(api_host(host), path, m.insecure, True))
        out.append(own)
        return out

    def push_endpoint(self, repo_full: str) -> Endpoint:
        return self._own(repo_full, self.find(repo_full))

    def insecure(self, host: str) -> bool:
        """Whether registries.conf lets `host` (e.g. the one `login` names) go without verified
        TLS: the [[registry]] find() picks for it says so, as Endpoint.insecure reads it
        (prefixes and `*.` wildcards alike); a host no prefix matches is insecure when it is
        the location of an insecure registry or mirror (where those endpoints lead)."""
        for name in dict.fromkeys((display_host(host), host)):
            reg = self.find(name)
            if reg is not None:
                return reg.insecure
        for r in self.registries:
            if r.insecure and r.location and host == api_host(_split(r.location)[0]):
                return True
            if any(m.insecure and host == api_host(_split(m.location)[0]) for m in r.mirrors):
                return True
        return False


def _bool(value, what: str, src: str) -> bool:
    if not isinstance(value, bool):
        raise RegistryError(f"{src}: {what} must be true or false, not {value!r}")
    return value


def _str(value, what: str, src: str) -> str:
    if not isinstance(value, str):
        raise RegistryError(f"{src}: {what} must be a string, not {value!r}")
    return value.rstrip("/")


def _parse(data: dict, src: str) -> list[Registry]:
    regs: list[Registry] = []
    search = data.get("unqualified-search-registries")
    if search is not None and not (isinstance(search, list) and all(isinstance(s, str) for s in search)):
        raise RegistryError(f"{src}: unqualified-search-registries must be a list of strings")
    v1 = data.get("registries")
    if isinstance(v1, dict):     # v1: [registries.insecure|block] registries = [...] (search: ignored)
        for kind in ("insecure", "block"):
            for host in (v1.get(kind) or {}).get("registries", []):
                host = _str(host, f"registries.{kind}", src)
                r = next((x for x in regs if x.prefix == host), None)
                if r is None:
                    r = Registry(host, host)
                    regs.append(r)
                r.insecure |= kind == "insecure"
                r.blocked |= kind == "block"
    entries = data.get("registry", [])
    if not isinstance(entries, list):
        raise RegistryError(f"{src}: [[registry]] must be an array of tables")
    for e in entries:
        if not isinstance(e, dict):
            raise RegistryError(f"{src}: [[registry]] must be an array of tables")
        location = _str(e.get("location", ""), "location", src)
        prefix = _str(e.get("prefix", "") or location, "prefix", src)
        if not prefix:
            raise RegistryError(f"{src}: a [[registry]] needs a location or a prefix")
        if prefix.startswith("*.") and location:
            raise RegistryError(f"{src}: wildcard prefix {prefix} cannot have a location")
        mirrors = []
        for m in e.get("mirror", []) or []:
            if not isinstance(m, dict) or not m.get("location"):
                raise RegistryError(f"{src}: a mirror of {prefix} needs a location")
            mode = m.get("pull-from-mirror", "all")
            if mode not in ("all", "digest-only", "tag-only"):
                raise RegistryError(f"{src}: pull-from-mirror must be all, digest-only or tag-only")
            mirrors.append(Mirror(_str(m["location"], "mirror location", src),
                                  _bool(m.get("insecure", False), "mirror insecure", src), mode))
        r = Registry(prefix, location, _bool(e.get("insecure", False), "insecure", src),
                     _bool(e.get("blocked", False), "blocked", src),
                     _bool(e.get("mirror-by-digest-only", False), "mirror-by-digest-only", src), mirrors)
        regs = [x for x in regs if x.prefix != prefix] + [r]
    return regs


def read_user_file(path: Path) -> bytes | None:
    """The bytes of a configuration file the user keeps (registries.conf, auth files), None
    when it is not there; any other failure is one line naming it."""
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise RegistryError(f"cannot read {path}: {e.strerror}") from None


def _read(path: Path) -> dict | None:
    raw = read_user_file(path)
    if raw is None:
        return None
    try:
        import tomllib  # only when a registries.conf exists (~10 ms)

        return tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise RegistryError(f"{path}: invalid TOML: {e}") from None


def load(path: str | None = None) -> RegistriesConf:
    """`path`, else $CONTAINERS_REGISTRIES_CONF, else the user's ~/.config/containers/
    registries.conf when it exists, else /etc/containers/registries.conf; plus the drop-ins of
    `<that file>.d/*.conf` in name order (a later [[registry]] with the same prefix replaces an
    earlier one). A missing file is an empty config; bad TOML is a RegistryError."""
    explicit = path or os.environ.get("CONTAINERS_REGISTRIES_CONF")
    if explicit:
        main = Path(explicit)
    else:
        user = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "containers" / \
            "registries.conf"
        main = user if os.geteuid() != 0 and user.exists() else Path(SYSTEM_CONF)
    files = [main]
    dropins = Path(str(main) + ".d")
    if dropins.is_dir():
        files += sorted(p for p in dropins.iterdir() if p.suffix == ".conf")
    regs: list[Registry] = []
    for f in files:
        data = _read(f)
        if data is None:
            continue
        more = _parse(data, str(f))
        prefixes = {r.prefix for r in more}
        regs = [r for r in regs if r.prefix not in prefixes] + more
    return RegistriesConf(regs, str(main))
