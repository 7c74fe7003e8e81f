"""What docker-registry cannot be made to do: a tiny loopback server (not a proxy) that speaks
just enough of /v2/ to drop a blob download half way, ignore Range, or answer 503/500, so the
client's Range resume and retries run for real; and a hostile one (`hook`: answers of a test's
own) that sends uploads and tokens elsewhere, sends junk tokens, escapes and huge messages."""
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

    def __init__(self, plan: list[str], host: str = "127.0.0.1"):
        self.plan = list(plan)           # one fault per blob request: drop | norange | 503 | 500 | ok
        self.seen: list[tuple[str, str | None]] = []
        self.auth_seen: list[str | None] = []
        self.requests: list[tuple[str, str, str | None]] = []     # method, path, Authorization
        self.need_auth, self.redirect_to = False, None
        self.challenge = 'Basic realm="faulty"'
        self.hook = None                 # hook(handler) -> True when it has answered the request
        super().__init__((host, 0), Handler)

    @property
    def host(self) -> str:
        return "{}:{}".format(*self.server_address)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _prelude(self) -> bool:
        """Record the request, read its body; True when a hook or the auth check answered it."""
        self.server.requests.append((self.command, self.path, self.headers.get("Authorization")))
        self.body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.server.hook is not None and self.server.hook(self):
            return True
        if self.server.need_auth and not self.headers.get("Authorization"):
            self.reply(401, headers={"WWW-Authenticate": self.server.challenge})
            return True
        return False

    def reply(self, status, body=b"", headers=None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        if not self._prelude():
            self.reply(404)

    do_PUT = do_PATCH = do_DELETE = do_POST

    def do_GET(self):
        self.server.auth_seen.append(self.headers.get("Authorization"))
        if self._prelude():
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

    def start(plan, host="127.0.0.1"):
        s = Faulty(plan, host)
        threading.Thread(target=s.serve_forever, daemon=True).start()
        servers.append(s)
        return s, Repository(Endpoint(s.host, "x/y"), push=True)
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


def test_drops_are_bounded_by_the_retry_budget(faulty, monkeypatch):
    monkeypatch.setenv("PYBUILD_REGISTRY_RETRIES", "8")
    monkeypatch.setenv("PYBUILD_REGISTRY_RETRY_BUDGET", "0.5")
    server, repo = faulty(["drop"] * 10)
    t = time.monotonic()
    with pytest.raises(RegistryError, match=r"\(3 tries,"):     # slept 0.2 + 0.3: budget spent
        repo.fetch_blob(DIGEST, io.BytesIO())
    assert time.monotonic() - t < 2


# ---- a hostile registry -------------------------------------------------------------------

def basic_login(home, host, user="u", password="p"):
    import base64
    import json
    cfg = home / ".docker" / "config.json"
    cfg.parent.mkdir(exist_ok=True)
    secret = base64.b64encode(f"{user}:{password}".encode()).decode()
    cfg.write_text(json.dumps({"auths": {host: {"auth": secret}}}))
    return "Basic " + secret


def small_blob(tmp_path):
    data = b"hello hostile world"
    p = tmp_path / "blob"
    p.write_bytes(data)
    return p, "sha256:" + hashlib.sha256(data).hexdigest(), len(data)


def upload_elsewhere(location):
    """A hook answering the upload POST with Location: `location`."""
    def hook(h):
        if h.command == "POST" and "/blobs/uploads/" in h.path and h.headers.get("Authorization"):
            h.reply(202, headers={"Location": location})
            return True
        return False
    return hook


def test_upload_location_on_another_host_gets_no_credentials(faulty, isolated_home, tmp_path):
    other, _ = faulty([], host="127.0.0.2")
    other.hook = lambda h: h.command == "PUT" and (h.reply(201) or True)
    front, repo = faulty([])
    front.need_auth = True
    front.hook = upload_elsewhere(f"http://{other.host}/upload/abc?state=1")
    basic = basic_login(isolated_home, repo.host)
    p, digest, size = small_blob(tmp_path)
    repo.push_blob(digest, size, p)
    assert ("POST", "/v2/x/y/blobs/uploads/", basic) in front.requests
    assert other.requests == [("PUT", f"/upload/abc?state=1&digest={digest}", None)]


@pytest.mark.parametrize("location", ["http://pybuild-test.invalid/upload/abc", "ftp://127.0.0.1/x"])
def test_upload_location_over_plain_http_to_a_remote_host_is_refused(faulty, isolated_home, tmp_path,
                                                                      location):
    front, repo = faulty([])
    front.need_auth = True
    front.hook = upload_elsewhere(location)
    basic_login(isolated_home, repo.host)
    p, digest, size = small_blob(tmp_path)
    with pytest.raises(RegistryError, match="refusing (plain http|URL)") as e:
        repo.push_blob(digest, size, p)
    assert "\n" not in str(e.value)


def test_auth_follows_origin_not_host_only():
    from cache.registry import http
    assert http.origin("https://Reg.example/v2/x") == http.origin("https://reg.example:443/v2/y")
    assert http.origin("https://reg.example/v2/") != http.origin("http://reg.example/v2/")
    assert http.origin("https://reg.example/") != http.origin("https://reg.example:5000/")


def test_token_realm_over_plain_http_to_a_remote_host_is_refused(faulty, isolated_home):
    front, repo = faulty([])
    front.need_auth = True
    front.challenge = 'Bearer realm="http://pybuild-test.invalid/token",service="s"'
    basic_login(isolated_home, repo.host)
    with pytest.raises(RegistryError, match="pybuild-test.invalid: refusing plain http"):
        repo.get_manifest("latest")


def test_challenge_from_a_redirect_target_is_ignored(faulty, isolated_home):
    from cache.registry.errors import Unauthorized
    cdn, _ = faulty([])
    cdn.need_auth = True
    cdn.challenge = f'Bearer realm="http://{cdn.host}/token",service="cdn"'
    front, repo = faulty([])
    front.redirect_to = f"http://{cdn.host}/blob?sig=1"
    basic_login(isolated_home, repo.host)
    with pytest.raises(Unauthorized):
        repo.fetch_blob(DIGEST, io.BytesIO())
    assert [p for _, p, _ in cdn.requests] == ["/blob?sig=1"]       # its realm never asked


def token_server(front, token_body: bytes):
    front.need_auth = True
    front.challenge = f'Bearer realm="http://{front.host}/token",service="s"'

    def hook(h):
        if h.path.startswith("/token"):
            h.reply(200, token_body, {"Content-Type": "application/json"})
            return True
        return False
    front.hook = hook


@pytest.mark.parametrize("body", [b'{"token": 123}', b'{"token": ["a"]}', b'{"token": "abc\\r\\nX-Evil: 1"}',
                                  b'{"token": "a b"}', b'{"access_token": {"x": 1}}'])
def test_junk_tokens_are_one_line_errors(faulty, isolated_home, body):
    front, repo = faulty([])
    token_server(front, body)
    with pytest.raises(RegistryError, match="token server gave") as e:
        repo.get_manifest("latest")
    assert "\n" not in str(e.value)


def test_unsendable_location_is_one_error_not_a_retry(faulty, isolated_home, tmp_path):
    front, repo = faulty([])
    front.hook = lambda h: h.command == "POST" and (h.reply(202, headers={"Location": "/up load"}) or True)
    p, digest, size = small_blob(tmp_path)
    with pytest.raises(RegistryError, match="cannot send it: URL can't contain control characters"):
        repo.push_blob(digest, size, p)
    assert [m for m, _, _ in front.requests].count("POST") == 1


HOSTILE = "\x1b[31mred\x1b]0;title\x07\r\nX-Injected: yes " + "A" * 70000


def test_registry_text_is_sanitized(faulty, isolated_home, capfd, monkeypatch):
    import json

    from cache.registry import http
    monkeypatch.setattr(http, "_warned", set())
    front, repo = faulty([])
    n = [0]

    def hook(h):
        if "/manifests/" in h.path:
            n[0] += 1
            body = json.dumps({"errors": [{"code": "DENIED\x1b[2J", "message": HOSTILE}]}).encode()
            h.reply(400, body, {"Warning": f'299 - "{n[0]} {HOSTILE[:20000]}"'})
            return True
        return False
    front.hook = hook
    for _ in range(3 * http.WARN_MAX):
        with pytest.raises(RegistryError) as e:
            repo.get_manifest("latest")
        msg = str(e.value)
        assert "\x1b" not in msg and "\n" not in msg and "\r" not in msg and len(msg) < 400
    err = capfd.readouterr().err
    assert "\x1b" not in err and "\r" not in err
    lines = err.splitlines()
    assert len(lines) == http.WARN_MAX + 1 and lines[-1].endswith("more warnings not shown")
    assert all(len(line) < 300 for line in lines)


def test_hostile_status_line_and_media_type_are_sanitized(faulty, isolated_home, monkeypatch):
    import json
    monkeypatch.setenv("PYBUILD_REGISTRY_RETRIES", "1")
    front, repo = faulty([])

    def hook(h):
        if h.path.endswith("/manifests/status"):
            h.wfile.write(b"HTTP/1.1 2\x1b[2J00 OK\r\n\r\n")
            h.close_connection = True
            return True
        if h.path.endswith("/manifests/type"):
            h.reply(200, json.dumps({"schemaVersion": 2, "mediaType": "\x1b]0;x\x07evil\n" * 50}).encode())
            return True
        return False
    front.hook = hook
    for ref in ("status", "type"):
        with pytest.raises(RegistryError) as e:
            repo.get_manifest(ref)
        assert "\x1b" not in str(e.value) and "\n" not in str(e.value) and len(str(e.value)) < 400, ref
