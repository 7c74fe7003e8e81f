"""The client against a real docker-registry (distribution 2.8): blobs pushed monolithic and
chunked, fetched and verified, mounts, manifests, tags, and the errors users see."""
from __future__ import annotations

import hashlib
import io
import json
import os
import time

import pytest
from registry_fixture import run_registry

from cache.image import MT_OCI_CONFIG, MT_OCI_INDEX, MT_OCI_MANIFEST
from cache.keys import digest_bytes
from cache.registry import http
from cache.registry.client import Repository
from cache.registry.config import Endpoint
from cache.registry.errors import DigestMismatch, NotFound, RegistryError


class CountingRepository(Repository):
    """Records the methods it sends (to see which upload path ran)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.calls: list[str] = []

    def _request(self, method, url, **kw):
        self.calls.append(method)
        return super()._request(method, url, **kw)


def blob_file(tmp_path, size: int, seed: int = 0):
    data = hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1)
    data = bytes(b ^ (i & 0xFF) for i, b in enumerate(data[:min(size, 1 << 16)])) * (size // (1 << 16) + 1)
    data = data[:size]
    p = tmp_path / f"blob-{seed}-{size}"
    p.write_bytes(data)
    return p, digest_bytes(data), data


def repo(reg, path, **kw) -> CountingRepository:
    return CountingRepository(Endpoint(reg.host, path), **kw)


def push_image(r: Repository, tmp_path, tag: str, seed: int = 1):
    """A minimal OCI image (config + one layer) pushed under `tag`: (manifest bytes, digest)."""
    layer, ldigest, ldata = blob_file(tmp_path, 3000, seed)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [ldigest]}}).encode()
    cdigest = digest_bytes(config)
    (tmp_path / "config").write_bytes(config)
    r.push_blob(ldigest, len(ldata), layer)
    r.push_blob(cdigest, len(config), tmp_path / "config")
    raw = json.dumps({"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
                      "config": {"mediaType": MT_OCI_CONFIG, "digest": cdigest, "size": len(config)},
                      "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                  "digest": ldigest, "size": len(ldata)}]}).encode()
    return raw, r.put_manifest(tag, raw, MT_OCI_MANIFEST)


def test_monolithic_push_fetch(registry, tmp_path):
    r = repo(registry, "client/mono", push=True)
    p, digest, data = blob_file(tmp_path, 1 << 20)
    assert r.blob_size(digest) is None
    r.push_blob(digest, len(data), p)
    assert r.calls[-2:] == ["POST", "PUT"]
    assert r.blob_size(digest) == len(data)
    out = io.BytesIO()
    seen = []
    assert r.fetch_blob(digest, out, size=len(data), progress=seen.append) == len(data)
    assert out.getvalue() == data and seen[-1] == len(data)


def test_chunked_push_of_20_mib(registry, tmp_path):
    r = repo(registry, "client/chunked", push=True)
    p, digest, data = blob_file(tmp_path, 20 << 20, seed=2)
    t = time.monotonic()
    r.push_blob(digest, len(data), p)
    assert r.calls.count("PATCH") == 2 and r.calls[-1] == "PUT", r.calls
    out = io.BytesIO()
    assert r.fetch_blob(digest, out) == len(data)
    assert out.getvalue() == data
    assert time.monotonic() - t < 20


def test_many_small_chunks_follow_each_location(registry, tmp_path):
    r = repo(registry, "client/smallchunks", push=True)
    r.monolithic_max, r.chunk_size = 0, 100_000
    p, digest, data = blob_file(tmp_path, 450_001, seed=3)
    r.push_blob(digest, len(data), p)
    assert r.calls.count("PATCH") == 5
    out = io.BytesIO()
    r.fetch_blob(digest, out)
    assert out.getvalue() == data


def test_wrong_digest_is_refused_on_push_and_on_fetch(registry, tmp_path):
    r = repo(registry, "client/wrong", push=True)
    p, digest, data = blob_file(tmp_path, 5000, seed=4)
    other = digest_bytes(b"something else")
    with pytest.raises(DigestMismatch):
        r.push_blob(other, len(data), p)
    r.push_blob(digest, len(data), p)
    with pytest.raises(DigestMismatch, match="more than the 4999 bytes expected"):
        r.fetch_blob(digest, io.BytesIO(), size=4999)
    with pytest.raises(DigestMismatch, match="got 5000 bytes, expected 5001"):
        r.fetch_blob(digest, io.BytesIO(), size=5001)
    # bytes changed behind the registry's back (same length): the client notices
    stored = registry.storage / "docker/registry/v2/blobs/sha256" / digest[7:9] / digest[7:] / "data"
    stored.write_bytes(bytes(len(data)))
    with pytest.raises(DigestMismatch, match="hash to sha256:"):
        r.fetch_blob(digest, io.BytesIO())


def test_unknown_blob(registry):
    r = repo(registry, "client/none")
    d = digest_bytes(b"never pushed")
    assert r.blob_size(d) is None
    with pytest.raises(NotFound, match=f"blob unknown: {registry.host}/client/none@{d} not found"):
        r.fetch_blob(d, io.BytesIO())


def test_manifest_put_get_head_tags(registry, tmp_path):
    r = repo(registry, "client/manifests", push=True)
    raw, digest = push_image(r, tmp_path, "v1")
    assert digest == digest_bytes(raw)
    for ref in ("v1", digest):
        m = r.get_manifest(ref)
        assert (m.raw, m.media_type, m.digest) == (raw, MT_OCI_MANIFEST, digest)
    assert r.head_manifest("v1") == (digest, MT_OCI_MANIFEST, len(raw))
    assert r.head_manifest("nope") is None
    index = json.dumps({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": [
        {"mediaType": MT_OCI_MANIFEST, "digest": digest, "size": len(raw),
         "platform": {"os": "linux", "architecture": "amd64"}}]}).encode()
    r.put_manifest("multi", index, MT_OCI_INDEX)
    assert r.get_manifest("multi").media_type == MT_OCI_INDEX
    assert sorted(r.tags()) == ["multi", "v1"]
    with pytest.raises(NotFound, match=f"^manifest unknown: {registry.host}/client/manifests:v2 not found$"):
        r.get_manifest("v2")
    with pytest.raises(NotFound, match="repository unknown"):
        repo(registry, "client/never").tags()


def test_manifest_with_missing_blobs_is_refused(registry):
    r = repo(registry, "client/badmanifest", push=True)
    d = digest_bytes(b"absent")
    raw = json.dumps({"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
                      "config": {"mediaType": MT_OCI_CONFIG, "digest": d, "size": 6}, "layers": []}).encode()
    with pytest.raises(RegistryError, match="PUT manifest") as e:
        r.put_manifest("x", raw, MT_OCI_MANIFEST)
    assert "\n" not in str(e.value)


def test_mount_across_repositories(registry, tmp_path):
    a = repo(registry, "client/mount-a", push=True)
    b = repo(registry, "client/mount-b", push=True)
    p, digest, data = blob_file(tmp_path, 10_000, seed=5)
    a.push_blob(digest, len(data), p)
    assert b.blob_size(digest) is None
    assert b.mount_blob(digest, "client/mount-a") is True
    assert b.blob_size(digest) == len(data)
    assert b.mount_blob(digest_bytes(b"nowhere"), "client/mount-a") is False
    assert b.calls[-1] == "DELETE"      # the upload session a failed mount opened is abandoned


def test_no_registry_is_one_line(tmp_path):
    from registry_fixture import free_port
    r = Repository(Endpoint(f"127.0.0.1:{free_port()}", "x"))
    t = time.monotonic()
    with pytest.raises(RegistryError, match="cannot connect") as e:
        r.get_manifest("latest")
    assert "\n" not in str(e.value) and time.monotonic() - t < 2


def test_connections_are_kept_alive(registry, tmp_path):
    r = repo(registry, "client/keepalive", push=True)
    p, digest, data = blob_file(tmp_path, 100, seed=6)
    r.push_blob(digest, len(data), p)
    http.POOL.clear()
    for _ in range(5):
        assert r.blob_size(digest) == 100
    key = ("http", registry.host, True)
    assert len(http.POOL._idle[key]) == 1


def test_threads_share_the_pool(registry, tmp_path):
    from concurrent.futures import ThreadPoolExecutor
    r = repo(registry, "client/threads", push=True)
    files = [blob_file(tmp_path, 200_000 + i, seed=10 + i) for i in range(8)]
    with ThreadPoolExecutor(4) as ex:
        list(ex.map(lambda f: r.push_blob(f[1], len(f[2]), f[0]), files))

    def fetch(f):
        out = io.BytesIO()
        r.fetch_blob(f[1], out)
        return out.getvalue() == f[2]
    with ThreadPoolExecutor(4) as ex:
        assert all(ex.map(fetch, files))
    assert len(http.POOL._idle[("http", registry.host, True)]) <= http.PER_HOST


def test_user_agent(tmp_path):
    """The header the registry receives (its request log), on the client's own requests."""
    import re

    from cache.version import VERSION
    with run_registry(tmp_path / "r", request_log=True) as reg:
        assert repo(reg, "client/ua").blob_size("sha256:" + "0" * 64) is None
        want = re.compile(r'http\.request\.uri="?/v2/client/ua/blobs/sha256:0+"? '
                          rf'http\.request\.useragent="?pybuild/{re.escape(VERSION)}"? ')
        deadline = time.monotonic() + 5
        while not want.search(reg.log.read_text()):
            assert time.monotonic() < deadline, reg.log.read_text()[-2000:]
            time.sleep(0.05)


@pytest.mark.parametrize("kw", [{}, {"auth": "htpasswd"}])
def test_registry_fixture_stops(tmp_path, kw):
    with run_registry(tmp_path / "r", **kw) as reg:
        host = reg.host
        assert os.path.exists(f"/proc/{reg.pid}")
        base, _ = http.base_url(host)
        assert base == f"http://{host}"
    with pytest.raises(RegistryError, match="cannot connect"):
        http.request("GET", f"http://{host}/v2/")
    assert not os.path.exists(f"/proc/{reg.pid}")
