"""FaultProxy (tests/registry_proxy.py) against a real Debian `docker-registry serve`: every fault
mode, pass-through of uploads (monolithic, chunked PATCH, chunked request bodies), chunked
upstream responses, keep-alive, Location rewriting, and constant memory."""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import tracemalloc
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from registry_fixture import REGISTRY_BIN as REGISTRY
from registry_fixture import run_registry
from registry_proxy import FaultProxy

pytestmark = pytest.mark.skipif(
    not os.path.exists(REGISTRY) or not shutil.which("curl"),
    reason="needs Debian's docker-registry and curl (apt-get install docker-registry curl)")


UPSTREAM_LOG: list[Path] = []


@pytest.fixture(scope="module")
def upstream():
    with tempfile.TemporaryDirectory(prefix="fp-reg-") as d, \
            run_registry(Path(d), request_log=True) as reg:
        host = reg.host
        UPSTREAM_LOG[:] = [reg.log]
        yield host


@pytest.fixture
def proxy(upstream):
    with FaultProxy(f"http://{upstream}") as p:
        yield p
    assert p.errors == [], p.errors[0]


def req(url: str, method: str = "GET", data: bytes | None = None, headers=None, timeout=30):
    """(status, headers, body) without raising on HTTP errors."""
    r = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(r, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def push_blob(base: str, repo: str, data: bytes) -> str:
    """Monolithic POST + PUT of `data`; returns its digest."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    status, h, _ = req(f"{base}/v2/{repo}/blobs/uploads/", "POST", b"")
    assert status == 202, status
    loc = h["Location"]
    sep = "&" if "?" in loc else "?"
    status, h, body = req(f"{loc}{sep}digest={digest}", "PUT", data,
                          {"Content-Type": "application/octet-stream"})
    assert status == 201, (status, body)
    return digest


@pytest.fixture(scope="module")
def blob(upstream):
    """A 1 MiB blob in repo test/blob of the upstream: (digest, bytes)."""
    data = os.urandom(1 << 20)
    return push_blob(f"http://{upstream}", "test/blob", data), data


def test_passthrough_upload_rewrites_location_and_logs(proxy, upstream):
    data = os.urandom(300_000)
    digest = push_blob(proxy.url, "test/up", data)
    posts = proxy.requests("POST", r"/blobs/uploads/$")
    puts = proxy.requests("PUT", r"/blobs/uploads/")
    assert [e.status for e in posts + puts] == [202, 201]
    assert puts[0].received == len(data)
    status, h, body = req(f"{proxy.url}/v2/test/up/blobs/{digest}")
    assert status == 200 and body == data
    # the registry's absolute Location (built from Host) pointed at the upstream: rewritten
    status, h, _ = req(f"{proxy.url}/v2/test/up/blobs/uploads/", "POST", b"")
    assert h["Location"].startswith(proxy.url + "/v2/test/up/blobs/uploads/"), h["Location"]
    direct = req(f"http://{upstream}/v2/test/up/blobs/uploads/", "POST", b"")[1]["Location"]
    assert direct.startswith(f"http://{upstream}/")


def test_chunked_patch_upload_and_chunked_request_body(proxy, tmp_path):
    """Chunked PATCHes (Content-Range) then PUT ?digest=; the second PATCH's body arrives with
    Transfer-Encoding: chunked (curl) and is re-chunked upstream."""
    a, b = os.urandom(200_000), os.urandom(150_000)
    digest = "sha256:" + hashlib.sha256(a + b).hexdigest()
    status, h, _ = req(f"{proxy.url}/v2/test/chunk/blobs/uploads/", "POST", b"")
    loc = h["Location"]
    status, h, _ = req(loc, "PATCH", a, {"Content-Type": "application/octet-stream",
                                         "Content-Range": f"0-{len(a) - 1}"})
    assert status == 202 and h["Range"] == f"0-{len(a) - 1}"
    (tmp_path / "b").write_bytes(b)
    out = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-D", "-", "-X", "PATCH", "-H",
         "Transfer-Encoding: chunked", "-H", "Content-Type: application/octet-stream",
         "--data-binary", f"@{tmp_path / 'b'}", h["Location"]],
        capture_output=True, text=True, check=True).stdout
    assert out.startswith("HTTP/1.1 202"), out
    loc = re.search(r"(?im)^location: (\S+)", out).group(1)
    assert loc.startswith(proxy.url)
    assert re.search(r"(?im)^range: 0-349999\s*$", out), out
    assert proxy.requests("PATCH")[-1].headers.get("transfer-encoding") == "chunked"
    assert proxy.requests("PATCH")[-1].received == len(b)
    status, _, body = req(f"{loc}&digest={digest}", "PUT", b"")
    assert status == 201, body
    assert req(f"{proxy.url}/v2/test/chunk/blobs/{digest}")[2] == a + b


def test_keep_alive_and_chunked_upstream_response(proxy, upstream):
    """Many requests on one client connection; a tags list > 4 KiB that Go's net/http sends
    chunked comes through whole (re-chunked)."""
    config = b"{}"
    cdigest = push_blob(f"http://{upstream}", "test/tags", config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType":
                           "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": cdigest, "size": len(config)},
                           "layers": []}).encode()
    c = http.client.HTTPConnection(proxy.host, timeout=30)
    tags = [f"tag-number-{i:04d}-xxxxxxxx" for i in range(250)]
    for t in tags:
        c.request("PUT", f"/v2/test/tags/manifests/{t}", body=manifest,
                  headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        r = c.getresponse()
        r.read()
        assert r.status == 201
    c.request("GET", "/v2/test/tags/tags/list")
    r = c.getresponse()
    assert r.getheader("Transfer-Encoding") == "chunked"   # the upstream's was too
    assert sorted(json.loads(r.read())["tags"]) == tags
    c.close()
    # one client connection, so one upstream connection (kept alive): one remote port
    lines = [ln for ln in UPSTREAM_LOG[0].read_text().splitlines()
             if re.search(r"uri=/v2/test/tags/(manifests|tags/list)", ln)]
    ports = {re.search(r'remoteaddr="([^"]+)"', ln).group(1) for ln in lines}
    assert len(lines) == 251 and len(ports) == 1, ports


def test_corrupt_blob_same_length_and_range(proxy, blob):
    digest, data = blob
    proxy.corrupt_blob(digest, offset=1000)
    status, h, body = req(f"{proxy.url}/v2/test/blob/blobs/{digest}")
    assert status == 200 and len(body) == len(data) and body != data
    assert [i for i in range(len(data)) if body[i] != data[i]] == [1000]
    # a Range request covering the offset is corrupted at the right place; one that misses is not
    _, _, part = req(f"{proxy.url}/v2/test/blob/blobs/{digest}", headers={"Range": "bytes=900-"})
    assert len(part) == len(data) - 900 and part[100] != data[1000] and part[101:] == data[1001:]
    _, _, part = req(f"{proxy.url}/v2/test/blob/blobs/{digest}", headers={"Range": "bytes=2000-"})
    assert part == data[2000:]
    assert proxy.requests("GET", "/blobs/")[1].range == "bytes=900-"
    proxy.clear()
    assert req(f"{proxy.url}/v2/test/blob/blobs/{digest}")[2] == data


def test_fail_500_n_times(proxy, blob):
    digest, data = blob
    proxy.fail(500, times=2, method="GET", path="/blobs/")
    url = f"{proxy.url}/v2/test/blob/blobs/{digest}"
    statuses = [req(url)[0] for _ in range(3)]
    assert statuses == [500, 500, 200]
    assert [e.fault for e in proxy.requests()] == ["status 500", "status 500", None]
    # HEAD is not GET: untouched
    proxy.fail(503, times=1, method="GET")
    assert req(url, "HEAD")[0] == 200


def test_fail_after_upstream_lets_the_request_land(proxy):
    """The PUT really lands (the blob exists) though the client is told 500. (A PATCH answered
    so leaves the old Location's _state stale: docker-registry 2.8 then answers 404 to
    GET <old location>, so a client that lost the new Location must restart the upload.)"""
    data = os.urandom(1000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    status, h, _ = req(f"{proxy.url}/v2/test/late/blobs/uploads/", "POST", b"")
    proxy.fail(500, method="PUT", after_upstream=True)
    status, _, body = req(f"{h['Location']}&digest={digest}", "PUT", data,
                          {"Content-Type": "application/octet-stream"})
    assert status == 500 and b"injected by FaultProxy" in body
    assert proxy.requests("PUT")[0].received == 1000
    assert req(f"{proxy.url}/v2/test/late/blobs/{digest}", "HEAD")[0] == 200


def test_throttle_429_retry_after(proxy, blob):
    digest, _ = blob
    proxy.throttle(times=1, retry_after=1)
    url = f"{proxy.url}/v2/test/blob/blobs/{digest}"
    status, h, body = req(url)
    assert status == 429 and h["Retry-After"] == "1"
    assert json.loads(body)["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert req(url)[0] == 200


def test_drop_after_k_bytes_once_then_range_resume(proxy, blob):
    digest, data = blob
    proxy.drop_after(100_000, digest=digest)
    c = http.client.HTTPConnection(proxy.host, timeout=30)
    c.request("GET", f"/v2/test/blob/blobs/{digest}")
    r = c.getresponse()
    assert r.status == 200 and int(r.getheader("Content-Length")) == len(data)
    with pytest.raises(http.client.IncompleteRead) as e:
        r.read()
    got = e.value.partial
    assert got == data[:100_000]
    c.close()
    # the client resumes with Range; the rule fired once only
    status, _, rest = req(f"{proxy.url}/v2/test/blob/blobs/{digest}",
                          headers={"Range": f"bytes={len(got)}-"})
    assert status == 206 and got + rest == data
    log = proxy.requests("GET", "/blobs/")
    assert [(e.fault, e.range, e.sent) for e in log] == [
        ("drop", None, 100_000), (None, "bytes=100000-", len(data) - 100_000)]


def test_slow(proxy, blob):
    digest, data = blob
    proxy.slow(0.3)
    t = time.monotonic()
    assert req(f"{proxy.url}/v2/")[0] == 200
    assert time.monotonic() - t >= 0.3
    proxy.slow(rate=4 << 20)        # 1 MiB at 4 MiB/s: about 0.25 s
    t = time.monotonic()
    assert req(f"{proxy.url}/v2/test/blob/blobs/{digest}")[2] == data
    assert time.monotonic() - t >= 0.2
    proxy.slow(0)


def test_unauthorized_without_upstream_auth(proxy):
    proxy.unauthorized()
    status, h, _ = req(f"{proxy.url}/v2/")
    assert status == 401 and h["WWW-Authenticate"] == 'Basic realm="fault-proxy"'
    assert req(f"{proxy.url}/v2/")[0] == 200


def test_unauthorized_copies_upstream_challenge(tmp_path):
    """With an htpasswd registry: the 401 carries the upstream's challenge even though the
    client sent good credentials (a forced re-auth); Authorization presence is logged."""
    with run_registry(tmp_path / "reg", auth="htpasswd", users={"user": "pw"}) as reg, \
            FaultProxy(reg.host) as proxy:
        host = reg.host
        direct = req(f"http://{host}/v2/")
        assert direct[0] == 401
        auth = {"Authorization": "Basic dXNlcjpwdw=="}
        proxy.unauthorized(times=1, method="POST")
        status, h, _ = req(f"{proxy.url}/v2/priv/blobs/uploads/", "POST", b"", auth)
        assert status == 401 and h["WWW-Authenticate"] == direct[1]["WWW-Authenticate"]
        status, h, _ = req(f"{proxy.url}/v2/priv/blobs/uploads/", "POST", b"", auth)
        assert status == 202 and h["Location"].startswith(proxy.url)
        assert [(e.method, e.auth, e.status) for e in proxy.requests()] == [
            ("POST", "Basic", 401), ("POST", "Basic", 202)]


def test_streams_in_constant_memory(proxy):
    """32 MiB up (chunked PATCH) and down through the proxy: Python allocations stay small."""
    size, piece = 32 << 20, os.urandom(1 << 20)
    h = hashlib.sha256()
    for _ in range(32):
        h.update(piece)
    digest = "sha256:" + h.hexdigest()
    loc = req(f"{proxy.url}/v2/test/big/blobs/uploads/", "POST", b"")[1]["Location"]
    tracemalloc.start()
    try:
        c = http.client.HTTPConnection(proxy.host, timeout=60)
        c.request("PATCH", urllib.parse.urlsplit(loc)._replace(scheme="", netloc="").geturl(),
                  body=(piece for _ in range(32)), encode_chunked=True,
                  headers={"Content-Type": "application/octet-stream"})
        r = c.getresponse()
        r.read()
        assert r.status == 202
        loc = r.getheader("Location")
        c.request("PUT", urllib.parse.urlsplit(loc)._replace(scheme="", netloc="").geturl()
                  + f"&digest={digest}", body=b"")
        r = c.getresponse()
        r.read()
        assert r.status == 201
        c.request("GET", f"/v2/test/big/blobs/{digest}")
        r = c.getresponse()
        got, h2 = 0, hashlib.sha256()
        while b := r.read(1 << 16):
            got += len(b)
            h2.update(b)
        c.close()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == size and "sha256:" + h2.hexdigest() == digest
    assert peak < 8 << 20, f"peak {peak} bytes while streaming {size}"


def test_stop_cuts_idle_keepalive_connections(upstream):
    p = FaultProxy(upstream).start()
    c = http.client.HTTPConnection(p.host, timeout=5)
    c.request("GET", "/v2/")
    c.getresponse().read()
    t = time.monotonic()
    p.stop()
    assert time.monotonic() - t < 3
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        c.request("GET", "/v2/")
        c.getresponse()


def _tiny_layout(path: Path, layers: int = 3, size: int = 2 << 20) -> None:
    """An OCI layout (tag "t") of `layers` random uncompressed layers: skopeo's test input."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> dict:
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        (blobs / d[7:]).write_bytes(data)
        return {"digest": d, "size": len(data)}

    import io
    import tarfile
    descs = []
    for i in range(layers):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            ti = tarfile.TarInfo(f"f{i}")
            ti.size = size
            tf.addfile(ti, io.BytesIO(os.urandom(size)))
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", **put(buf.getvalue())})
    config = put(json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
        "type": "layers", "diff_ids": [d["digest"] for d in descs]}}).encode())
    manifest = put(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
        "layers": descs}).encode())
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest,
        "annotations": {"org.opencontainers.image.ref.name": "t"}}]}))


@pytest.mark.skipif(not shutil.which("skopeo"), reason="needs skopeo (apt-get install skopeo)")
def test_skopeo_push_and_pull_through_the_proxy(proxy, tmp_path):
    """A real client, parallel blob requests and streamed (chunked) PATCH bodies: skopeo pushes
    through the proxy (HEAD of each blob before its upload) and pulls the same bytes back."""
    _tiny_layout(tmp_path / "oci")
    ref = f"{proxy.host}/test/skopeo:t"
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                    f"oci:{tmp_path / 'oci'}:t", f"docker://{ref}"], check=True, capture_output=True)
    log = proxy.requests()
    puts = [e for e in log if e.method == "PUT" and "/blobs/uploads/" in e.path]
    assert len(puts) == 4 and {e.status for e in puts} == {201}
    # skopeo HEADs each blob (by its uncompressed digest: it gzips as it uploads) before the
    # POST that starts its upload; with parallel uploads: never more POSTs than HEADs so far
    heads = posts = 0
    for e in log:
        heads += e.method == "HEAD" and "/blobs/sha256:" in e.path
        posts += e.method == "POST"
        assert posts <= heads
    assert posts == 4
    assert any(e.headers.get("transfer-encoding") == "chunked" and e.received > 2 << 20
               for e in proxy.requests("PATCH"))
    assert proxy.requests("PUT", "/manifests/t$")[0].status == 201
    proxy.reset_log()
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}",
                    f"dir:{tmp_path / 'out'}"], check=True, capture_output=True)
    info = json.loads((tmp_path / "out" / "manifest.json").read_text())
    for layer in info["layers"]:
        got = (tmp_path / "out" / layer["digest"][7:]).read_bytes()
        assert "sha256:" + hashlib.sha256(got).hexdigest() == layer["digest"]
    assert len(proxy.requests("GET", "/blobs/sha256:")) == 4      # 3 layers + config

