"""Real registries for tests: Debian's docker-registry (distribution 2.8) on a free loopback
port with filesystem storage, optionally behind htpasswd Basic auth or behind token auth served
by a small token service of our own (RS256 JWTs signed by the openssl CLI, the signing cert in
the JWT's x5c and in the registry's rootcertbundle).

    with run_registry(tmp_dir, auth="token", users={"alice": "pw"}) as reg:
        reg.host  # "127.0.0.1:PORT"

The registry process dies with the test process (PR_SET_PDEATHSIG) and is stopped on exit."""
from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REGISTRY_BIN = "/usr/bin/docker-registry"
NO_REGISTRY = (None if os.path.exists(REGISTRY_BIN) and shutil.which("htpasswd") and shutil.which("openssl")
               else "needs Debian's docker-registry, htpasswd and openssl (./install.sh --test installs "
                    "them: apt-get install docker-registry apache2-utils openssl)")
SERVICE = "pybuild-test-registry"
ISSUER = "pybuild-test-issuer"


def die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the test process dies, however it dies."""
    from runtime import kernel

    kernel.prctl(kernel.PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class SigningKey:
    """An RSA key and its self-signed certificate, made with the openssl CLI."""

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self.key, self.cert = directory / "token.key", directory / "token.crt"
        if not self.cert.exists():
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3",
                            "-subj", "/CN=pybuild-test-token", "-keyout", str(self.key), "-out",
                            str(self.cert)], check=True, capture_output=True)
        self.der = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-outform", "DER"],
                                  check=True, capture_output=True).stdout

    def jwt(self, claims: dict) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self.der).decode()]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)],
                             input=signing_input.encode(), check=True, capture_output=True).stdout
        return f"{signing_input}.{_b64url(sig)}"


@dataclass
class TokenService:
    """GET /token (docker's token protocol, Basic or anonymous) and POST /token (OAuth2
    password and refresh_token grants). Users get every action they ask for; anonymous
    callers get pull on repositories under public/ only. `requests` records (method, user,
    scopes) of every call."""
    key: SigningKey
    users: dict[str, str]
    expires_in: int = 300
    requests: list = field(default_factory=list)
    refresh_tokens: dict[str, str] = field(default_factory=dict)
    server: http.server.ThreadingHTTPServer | None = None

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/token"

    def token(self, user: str | None, scopes: list[str]) -> dict:
        access = []
        for s in scopes:
            kind, _, rest = s.partition(":")
            name, _, actions = rest.rpartition(":")
            acts = [a for a in actions.split(",") if a]
            if user is None:
                acts = [a for a in acts if a == "pull"] if name.startswith("public/") else []
            if kind == "repository" and name:
                access.append({"type": "repository", "name": name, "actions": acts})
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": user or "", "aud": SERVICE, "exp": now + self.expires_in,
                  "nbf": now - 10, "iat": now, "jti": secrets.token_hex(8), "access": access}
        tok = self.key.jwt(claims)
        return {"token": tok, "access_token": tok, "expires_in": self.expires_in,
                "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))}

    def start(self) -> None:
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _basic_user(self) -> tuple[bool, str | None]:
                h = self.headers.get("Authorization", "")
                if not h.startswith("Basic "):
                    return True, None
                user, _, pw = base64.b64decode(h[6:]).decode().partition(":")
                return service.users.get(user) == pw, user

            def do_GET(self):
                u = urllib.parse.urlsplit(self.path)
                q = urllib.parse.parse_qs(u.query)
                ok, user = self._basic_user()
                scopes = q.get("scope", [])
                service.requests.append(("GET", user, scopes))
                if u.path != "/token":
                    return self._send(404, {"details": "not found"})
                if not ok:
                    return self._send(401, {"details": "incorrect username or password"})
                self._send(200, service.token(user, scopes))

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                grant = form.get("grant_type", [""])[0]
                scopes = " ".join(form.get("scope", [])).split()
                user = None
                if grant == "password":
                    user = form.get("username", [""])[0]
                    if service.users.get(user) != form.get("password", [""])[0]:
                        user = None
                elif grant == "refresh_token":
                    user = service.refresh_tokens.get(form.get("refresh_token", [""])[0])
                service.requests.append(("POST", user, scopes))
                if user is None:
                    return self._send(401, {"error": "invalid_grant"})
                body = service.token(user, scopes)
                rt = "rt-" + secrets.token_hex(8)
                service.refresh_tokens[rt] = user
                body["refresh_token"] = rt
                self._send(200, body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def identity_token(self, user: str) -> str:
        """A refresh token for `user`, as a login through OAuth2 would store it."""
        rt = "rt-" + secrets.token_hex(8)
        self.refresh_tokens[rt] = user
        return rt


@dataclass
class Registry:
    host: str                   # 127.0.0.1:PORT
    storage: Path
    auth: str | None = None     # None | "htpasswd" | "token"
    user: str | None = None
    password: str | None = None
    tokens: TokenService | None = None
    log: Path | None = None
    pid: int | None = None      # the docker-registry process
    ca: Path | None = None      # with tls=True: the self-signed certificate it serves

    @property
    def url(self) -> str:
        return f"{'https' if self.ca else 'http'}://{self.host}"

    def endpoint(self, path: str):
        from cache.registry.config import Endpoint
        return Endpoint(self.host, path)


def self_signed(directory: Path) -> tuple[Path, Path]:
    """(certificate, key) for 127.0.0.1, made by the openssl CLI."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "tls.crt", directory / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def _config(port: int, storage: Path, auth: str, request_log: bool = False, tls: str = "") -> str:
    log = "  level: info\n" if request_log else "  level: warn\n  accesslog:\n    disabled: true\n"
    return (f"version: 0.1\nlog:\n{log}"
            f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
            f"  maintenance:\n    uploadpurging:\n      enabled: false\n"
            f"http:\n  addr: 127.0.0.1:{port}\n  secret: pybuild-test-{secrets.token_hex(8)}\n{tls}"
            f"{auth}")


@contextlib.contextmanager
def run_registry(workdir, *, auth: str | None = None, users: dict[str, str] | None = None,
                 key: SigningKey | None = None, token_expires_in: int = 300,
                 request_log: bool = False, tls: bool = False):
    """A running registry (see the module doc). auth: None, "htpasswd" or "token"; users:
    {name: password} (default {"pybuild": "s3cret"}); key: a SigningKey to reuse; request_log:
    the registry logs every request (method, uri, remote address) to .log; tls: serve https
    with a self-signed certificate (.ca)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    users = dict(users or {"pybuild": "s3cret"})
    storage = workdir / "storage"
    storage.mkdir(exist_ok=True)
    tokens = None
    auth_yaml = ""
    if auth == "htpasswd":
        lines = [subprocess.run(["htpasswd", "-Bbn", u, p], check=True, capture_output=True, text=True)
                 .stdout.strip() for u, p in users.items()]
        (workdir / "htpasswd").write_text("\n".join(lines) + "\n")
        auth_yaml = f"auth:\n  htpasswd:\n    realm: pybuild-test\n    path: {workdir / 'htpasswd'}\n"
    elif auth == "token":
        tokens = TokenService(key or SigningKey(workdir / "keys"), users, token_expires_in)
        tokens.start()
        auth_yaml = (f"auth:\n  token:\n    realm: {tokens.realm}\n    service: {SERVICE}\n"
                     f"    issuer: {ISSUER}\n    rootcertbundle: {tokens.key.cert}\n")
    elif auth is not None:
        raise ValueError(f"auth must be None, 'htpasswd' or 'token', not {auth!r}")
    ca, tls_yaml = None, ""
    if tls:
        ca, tls_key = self_signed(workdir / "tls")
        tls_yaml = f"  tls:\n    certificate: {ca}\n    key: {tls_key}\n"
    log_path = workdir / "registry.log"
    proc = None
    try:
        for _ in range(5):                       # a port taken between free_port and bind: retry
            port = free_port()
            conf = workdir / "config.yml"
            conf.write_text(_config(port, storage, auth_yaml, request_log, tls_yaml))
            log = open(log_path, "wb")  # noqa: SIM115 - closed right after Popen
            proc = subprocess.Popen([REGISTRY_BIN, "serve", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, preexec_fn=die_with_parent)
            log.close()
            if _wait_ready(proc, port, tls=tls):
                break
            stop(proc)
            proc = None
        if proc is None:
            raise RuntimeError(f"docker-registry did not start: {log_path.read_text()[-800:]}")
        first = next(iter(users.items())) if auth else (None, None)
        yield Registry(f"127.0.0.1:{port}", storage, auth, first[0], first[1], tokens, log_path, proc.pid,
                       ca)
    finally:
        if proc is not None:
            stop(proc)
        if tokens is not None:
            tokens.stop()


def _wait_ready(proc: subprocess.Popen, port: int, timeout: float = 20, tls: bool = False) -> bool:
    import ssl
    ctx = ssl._create_unverified_context() if tls else None  # a readiness probe only
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{'https' if tls else 'http'}://127.0.0.1:{port}/v2/",
                                        timeout=2, context=ctx):
                return True
        except urllib.error.HTTPError as e:
            if e.code == 401:
                return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def stop(proc: subprocess.Popen, wait: float = 10) -> None:
    """SIGTERM a server the tests started, SIGKILL it after `wait` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
