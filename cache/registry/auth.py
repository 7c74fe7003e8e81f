"""Registry credentials and tokens.

Credentials are looked up like podman: $REGISTRY_AUTH_FILE (else ${XDG_RUNTIME_DIR}/containers/
auth.json), ~/.config/containers/auth.json, then docker's config.json ($DOCKER_CONFIG, else
~/.docker/config.json). In each file credHelpers[registry] wins, then auths[registry] (the most
specific `host/path` key first), then credsStore; helpers are `docker-credential-<name>
get|store|erase` with docker's JSON on stdin/stdout. docker.io is keyed as docker writes it,
"https://index.docker.io/v1/".

`login` writes where docker writes (its credential helper, else config.json) and also replaces an
entry for the same host that an earlier auth.json holds, so the credential just verified is the
one lookup finds; `logout` removes the host from all of them.

Authenticator answers a registry's WWW-Authenticate challenge (only the registry's own: a
redirected-to host's 401 is not taken as one): Basic, or Bearer tokens from
the realm (GET with Basic credentials or anonymous; an identity token goes through the OAuth2
POST form, GET when the realm answers 404), cached per scope set until they expire or a 401
says otherwise."""
from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from cache import atomic
from cache.registry import config, http
from cache.registry.config import DOCKER_IO, api_host, read_user_file
from cache.registry.errors import (
    RegistryError,
    Unauthorized,
    display_host,
    parse_error,
    sanitize,
    unauthorized,
)

DOCKER_IO_KEY = "https://index.docker.io/v1/"
TOKEN_USER = "<token>"           # docker's user name for an identity (refresh) token
TOKEN_MIN_LIFE = 60              # seconds, when the token server does not say (docker's default)
CLIENT_ID = "pybuild"


# ---- WWW-Authenticate ---------------------------------------------------------------------

@dataclass
class Challenge:
    scheme: str                              # lower case: "basic", "bearer"
    params: dict[str, str] = field(default_factory=dict)


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TOKEN68 = re.compile(r"[A-Za-z0-9._~+/-]+=*")


def parse_challenges(value: str) -> list[Challenge]:
    """RFC 7235 challenges: `Bearer realm="https://a/token",service="reg",scope="repository:x:
    pull,push"`; quoted strings may hold commas and backslash escapes; several challenges may
    share one header; a token68 (`Basic abc==`) is kept under the name ""."""
    out: list[Challenge] = []
    i, n = 0, len(value)

    def ws(k: int) -> int:
        while k < n and value[k] in " \t":
            k += 1
        return k

    while True:
        while i < n and value[i] in " \t,":
            i += 1
        m = _TOKEN.match(value, i)
        if not m:
            return out
        ch = Challenge(m.group().lower())
        out.append(ch)
        i = ws(m.end())
        t = _TOKEN68.match(value, i)
        if t and (ws(t.end()) >= n or value[ws(t.end())] == ",") and "=" not in t.group().rstrip("="):
            ch.params[""] = t.group()
            i = t.end()
            continue
        while True:
            i = ws(i)
            m = _TOKEN.match(value, i)
            if not m:
                break
            j = ws(m.end())
            if j >= n or value[j] != "=":
                break                                    # the next challenge's scheme
            name, i = m.group().lower(), ws(j + 1)
            if i < n and value[i] == '"':
                i += 1
                buf = []
                while i < n and value[i] != '"':
                    if value[i] == "\\" and i + 1 < n:
                        i += 1
                    buf.append(value[i])
                    i += 1
                i += 1
                ch.params[name] = "".join(buf)
            else:
                v = _TOKEN.match(value, i)
                ch.params[name] = v.group() if v else ""
                i = v.end() if v else i
            i = ws(i)
            if i < n and value[i] == ",":
                i += 1
            else:
                break
        if i < n and not _TOKEN.match(value, i) and value[i] not in " \t,":
            i += 1                                      # junk: step over it


def challenges_of(resp: http.Response) -> list[Challenge]:
    out = []
    for h in resp.headers.get_all("WWW-Authenticate") or ():
        out += parse_challenges(h)
    return out


# ---- credential files ---------------------------------------------------------------------

def _registry_name(registry: str) -> str:
    """A registry as credentials are keyed: no scheme, no /v1/ path; docker.io for its aliases."""
    r = registry.strip()
    for p in ("https://", "http://"):
        if r.startswith(p):
            r = r[len(p):]
    r = r.rstrip("/")
    if r.endswith(("/v1", "/v2")):
        r = r[:-3]
    host, sep, path = r.partition("/")
    host = display_host(host)
    return host + sep + path


def server_url(registry: str) -> str:
    """The key/ServerURL docker uses for a registry."""
    name = _registry_name(registry)
    return DOCKER_IO_KEY if name == DOCKER_IO else name


def docker_config_path() -> Path:
    d = os.environ.get("DOCKER_CONFIG")
    return (Path(d) if d else Path.home() / ".docker") / "config.json"


def auth_files() -> list[tuple[Path, bool]]:
    """(path, is docker's config.json) in lookup order."""
    files: list[tuple[Path, bool]] = []
    env = os.environ.get("REGISTRY_AUTH_FILE")
    if env:
        files.append((Path(env), False))
    elif os.environ.get("XDG_RUNTIME_DIR"):
        files.append((Path(os.environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json", False))
    elif os.geteuid() == 0:
        files.append((Path("/run/containers/0/auth.json"), False))
    cfg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    files.append((Path(cfg) / "containers" / "auth.json", False))
    files.append((docker_config_path(), True))
    return files


def _load(path: Path) -> dict | None:
    raw = read_user_file(path)
    if raw is None:
        return None
    try:
        data = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError) as e:
        raise RegistryError(f"{path}: invalid JSON: {e}") from None
    if not isinstance(data, dict):
        raise RegistryError(f"{path}: not a JSON object")
    return data


def _key_name(key: str, docker: bool) -> str:
    name = _registry_name(key)
    return name.partition("/")[0] if docker else name    # docker keys by host only


def _candidates(registry: str, path: str | None) -> list[str]:
    """`host/a/b`, `host/a`, `host`: the most specific key first (containers-auth.json)."""
    host = _registry_name(registry)
    out = []
    if path:
        parts = path.strip("/").split("/")
        out = [f"{host}/{'/'.join(parts[:i])}" for i in range(len(parts), 0, -1)]
    return [*out, host]


def _decode_entry(entry, where: str) -> tuple[str, str] | None:
    if not isinstance(entry, dict):
        return None
    if entry.get("identitytoken"):
        return TOKEN_USER, entry["identitytoken"]
    if entry.get("auth"):
        try:
            user, sep, secret = base64.b64decode(entry["auth"], validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            raise RegistryError(f"{where}: invalid base64 in \"auth\"") from None
        if not sep:
            raise RegistryError(f"{where}: \"auth\" is not base64 of user:password")
        return user, secret
    if entry.get("username") and entry.get("password"):
        return entry["username"], entry["password"]
    return None


def _helper(name: str, action: str, data: bytes, where: Path) -> subprocess.CompletedProcess:
    exe = f"docker-credential-{name}"
    try:
        return subprocess.run([exe, action], input=data, capture_output=True, timeout=60, check=False)
    except FileNotFoundError:
        raise RegistryError(f"credential helper {exe} (named in {where}) is not in $PATH") from None
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RegistryError(f"credential helper {exe}: {e}") from None


def _helper_error(name: str, action: str, p: subprocess.CompletedProcess) -> RegistryError:
    text = (p.stdout or p.stderr).decode("utf-8", "replace").strip().splitlines()
    return RegistryError(f"docker-credential-{name} {action} failed: "
                         f"{sanitize(text[0]) if text else p.returncode}")


def _docker_helper(data: dict, host: str) -> str | None:
    """The helper docker uses for `host` in a config.json: credHelpers[host], else credsStore."""
    helpers = data.get("credHelpers")
    if isinstance(helpers, dict):
        for k, v in helpers.items():
            if _key_name(k, True) == host and isinstance(v, str) and v:
                return v
    store = data.get("credsStore")
    return store if isinstance(store, str) and store else None


def helper_get(name: str, registry: str, where: Path) -> tuple[str, str] | None:
    p = _helper(name, "get", server_url(registry).encode(), where)
    if p.returncode != 0:
        if b"credentials not found" in (p.stdout + p.stderr).lower():
            return None
        raise _helper_error(name, "get", p)
    try:
        out = json.loads(p.stdout)
        user, secret = out.get("Username", ""), out["Secret"]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise RegistryError(f"docker-credential-{name} get: not the JSON docker expects") from None
    return (user or TOKEN_USER, secret) if secret else None


def _lookup(data: dict, path: Path, docker: bool, registry: str, repo_path: str | None):
    """(found, creds) for one file: found=False means look in the next file."""
    cands = _candidates(registry, repo_path)
    helpers = data.get("credHelpers") or {}
    if isinstance(helpers, dict):
        named = {_key_name(k, docker): v for k, v in helpers.items()}
        for c in cands:
            if c in named:
                return True, helper_get(named[c], registry, path)
    auths = data.get("auths") or {}
    if isinstance(auths, dict):
        named = {}
        for k, v in auths.items():
            named.setdefault(_key_name(k, docker), v)
        for c in cands:
            creds = _decode_entry(named.get(c), str(path))
            if creds:
                return True, creds
    store = data.get("credsStore")
    if isinstance(store, str) and store:
        creds = helper_get(store, registry, path)
        if creds:
            return True, creds
    return False, None


def credentials(registry: str, path: str | None = None) -> tuple[str, str] | None:
    """(user, secret) for `registry` (e.g. "127.0.0.1:5000", "docker.io"), or None. `path` (a
    repository path) lets a containers-auth.json `host/namespace` key win over the host's."""
    for f, docker in auth_files():
        data = _load(f)
        if data is None:
            continue
        found, creds = _lookup(data, f, docker, registry, path)
        if found:
            return creds
    return None


# ---- tokens -------------------------------------------------------------------------------

def _error_detail(data: bytes) -> str | None:
    code, message = parse_error(data)
    return message or code or None


class Authenticator:
    """What to send to one registry host as one identity: learns the challenge from GET /v2/,
    then gives Authorization headers per scope set (tokens cached, thread-safe)."""

    def __init__(self, host: str, base: str, verify: bool, creds: tuple[str, str] | None):
        self.host, self.base, self.verify, self.creds = host, base, verify, creds
        self._lock = threading.Lock()
        self._challenge: Challenge | None = None
        self._pinged = False
        self._tokens: dict[frozenset, tuple[str, float]] = {}

    def ping(self) -> None:
        """GET /v2/ once: 200 = no auth, 401 = its challenge."""
        with self._lock:
            if self._pinged:
                return
            with http.request("GET", f"{self.base}/v2/", verify=self.verify) as resp:
                resp.drain()
                if resp.status == 401:
                    self._challenge = _pick(challenges_of(resp))
                elif resp.status >= 400 and resp.status != 404:  # 404: some proxies; requests tell
                    raise RegistryError(f"{self.host}: GET /v2/: {resp.status} {resp.reason}")
            self._pinged = True

    def headers(self, scopes: list[str], what: str) -> dict:
        self.ping()
        ch = self._challenge
        if ch is None:
            return {}
        if ch.scheme == "basic":
            if not self.creds or self.creds[0] == TOKEN_USER:
                return {}
            return {"Authorization": _basic(*self.creds)}
        if ch.scheme == "bearer":
            return {"Authorization": "Bearer " + self._token(scopes, what)}
        return {}

    def retry_401(self, resp: http.Response, scopes: list[str], what: str) -> bool:
        """After a 401: take the new challenge (and any scope it names) and drop cached tokens;
        True when asking again can change the answer. A 401 from anywhere but the registry
        itself (a redirect's CDN) is no challenge of the registry's: False."""
        if http.origin(resp.url) != http.origin(self.base):
            return False
        ch = _pick(challenges_of(resp))
        with self._lock:
            old = self._challenge
            self._challenge = ch or old
            self._pinged = True
            for k in [k for k in self._tokens if set(scopes) <= k]:
                del self._tokens[k]
        if ch is None:
            return False
        if ch.scheme == "bearer":
            extra = ch.params.get("scope")
            if extra and extra not in scopes:
                scopes.insert(0, extra)     # some registries read only the first scope
            return True
        return old is None or old.scheme != ch.scheme   # Basic: our creds were sent already

    def _token(self, scopes: list[str], what: str) -> str:
        key = frozenset(scopes)
        now = time.monotonic()
        with self._lock:
            for k, (tok, exp) in self._tokens.items():
                if key <= k and exp > now:
                    return tok
            tok, life = self._fetch(scopes, what)
            self._tokens[key] = (tok, now + max(life - 10, life / 2))
            return tok

    def _fetch(self, scopes: list[str], what: str) -> tuple[str, float]:
        ch = self._challenge
        realm = ch.params.get("realm")
        if not realm:
            raise RegistryError(f"{self.host}: Bearer challenge without a realm")
        service = ch.params.get("service")
        creds = self.creds
        resp = None
        if creds and creds[0] == TOKEN_USER:
            form = {"grant_type": "refresh_token", "refresh_token": creds[1], "client_id": CLIENT_ID}
            if service:
                form["service"] = service
            if scopes:
                form["scope"] = " ".join(scopes)
            body = urllib.parse.urlencode(form).encode()
            resp = http.request("POST", realm, body=body, verify=self.verify, what="POST token", headers={
                "Content-Type": "application/x-www-form-urlencoded", "Content-Length": str(len(body))})
            if resp.status in (404, 405):
                resp.drain()
                resp = None
        if resp is None:
            q = ([("service", service)] if service else []) + [("scope", s) for s in scopes]
            if creds and creds[0] != TOKEN_USER:
                q.append(("account", creds[0]))
            url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(q) if q else realm
            headers = {"Authorization": _basic(*creds)} if creds else {}
            resp = http.request("GET", url, headers=headers, verify=self.verify, what="GET token")
        with resp:
            data = resp.read_all(1 << 20)
        if resp.status in (401, 403):
            detail = _error_detail(data) or ("incorrect username or password" if creds
                                             else "authentication required")
            raise unauthorized(what, self.host, detail)
        if resp.status != 200:
            where = sanitize(urllib.parse.urlsplit(realm).netloc, 80)
            raise RegistryError(f"{self.host}: token server {where}: {resp.status} {resp.reason}")
        try:
            body = json.loads(data)
            tok = body.get("token") or body.get("access_token")
            life = max(float(body.get("expires_in") or TOKEN_MIN_LIFE), 1.0)
        except (ValueError, AttributeError, TypeError, OverflowError):
            tok = None
        if not tok:
            raise RegistryError(f"{self.host}: token server gave no token")
        if not isinstance(tok, str) or not _TOKEN68.fullmatch(tok):
            raise RegistryError(f"{self.host}: token server gave a token that is not a token68 string "
                                "(RFC 7235)")
        return tok, life


def _pick(chs: list[Challenge]) -> Challenge | None:
    for scheme in ("bearer", "basic"):
        for c in chs:
            if c.scheme == scheme:
                return c
    return None


def _basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


_auth_lock = threading.Lock()
_authenticators: dict[tuple, Authenticator] = {}


def authenticator(host: str, *, insecure: bool = False, tls_verify: bool = True,
                  creds: tuple[str, str] | None | bool = True, path: str | None = None) -> Authenticator:
    """The shared Authenticator for this host and identity (creds=True: look them up)."""
    if creds is True:
        creds = credentials(display_host(host), path)
    base, verify = http.base_url(host, insecure=insecure, tls_verify=tls_verify)
    key = (host, base, verify, creds)
    with _auth_lock:
        a = _authenticators.get(key)
        if a is None:
            a = _authenticators[key] = Authenticator(host, base, verify, creds)
        return a


# ---- login / logout -----------------------------------------------------------------------

def verify_login(registry: str, user: str, password: str, *, tls_verify: bool = True,
                 insecure: bool | None = None) -> None:
    """Prove the credentials against the registry (GET /v2/ with Basic, or a token for no scope
    and GET /v2/ with it); raises Unauthorized."""
    host = api_host(_registry_name(registry).partition("/")[0])
    if insecure is None:
        insecure = config.load().insecure(host)
    a = Authenticator(host, *http.base_url(host, insecure=insecure, tls_verify=tls_verify), (user, password))
    what = f"login {display_host(host)}"
    for _ in range(2):
        h = a.headers([], what)
        with http.request("GET", f"{a.base}/v2/", headers=h, verify=a.verify) as resp:
            data = resp.read_all(1 << 20)
            if resp.status == 200:
                return
            if resp.status == 401 and not h and a.retry_401(resp, [], what):
                continue
            if resp.status in (401, 403):
                detail = "incorrect username or password" if h else _error_detail(data)
                raise unauthorized(what, host, detail or "incorrect username or password")
            raise RegistryError(f"{display_host(host)}: GET /v2/: {resp.status} {resp.reason}")
    raise unauthorized(what, host, "incorrect username or password")


def _save(path: Path, data: dict) -> None:
    """Write an auth file as docker does (json.MarshalIndent with a tab; the user's key order
    kept), 0600, atomically, into the file a symlink points to rather than over the link."""
    real = Path(os.path.realpath(path))
    real.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic.write_file(real, json.dumps(data, indent="\t").encode(), mode=0o600)


def _put(auths: dict, same, key: str, entry: dict) -> dict:
    """`auths` with the first key `same` accepts replaced by key: entry in its place (the other
    such keys dropped), or key: entry appended."""
    out, done = {}, False
    for k, v in auths.items():
        if not same(k):
            out[k] = v
        elif not done:
            out[key], done = entry, True
    if not done:
        out[key] = entry
    return out


def login(registry: str, user: str, password: str, *, tls_verify: bool = True,
          insecure: bool | None = None) -> Path:
    """Check the credentials, then store them where docker would: credHelpers[registry] or
    credsStore (`docker-credential-X store`), else auths in config.json (0600, atomic). An
    auth.json earlier in the lookup order that has an entry for this host gets it replaced
    too (else its stale credential would keep winning). Returns docker's config.json path."""
    verify_login(registry, user, password, tls_verify=tls_verify, insecure=insecure)
    url = server_url(registry)
    host = _registry_name(registry).partition("/")[0]
    entry = {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
    for f, docker in auth_files():
        if docker:
            continue
        data = _load(f)
        auths = data.get("auths") if data else None
        if isinstance(auths, dict):
            key = next((k for k in auths if _key_name(k, False) == host), None)
            if key is not None:
                data["auths"] = _put(auths, lambda k: _key_name(k, False) == host, key, entry)
                _save(f, data)
    path = docker_config_path()
    data = _load(path) or {}
    helper = _docker_helper(data, host)
    if helper:
        payload = json.dumps({"ServerURL": url, "Username": user, "Secret": password}).encode()
        p = _helper(helper, "store", payload, path)
        if p.returncode != 0:
            raise _helper_error(helper, "store", p)
        return path
    auths = data.get("auths")
    data["auths"] = _put(auths if isinstance(auths, dict) else {}, lambda k: _key_name(k, True) == host,
                         url, entry)
    _save(path, data)
    return path


def logout(registry: str) -> bool:
    """Forget `registry`'s credentials in every auth file that holds them (and in docker's
    helper); True when something was removed."""
    removed = False
    name = _registry_name(registry)
    for f, docker in auth_files():
        data = _load(f)
        if data is None:
            continue
        key_host = name.partition("/")[0] if docker else name
        auths = data.get("auths")
        if isinstance(auths, dict):
            gone = [k for k in auths if _key_name(k, docker) == key_host]
            if gone:
                for k in gone:
                    del auths[k]
                _save(f, data)
                removed = True
        if docker:
            helper = _docker_helper(data, key_host)
            if helper:
                p = _helper(helper, "erase", server_url(registry).encode(), f)
                if p.returncode == 0:
                    removed = True
                elif b"not found" not in (p.stdout + p.stderr).lower():
                    raise _helper_error(helper, "erase", p)
    return removed


__all__ = ["Authenticator", "Challenge", "Unauthorized", "authenticator", "credentials", "login",
           "logout", "parse_challenges", "server_url"]
