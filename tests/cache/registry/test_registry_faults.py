"""What docker-registry cannot be made to do: a tiny loopback server (not a proxy) that speaks
just enough of /v2/ to drop a blob download half way, ignore Range, or answer 503/500, so the
client's Range resume and retries run for real."""
from __future__ import annotations

import hashlib
import http.server
import io
import threading
import time

import pytest

from cache.registry.client import Repository
from cache.registry.config import Endpoint
from cache.registry.errors import RegistryError

BLOB = bytes(range(256)) * 8192          # 2 MiB
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()


class Faulty(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, plan: list[str]):
        self.plan = list(plan)           # one fault per blob request: drop | norange | 503 | 500 | ok
        self.seen: list[tuple[str, str | None]] = []
        self.auth_seen: list[str | None] = []
        self.need_auth, self.redirect_to = False, None
        super().__init__(("127.0.0.1", 0), Handler)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.auth_seen.append(self.headers.get("Authorization"))
        if self.server.need_auth and not self.headers.get("Authorization"):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="faulty"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if self.path == "/v2/":
            return self._reply(200, b"{}")
        if self.server.redirect_to and "/blobs/" in self.path:
            self.send_response(307)
            self.send_header("Location", self.server.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        self.server.seen.append((self.path, self.headers.get("Range")))
        fault = self.server.plan.pop(0) if self.server.plan else "ok"
        if fault in ("503", "500"):
            self.send_response(int(fault))
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        start = 0
        rng = self.headers.get("Range")
        if rng and fault != "norange":
            start = int(rng.removeprefix("bytes=").split("-")[0])
        body = BLOB[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(BLOB) - 1}/{len(BLOB)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if fault == "drop":
            self.wfile.write(body[:len(body) // 3])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return None
        self.wfile.write(body)
        return None

    def _reply(self, status, body):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def faulty():
    servers = []

    def start(plan):
        s = Faulty(plan)
        threading.Thread(target=s.serve_forever, daemon=True).start()
        servers.append(s)
        return s, Repository(Endpoint(f"127.0.0.1:{s.server_address[1]}", "x/y"))
    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def test_dropped_download_resumes_with_range(faulty):
    server, repo = faulty(["drop", "drop", "ok"])
    out = io.BytesIO()
    assert repo.fetch_blob(DIGEST, out, size=len(BLOB)) == len(BLOB)
    assert out.getvalue() == BLOB
    ranges = [r for _, r in server.seen]
    third = len(BLOB) // 3
    assert ranges == [None, f"bytes={third}-", f"bytes={third + (len(BLOB) - third) // 3}-"]


def test_range_ignored_skips_what_was_written(faulty):
    server, repo = faulty(["drop", "norange"])
    out = io.BytesIO()
    repo.fetch_blob(DIGEST, out)
    assert out.getvalue() == BLOB and len(server.seen) == 2


def test_5xx_is_retried_then_reported(faulty, monkeypatch):
    server, repo = faulty(["503", "500", "ok"])
    out = io.BytesIO()
    repo.fetch_blob(DIGEST, out)
    assert out.getvalue() == BLOB and len(server.seen) == 3
    monkeypatch.setenv("PYBUILD_REGISTRY_RETRIES", "3")
    server.plan[:] = ["500"] * 5
    t = time.monotonic()
    with pytest.raises(RegistryError) as e:
        repo.fetch_blob(DIGEST, io.BytesIO())
    assert str(e.value) == f"{repo.host}: GET blob: 500 Internal Server Error after 3 attempts"
    assert time.monotonic() - t < 2


def test_drops_forever_give_up(faulty, monkeypatch):
    monkeypatch.setenv("PYBUILD_REGISTRY_RETRIES", "3")
    server, repo = faulty(["drop"] * 10)
    with pytest.raises(RegistryError, match="connection closed with .* bytes unread .3 tries"):
        repo.fetch_blob(DIGEST, io.BytesIO())


def test_redirect_to_another_host_drops_authorization(faulty, isolated_home):
    import base64
    import json
    storage, _ = faulty([])
    front, repo = faulty([])
    front.need_auth = True
    front.redirect_to = f"http://localhost:{storage.server_address[1]}/storage/blob?sig=abc"
    cfg = isolated_home / ".docker" / "config.json"
    cfg.parent.mkdir()
    cfg.write_text(json.dumps({"auths": {repo.host: {"auth": base64.b64encode(b"u:p").decode()}}}))
    out = io.BytesIO()
    repo.fetch_blob(DIGEST, out)
    assert out.getvalue() == BLOB
    assert front.auth_seen[-1] == "Basic " + base64.b64encode(b"u:p").decode()
    assert storage.seen == [("/storage/blob?sig=abc", None)] and storage.auth_seen == [None]
