"""HTTP for registries on http.client: a keep-alive pool per scheme+host shared by all threads,
TLS with the system CAs plus containers' certs.d, plain http only to loopback or insecure hosts
(allowed_scheme), redirects that never carry Authorization to another origin, and retries with
exponential backoff (Backoff: 5xx, 429 with Retry-After, dropped connections) inside a small time
budget, ending in one clear RegistryError line.

Settings for tests and slow links: $PYBUILD_REGISTRY_RETRIES (attempts, default 5),
$PYBUILD_REGISTRY_RETRY_BUDGET (seconds of sleeping per request, default 5),
$PYBUILD_REGISTRY_TIMEOUT (socket timeout, default 60 s)."""
from __future__ import annotations

import http.client
import os
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from pathlib import Path

from cache.compress import CHUNK
from cache.registry.config import is_loopback
from cache.registry.errors import RegistryError, sanitize
from cache.version import VERSION

CERT_DIRS = ("/etc/containers/certs.d", "/etc/docker/certs.d")
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10
PER_HOST = 8            # idle keep-alive connections kept per scheme+host
FIRST_DELAY = 0.2
WARN_MAX = 16           # distinct registry Warning headers shown per process


class TransportError(RegistryError):
    """The connection failed (refused, reset, dropped mid-body) rather than the server answering."""


def user_agent() -> str:
    return f"pybuild/{VERSION}"


def _env_num(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def attempts() -> int:
    return max(1, int(_env_num("PYBUILD_REGISTRY_RETRIES", 5)))


def retry_budget() -> float:
    return max(0.0, _env_num("PYBUILD_REGISTRY_RETRY_BUDGET", 5.0))


def timeout() -> float:
    return _env_num("PYBUILD_REGISTRY_TIMEOUT", 60.0)


class Backoff:
    """The retry allowance of one operation (a request, a blob download across its Range
    resumes, an upload's PATCHes or closing PUT): $PYBUILD_REGISTRY_RETRIES tries and
    $PYBUILD_REGISTRY_RETRY_BUDGET seconds of sleeping, exponential from FIRST_DELAY unless the
    server asked for a Retry-After."""

    def __init__(self):
        self.limit, self.budget = attempts(), retry_budget()
        self.failures, self.spent = 0, 0.0

    def again(self, delay: float | None = None) -> bool:
        """Count a failure; False when the allowance is used up, else sleep and True."""
        self.failures += 1
        if self.failures >= self.limit or self.spent >= self.budget:
            return False
        if delay is None:
            delay = FIRST_DELAY * 2 ** (self.failures - 1)
        delay = min(delay, self.budget - self.spent)
        time.sleep(delay)
        self.spent += delay
        return True

    def tail(self) -> str:
        return f" after {self.failures} attempts" if self.failures > 1 else ""


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of a URL, lower case, the port filled in for http/https: what
    Authorization is bound to (docker's rule: only to the registry's own scheme and host)."""
    u = urllib.parse.urlsplit(url)
    try:
        port = u.port
    except ValueError:
        return u.scheme.lower(), u.netloc.lower(), None
    if port is None:
        port = {"https": 443, "http": 80}.get(u.scheme.lower())
    return u.scheme.lower(), (u.hostname or "").lower(), port


def allowed_scheme(url: str, verify: bool) -> None:
    """https anywhere; plain http only to a loopback host or when TLS is not verified anyway
    (an insecure registry, --tls-verify=false); anything else is one RegistryError line."""
    u = urllib.parse.urlsplit(url)
    scheme = u.scheme.lower()
    if u.netloc and (scheme == "https" or (scheme == "http" and (not verify or is_loopback(u.netloc)))):
        return
    where = sanitize(u.netloc or url, 80)
    if scheme == "http":
        raise RegistryError(f"{where}: refusing plain http to a host that is not loopback (mark the "
                            "registry insecure in registries.conf, or use --tls-verify=false)")
    raise RegistryError(f"{where}: refusing URL {sanitize(url, 80)!r}: only https and http are spoken")


_tls_lock = threading.Lock()
_tls: dict[tuple[str, bool], ssl.SSLContext] = {}


def tls_context(host: str, verify: bool = True) -> ssl.SSLContext:
    """System CAs plus `certs.d/<host>/*.crt`; client certificate `*.cert` with its `*.key`."""
    with _tls_lock:
        ctx = _tls.get((host, verify))
        if ctx is not None:
            return ctx
        ctx = ssl.create_default_context()
        if not verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        for base in CERT_DIRS:
            d = Path(base) / host
            if not d.is_dir():
                continue
            try:
                for crt in sorted(d.glob("*.crt")):
                    if verify:
                        ctx.load_verify_locations(cafile=str(crt))
                for cert in sorted(d.glob("*.cert")):
                    key = cert.with_suffix(".key")
                    if not key.exists():
                        raise RegistryError(f"{host}: client certificate {cert} has no {key.name} beside it")
                    ctx.load_cert_chain(str(cert), str(key))
            except (ssl.SSLError, OSError) as e:
                raise RegistryError(f"{host}: cannot load TLS files from {d}: {e}") from None
        _tls[(host, verify)] = ctx
        return ctx


Key = tuple[str, str, bool]   # scheme, host, verify


class Pool:
    """Idle keep-alive connections per (scheme, host, verify); a connection is used by one
    request at a time (taken out, put back when its response is fully read)."""

    def __init__(self, per_host: int = PER_HOST):
        self.per_host = per_host
        self._lock = threading.Lock()
        self._idle: dict[Key, list[http.client.HTTPConnection]] = {}

    def get(self, key: Key) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            idle = self._idle.get(key)
            if idle:
                return idle.pop(), True
        scheme, host, verify = key
        if scheme == "https":
            return http.client.HTTPSConnection(host, timeout=timeout(), context=tls_context(host, verify),
                                               blocksize=CHUNK), False
        return http.client.HTTPConnection(host, timeout=timeout(), blocksize=CHUNK), False

    def put(self, key: Key, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self.per_host:
                idle.append(conn)
                return
        conn.close()

    def clear(self) -> None:
        with self._lock:
            conns = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for c in conns:
            c.close()


POOL = Pool()


class Response:
    """A response whose body is read through it; the connection goes back to the pool when the
    body has been read to its end, and is closed when the response is closed before that."""

    def __init__(self, resp: http.client.HTTPResponse, conn, key: Key, url: str, method: str):
        self._resp, self._conn, self._key = resp, conn, key
        self.status, self.reason, self.headers = resp.status, sanitize(resp.reason, 80), resp.headers
        self.url, self.method = url, method
        self.data: bytes | None = None

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.url).netloc

    def read(self, n: int = CHUNK) -> bytes:
        """Up to n bytes; b"" at the end. Raises TransportError when the connection drops early."""
        if self._conn is None:
            return b""
        try:
            data = self._resp.read(n)
        except (OSError, http.client.HTTPException) as e:
            self._discard()
            raise TransportError(f"{self.host}: connection lost while reading: {_describe(e)}") from None
        if not data:
            remaining = self._resp.length
            if remaining:
                self._discard()
                raise TransportError(f"{self.host}: connection closed with {remaining} bytes unread")
            self._finish()
        return data

    def read_all(self, limit: int | None = None) -> bytes:
        parts, total = [], 0
        while True:
            data = self.read(CHUNK)
            if not data:
                return b"".join(parts)
            total += len(data)
            if limit is not None and total > limit:
                self.close()
                raise RegistryError(f"{self.host}: response to {self.method} {_path(self.url)} is larger "
                                    f"than {limit} bytes")
            parts.append(data)

    def _finish(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._resp.will_close or not self._resp.isclosed():
            conn.close()
        else:
            POOL.put(self._key, conn)

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def drain(self, limit: int = 1 << 16) -> None:
        """Read a small rest (keeps the connection), else drop the connection."""
        length = self._resp.length
        if self._conn is not None and (self._resp.chunked or length is None or length > limit):
            self._discard()
        else:
            try:
                self.read_all(limit)
            except RegistryError:
                pass

    def close(self) -> None:
        if self._conn is not None:
            if self._resp.isclosed():
                self._finish()
            else:
                self._discard()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _path(url: str) -> str:
    u = urllib.parse.urlsplit(url)
    return u.path + ("?" + u.query if u.query else "")


def _describe(e: BaseException) -> str:
    if isinstance(e, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(e, http.client.RemoteDisconnected):
        return "connection closed by the server"
    if isinstance(e, http.client.IncompleteRead):
        return f"connection dropped after {len(e.partial)} bytes"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    return sanitize(e, 120) or type(e).__name__     # BadStatusLine carries the server's bytes


def retry_after(resp: Response) -> float | None:
    """Seconds a 429/503's Retry-After asks for (delta or HTTP date), None without one."""
    value = resp.header("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn(resp: Response) -> None:
    """distribution-spec: `Warning: 299 - "text"` headers are shown to the user (sanitized, each
    once, at most WARN_MAX of them), never acted on."""
    for w in resp.headers.get_all("Warning") or ():
        code, _, rest = w.partition(" ")
        if code != "299":
            continue
        text = sanitize(rest.partition(" ")[2].strip().strip('"'))
        with _warned_lock:
            if text in _warned or len(_warned) > WARN_MAX:
                continue
            _warned.add(text)
            if len(_warned) > WARN_MAX:
                text = "more warnings not shown"
        sys.stderr.write(f"pybuild: warning: {sanitize(resp.host, 80)}: {text}\n")


def _send(method: str, url: str, headers: dict, body, verify: bool) -> Response:
    """One request on a pooled connection; a reused connection the server had closed in the
    meantime is replaced by a fresh one once (that does not count as an attempt)."""
    u = urllib.parse.urlsplit(url)
    key = (u.scheme, u.netloc, verify)
    target = u.path + ("?" + u.query if u.query else "")
    while True:
        conn, reused = POOL.get(key)
        data = body() if callable(body) else body
        try:
            conn.request(method, target, body=data, headers=headers)
            resp = conn.getresponse()
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError,
                ConnectionAbortedError):
            conn.close()
            if reused:
                continue
            raise
        except BaseException:
            conn.close()
            raise
        finally:
            if hasattr(data, "close"):
                data.close()
        if method == "HEAD":
            resp.read()
        return Response(resp, conn, key, url, method)


def request(method: str, url: str, *, headers: dict | None = None, body=None, verify: bool = True,
            retry: bool = True, follow: bool = True, what: str | None = None) -> Response:
    """Send a request, following redirects and retrying. `body`: None, bytes, or a callable
    giving a fresh readable each time (set Content-Length yourself then). With retry=False a
    5xx/429 response is returned as it is and a connection failure raises TransportError.
    The caller reads or closes the response."""
    headers = dict(headers or {})
    headers.setdefault("User-Agent", user_agent())
    backoff, redirects = Backoff(), 0
    host = sanitize(urllib.parse.urlsplit(url).netloc, 80)
    what = what or f"{method} {sanitize(_path(url), 80)}"
    allowed_scheme(url, verify)
    while True:
        delay, dropped = None, False
        try:
            resp = _send(method, url, headers, body, verify)
        except ssl.SSLCertVerificationError as e:
            raise RegistryError(
                f"{host}: TLS certificate not trusted ({e.verify_message}); put its CA in "
                f"/etc/containers/certs.d/{host}/ca.crt, or use --tls-verify=false") from None
        except (ConnectionRefusedError, socket.gaierror) as e:
            raise TransportError(f"{host}: cannot connect: {_describe(e)}") from None
        except (http.client.InvalidURL, ValueError) as e:
            # a URL or header value http.client refuses to send (control characters, a bad
            # port), e.g. from a hostile Location or token: not a connection failure
            raise RegistryError(f"{host}: {what}: cannot send it: {sanitize(e, 120)}") from None
        except (OSError, http.client.HTTPException) as e:
            if not retry:
                raise TransportError(f"{host}: {what}: {_describe(e)}") from None
            error, dropped = _describe(e), True
        else:
            _warn(resp)
            if resp.status in REDIRECTS and follow and resp.header("Location"):
                redirects += 1
                if redirects > MAX_REDIRECTS:
                    resp.close()
                    raise RegistryError(f"{host}: {what}: too many redirects")
                new = urllib.parse.urljoin(url, resp.header("Location"))
                resp.drain()
                allowed_scheme(new, verify)
                if origin(new) != origin(url):      # another host, or https -> http
                    headers.pop("Authorization", None)
                if resp.status == 303 and method != "HEAD":
                    method, body = "GET", None
                    headers.pop("Content-Length", None)
                url = new
                continue
            if resp.status not in RETRY_STATUS or not retry:
                return resp
            error = f"{resp.status} {resp.reason}".strip()
            delay = retry_after(resp)
            resp.drain()
        if not backoff.again(delay):
            raise (TransportError if dropped else RegistryError)(f"{host}: {what}: {error}{backoff.tail()}")


def _probe_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


_scheme_lock = threading.Lock()
_schemes: dict[tuple[str, bool], str] = {}


def base_url(host: str, *, insecure: bool = False, tls_verify: bool = True) -> tuple[str, bool]:
    """("scheme://host", verify TLS?) for a registry host. https always, except that a loopback
    or insecure host (or tls_verify=False) that does not speak TLS is spoken to over http; an
    insecure host's certificate is not verified."""
    verify = tls_verify and not insecure
    if not (insecure or not tls_verify or is_loopback(host)):
        return f"https://{host}", verify
    with _scheme_lock:
        scheme = _schemes.get((host, verify))
    if scheme is None:
        # the probe only asks whether the host speaks TLS: no CA bundle loaded for it (50 ms),
        # the real requests verify the certificate with tls_context
        conn = http.client.HTTPSConnection(host, timeout=min(timeout(), 10), context=_probe_context())
        try:
            conn.connect()
            scheme = "https"
        except (ConnectionRefusedError, socket.gaierror) as e:
            raise TransportError(f"{host}: cannot connect: {_describe(e)}") from None
        except (ssl.SSLError, ConnectionResetError, http.client.HTTPException, EOFError):
            scheme = "http"
        except OSError as e:
            raise TransportError(f"{host}: cannot connect: {_describe(e)}") from None
        finally:
            conn.close()
        with _scheme_lock:
            _schemes[(host, verify)] = scheme
    return f"{scheme}://{host}", verify
