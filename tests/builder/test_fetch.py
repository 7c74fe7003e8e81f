"""builder.fetch: ADD <url> against a real HTTP server on 127.0.0.1 started by the test."""

from __future__ import annotations

import hashlib
import http.server
import os
import stat
import threading
from email.utils import formatdate

import pytest

from builder.errors import BuildError
from builder.fetch import fetch_url, url_filename

BODY = b"payload " * 1000
LAST_MOD = 1_600_000_000


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/missing"):
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        if not self.path.startswith("/nodate"):
            self.send_header("Last-Modified", formatdate(LAST_MOD, usegmt=True))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()
    t.join()


def test_url_filename():
    assert url_filename("https://x.org/a/b/tool.tar.gz?x=1") == "tool.tar.gz"
    assert url_filename("https://x.org/") == "__unnamed__"
    assert url_filename("https://x.org") == "__unnamed__"


def test_download_name_mode_mtime(server, tmp_path):
    got = fetch_url(server + "/dir/file.bin", tmp_path)
    assert got == tmp_path / "file.bin"
    assert got.read_bytes() == BODY
    st = os.stat(got)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_mtime == LAST_MOD
    assert fetch_url(server + "/", tmp_path).name == "__unnamed__"
    assert sorted(os.listdir(tmp_path)) == ["__unnamed__", "file.bin"]


def test_checksum_verified(server, tmp_path):
    good = "sha256:" + hashlib.sha256(BODY).hexdigest()
    assert fetch_url(server + "/nodate/f", tmp_path, checksum=good).read_bytes() == BODY
    bad = "sha256:" + "0" * 64
    with pytest.raises(BuildError) as e:
        fetch_url(server + "/g", tmp_path, checksum=bad)
    msg = str(e.value)
    assert msg == (f"digest mismatch for {server}/g: sha256:{hashlib.sha256(BODY).hexdigest()} "
                   f"(expected: {bad})")
    assert sorted(os.listdir(tmp_path)) == ["f"]          # nothing half-written
    with pytest.raises(BuildError, match="unsupported digest algorithm"):
        fetch_url(server + "/g", tmp_path, checksum="md5:abc")


def test_http_errors_are_build_errors(server, tmp_path):
    with pytest.raises(BuildError, match="invalid response status 404"):
        fetch_url(server + "/missing/x", tmp_path)
    with pytest.raises(BuildError, match="failed to load"):
        fetch_url("http://127.0.0.1:1/x", tmp_path, timeout=5)
    assert os.listdir(tmp_path) == []
