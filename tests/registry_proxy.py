"""A fault-injecting HTTP proxy in front of a real registry, for the registry client's tests.

    proxy = FaultProxy("http://127.0.0.1:5000").start()     # or `with FaultProxy(...) as proxy:`
    proxy.fail(500, times=2, method="GET", path="/manifests/")
    ... point the client at proxy.host ("127.0.0.1:PORT") ...
    assert proxy.requests("GET", "/blobs/")[-1].range == "bytes=100-"
    proxy.stop()

It answers on its own 127.0.0.1 port and forwards everything else to the upstream unchanged
(bodies streamed both ways in CHUNK pieces: constant memory; request bodies by Content-Length
or chunked; upstream keep-alive reused per client connection; chunked upstream responses
re-chunked), rewriting `Location` headers that point at the upstream to point at the proxy.
Rules match by method and a regex searched in the path (query included); the first live rule
that matches a request fires, and rules with `times` expire after firing that many times.
Every request is logged (`proxy.log`, `proxy.requests()`), fault or not.

Put it in front of a registry from `registry_fixture.run_registry(dir)`. A plain module (not a
fixture) so bench/ scripts can use it too.
"""
from __future__ import annotations

import http.client
import http.server
import json
import re
import select
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

CHUNK = 1 << 16
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
                        "expect"})


@dataclass
class Entry:
    """One request as the proxy saw it: `headers` has lower-case names and Authorization reduced
    to its scheme (no secrets in logs); `auth` is that scheme ("Basic", "Bearer") or None;
    `status` is what the client got (0 while in flight, or when the connection was dropped
    before any status); `fault` names the rule that fired; `sent` counts response body bytes
    (updated before each write, so it is final once the client has the whole body);
    `received` the request body bytes."""
    method: str
    path: str
    headers: dict[str, str]
    status: int = 0
    fault: str | None = None
    sent: int = 0
    received: int = 0
    time: float = field(default_factory=time.monotonic)

    @property
    def auth(self) -> str | None:
        return self.headers.get("authorization")

    @property
    def range(self) -> str | None:
        return self.headers.get("range")


@dataclass
class Rule:
    kind: str                    # "status" | "corrupt" | "drop"
    method: str | None
    path: re.Pattern
    times: int | None            # None: forever
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    after_upstream: bool = False
    offset: int = 0              # corrupt: byte offset in the blob; drop: body bytes before the cut
    fired: int = 0

    @property
    def name(self) -> str:
        return f"{self.kind} {self.status}" if self.kind == "status" else self.kind

    def matches(self, method: str, path: str) -> bool:
        return ((self.times is None or self.fired < self.times)
                and (self.method is None or self.method == method) and bool(self.path.search(path)))


def _blob_path(digest: str) -> str:
    return "/blobs/" + re.escape(digest) + "$"


class FaultProxy:
    """See the module docstring. Thread-safe; rules may change while clients run."""

    def __init__(self, upstream: str):
        u = urllib.parse.urlsplit(upstream if "://" in upstream else "http://" + upstream)
        if u.scheme not in ("http", "https"):
            raise ValueError(f"upstream must be http(s)://host:port, not {upstream!r}")
        self.upstream_scheme, self.upstream_host = u.scheme, u.netloc
        self.upstream = f"{u.scheme}://{u.netloc}"
        self.log: list[Entry] = []
        self._rules: list[Rule] = []
        self._delay = 0.0
        self._rate: float | None = None
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self.errors: list[str] = []     # tracebacks of the proxy's own failures (not printed)

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(_Handler):
            pass
        Handler.proxy = proxy
        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.proxy = self
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy",
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def cut(self) -> None:
        """Reset every client connection open now (a network that drops them)."""
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self) -> None:
        """Stop listening and cut every open client connection (their threads then end)."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self.cut()
        self._thread.join(5)
        deadline = time.monotonic() + 5     # the handlers end (and record any error) first
        while self._conns and time.monotonic() < deadline:
            time.sleep(0.01)
        self._server = None

    def __enter__(self) -> FaultProxy:
        return self if self._server else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def host(self) -> str:
        """"127.0.0.1:PORT": the registry name a client uses to go through the proxy."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    # -- rules --------------------------------------------------------------------------------

    def _add(self, rule: Rule) -> Rule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def fail(self, status: int = 500, *, times: int | None = 1, method: str | None = None,
             path: str = "", headers: dict[str, str] | None = None,
             after_upstream: bool = False) -> Rule:
        """Answer `status` (a small registry-style JSON error body) `times` times to requests
        matching method / path regex. The request is not forwarded unless `after_upstream`: then
        the upstream handles it (e.g. a PATCH really lands) and its answer is replaced."""
        return self._add(Rule("status", method, re.compile(path), times, status=status,
                              headers=dict(headers or {}), after_upstream=after_upstream))

    def throttle(self, *, times: int | None = 1, retry_after: int = 1, method: str | None = None,
                 path: str = "") -> Rule:
        """429 Too Many Requests with `Retry-After: retry_after`, `times` times."""
        return self.fail(429, times=times, method=method, path=path,
                         headers={"Retry-After": str(retry_after)})

    def unauthorized(self, *, times: int | None = 1, method: str | None = None,
                     path: str = "") -> Rule:
        """401 with the upstream's own WWW-Authenticate challenge for that request (asked of the
        upstream without credentials), so a client must refresh its token or re-send its
        credentials. An upstream without auth yields `Basic realm="fault-proxy"`."""
        return self._add(Rule("status", method, re.compile(path), times, status=401))

    def corrupt_blob(self, digest: str, *, times: int | None = None, offset: int = 0) -> Rule:
        """Flip one byte (at `offset` of the blob, when a response covers it; Range responses
        honoured) of GETs of blob `digest`: same length, wrong digest. Forever unless `times`."""
        return self._add(Rule("corrupt", "GET", re.compile(_blob_path(digest)), times,
                              offset=offset))

    def drop_after(self, nbytes: int, *, digest: str | None = None, path: str | None = None,
                   times: int | None = 1) -> Rule:
        """Cut the client connection after `nbytes` of the response body of a blob GET (digest
        given, else any blob, or `path` regex): the headers promised more. Once by default."""
        pattern = _blob_path(digest) if digest else (path or "/blobs/sha256:[0-9a-f]{64}$")
        return self._add(Rule("drop", "GET", re.compile(pattern), times, offset=nbytes))

    def slow(self, delay: float = 0.0, *, rate: float | None = None) -> None:
        """A slow registry: wait `delay` seconds before every response; send bodies at most
        `rate` bytes/s (None: unlimited). slow(0) turns it off."""
        with self._lock:
            self._delay, self._rate = delay, rate

    def clear(self) -> None:
        """Remove every rule and the slowness; the log stays (see reset_log)."""
        with self._lock:
            self._rules.clear()
            self._delay, self._rate = 0.0, None

    def reset_log(self) -> None:
        with self._lock:
            self.log.clear()

    def requests(self, method: str | None = None, path: str = "") -> list[Entry]:
        """Logged requests (in arrival order) matching method and path regex."""
        rx = re.compile(path)
        with self._lock:
            return [e for e in self.log
                    if (method is None or e.method == method) and rx.search(e.path)]

    def _pick(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for r in self._rules:
                if r.matches(method, path):
                    r.fired += 1
                    return r
        return None

    def _record(self, entry: Entry) -> None:
        with self._lock:
            self.log.append(entry)

    def _rewrite_location(self, value: str) -> str:
        if value.startswith(self.upstream):
            return self.url + value[len(self.upstream):]
        return value


def _error_body(status: int) -> bytes:
    code = {401: "UNAUTHORIZED", 404: "NAME_UNKNOWN", 429: "TOOMANYREQUESTS"}.get(status, "UNKNOWN")
    return json.dumps({"errors": [{"code": code, "message": "injected by FaultProxy",
                                   "detail": None}]}).encode()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    proxy: FaultProxy

    def handle_error(self, request, client_address) -> None:
        """A handler's unexpected exception: kept in proxy.errors (a test may assert it is
        empty) rather than printed into the test's output."""
        import traceback

        with self.proxy._lock:
            self.proxy.errors.append(traceback.format_exc())


class _Dropped(Exception):
    """The client connection is gone (or was cut on purpose)."""


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    proxy: FaultProxy
    _up: http.client.HTTPConnection | None = None

    def log_message(self, format, *args):
        pass

    def setup(self):
        super().setup()
        with self.proxy._lock:
            self.proxy._conns.add(self.connection)

    def handle(self):
        try:
            super().handle()
        except (ConnectionError, TimeoutError):
            pass    # the client went away between requests (a reset while idle, say)

    def finish(self):
        try:
            super().finish()
        finally:
            with self.proxy._lock:
                self.proxy._conns.discard(self.connection)
            if self._up is not None:
                self._up.close()

    def __getattr__(self, name):
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    # -- one request --------------------------------------------------------------------------

    def _handle(self):
        p = self.proxy
        headers = {k.lower(): v for k, v in self.headers.items()}
        if "authorization" in headers:
            headers["authorization"] = headers["authorization"].split(" ", 1)[0]
        entry = Entry(self.command, self.path, headers)
        p._record(entry)
        rule = p._pick(self.command, self.path)
        if rule is not None:
            entry.fault = rule.name
        try:
            if rule is not None and rule.kind == "status" and not rule.after_upstream:
                entry.received = self._drain_body()
                self._answer_fault(rule, entry)
            else:
                self._forward(rule, entry)
        except (_Dropped, ConnectionError, TimeoutError, OSError):
            self.close_connection = True
            if self._up is not None:
                self._up.close()
                self._up = None

    def _body_chunks(self):
        """The request body, streamed: by Content-Length, or decoded from chunked."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    raise _Dropped
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                while size:
                    b = self.rfile.read(min(size, CHUNK))
                    if not b:
                        raise _Dropped
                    size -= len(b)
                    yield b
                self.rfile.readline(8)
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left:
                b = self.rfile.read(min(left, CHUNK))
                if not b:
                    raise _Dropped
                left -= len(b)
                yield b

    def _has_body(self) -> bool:
        return (int(self.headers.get("Content-Length") or 0) > 0
                or "chunked" in self.headers.get("Transfer-Encoding", "").lower())

    def _drain_body(self) -> int:
        return sum(len(b) for b in self._body_chunks())

    def _upstream(self) -> http.client.HTTPConnection:
        """This client connection's upstream connection, reopened when the upstream closed it
        (a readable idle socket means EOF)."""
        up = self._up
        if up is not None and up.sock is not None:
            r, _, _ = select.select([up.sock], [], [], 0)
            if r:
                up.close()
        if up is None:
            cls = (http.client.HTTPSConnection if self.proxy.upstream_scheme == "https"
                   else http.client.HTTPConnection)
            up = self._up = cls(self.proxy.upstream_host, timeout=120)
        return up

    def _send_upstream(self, method: str, path: str) -> tuple[http.client.HTTPResponse, int]:
        up = self._upstream()
        up.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        up.putheader("Host", self.proxy.upstream_host)
        for k, v in self.headers.items():
            if k.lower() not in HOP_BY_HOP and k.lower() != "host":
                up.putheader(k, v)
        chunked = self._has_body() and "Content-Length" not in self.headers
        if chunked:
            up.putheader("Transfer-Encoding", "chunked")
        up.endheaders()
        n = 0
        for b in self._body_chunks():
            n += len(b)
            up.send(b"%x\r\n%s\r\n" % (len(b), b) if chunked else b)
        if chunked:
            up.send(b"0\r\n\r\n")
        return up.getresponse(), n

    def _probe(self, method: str, path: str) -> tuple[int, str | None]:
        """(status, WWW-Authenticate) of `method path` sent to the upstream without credentials
        or body, on a connection of its own."""
        cls = (http.client.HTTPSConnection if self.proxy.upstream_scheme == "https"
               else http.client.HTTPConnection)
        c = cls(self.proxy.upstream_host, timeout=30)
        try:
            c.request(method, path, headers={"Content-Length": "0"} if method not in (
                "GET", "HEAD") else {})
            r = c.getresponse()
            r.read()
            return r.status, r.getheader("WWW-Authenticate")
        except (OSError, http.client.HTTPException):
            return 0, None
        finally:
            c.close()

    def _challenge(self) -> str:
        """The upstream's WWW-Authenticate for this request, as it answers it without
        credentials. GET /v2/ first: an upstream without auth is never sent the request itself
        (it would act on it); else the same path (HEAD for a GET; the same method with an empty
        body otherwise: rejected before it acts) for the challenge's scope. DELETE: /v2/'s."""
        status, value = self._probe("GET", "/v2/")
        if status != 401 or not value:
            return 'Basic realm="fault-proxy"'
        if self.command != "DELETE":
            s2, v2 = self._probe("HEAD" if self.command == "GET" else self.command, self.path)
            if s2 == 401 and v2:
                return v2
        return value

    def _answer_fault(self, rule: Rule, entry: Entry) -> None:
        headers = dict(rule.headers)
        if rule.status == 401 and not any(k.lower() == "www-authenticate" for k in headers):
            headers["WWW-Authenticate"] = self._challenge()
        body = b"" if self.command == "HEAD" else _error_body(rule.status)
        self._pause()
        self.send_response(rule.status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(_error_body(rule.status))))
        self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        entry.status, entry.sent = rule.status, len(body)
        self.wfile.write(body)
        self.wfile.flush()

    def _pause(self) -> None:
        if self.proxy._delay:
            time.sleep(self.proxy._delay)

    def _forward(self, rule: Rule | None, entry: Entry) -> None:
        resp, entry.received = self._send_upstream(self.command, self.path)
        if rule is not None and rule.kind == "status":   # after_upstream
            resp.read()
            self._after_response(resp)
            self._answer_fault(rule, entry)
            return
        self._pause()
        self.send_response_only(resp.status, resp.reason)
        length = resp.getheader("Content-Length")
        no_body = self.command == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200
        for k, v in resp.getheaders():
            lk = k.lower()
            if lk in HOP_BY_HOP:
                continue
            if lk == "location":
                v = self.proxy._rewrite_location(v)
            self.send_header(k, v)
        chunked = not no_body and length is None
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        entry.status = resp.status
        self.end_headers()
        if no_body:
            resp.read()
            self._after_response(resp)
            self.wfile.flush()
            return
        start = 0
        cr = resp.getheader("Content-Range")
        if cr and (m := re.match(r"bytes (\d+)-", cr)):
            start = int(m.group(1))
        corrupt_at = None
        if rule is not None and rule.kind == "corrupt":
            corrupt_at = rule.offset - start
        cut = rule.offset if rule is not None and rule.kind == "drop" else None
        rate = self.proxy._rate
        t0 = time.monotonic()
        while True:
            b = resp.read(CHUNK)
            if not b:
                break
            if corrupt_at is not None and 0 <= corrupt_at - entry.sent < len(b):
                i = corrupt_at - entry.sent
                b = b[:i] + bytes([b[i] ^ 0xFF]) + b[i + 1:]
            if cut is not None and entry.sent + len(b) >= cut:
                b = b[:cut - entry.sent]
                entry.sent += len(b)
                self.wfile.write(b"%x\r\n%s" % (len(b), b) if chunked and b else b)
                self.wfile.flush()
                self._up.close()
                self._up = None
                self.connection.shutdown(socket.SHUT_RDWR)
                raise _Dropped
            entry.sent += len(b)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(b), b) if chunked else b)
            if rate:
                ahead = entry.sent / rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        self._after_response(resp)

    def _after_response(self, resp: http.client.HTTPResponse) -> None:
        if resp.will_close and self._up is not None:
            self._up.close()
            self._up = None
