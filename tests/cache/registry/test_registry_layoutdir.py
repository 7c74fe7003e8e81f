"""LayoutDir: an OCI layout dir behaving like a Repository, round-tripped against a registry
and readable by skopeo."""
from __future__ import annotations

import io
import json
import shutil
import subprocess

import pytest
from test_registry_client import blob_file, push_image, repo

from cache.image import MT_OCI_MANIFEST
from cache.keys import digest_bytes
from cache.registry.errors import DigestMismatch, NotFound
from cache.registry.layoutdir import LayoutDir


def copy_image(src, dst, ref: str, tmp) -> str:
    """Copy one single-platform image from src to dst (both Repository-like), blobs via `tmp`."""
    m = src.get_manifest(ref)
    doc = json.loads(m.raw)
    for desc in [doc["config"], *doc["layers"]]:
        if dst.blob_size(desc["digest"]) is None:
            with open(tmp, "wb") as f:
                src.fetch_blob(desc["digest"], f, size=desc["size"])
            dst.push_blob(desc["digest"], desc["size"], tmp)
    return dst.put_manifest(ref, m.raw, m.media_type)


def test_round_trip_through_a_registry(registry, tmp_path):
    r = repo(registry, "layout/src", push=True)
    raw, digest = push_image(r, tmp_path, "v1", seed=7)
    d = LayoutDir(tmp_path / "oci", create=True)
    assert copy_image(r, d, "v1", tmp_path / "xfer") == digest
    assert d.get_manifest("v1").raw == raw and d.get_manifest(digest).media_type == MT_OCI_MANIFEST
    assert d.head_manifest("v1") == (digest, MT_OCI_MANIFEST, len(raw))
    assert d.tags() == ["v1"]
    back = repo(registry, "layout/back", push=True)
    assert copy_image(d, back, "v1", tmp_path / "xfer") == digest
    assert back.get_manifest("v1").raw == raw
    index = json.loads((tmp_path / "oci/index.json").read_text())
    assert index["manifests"] == [{"mediaType": MT_OCI_MANIFEST, "digest": digest, "size": len(raw),
                                   "annotations": {"org.opencontainers.image.ref.name": "v1"}}]
    # re-tagging replaces the entry; a digest reference adds none twice
    d.put_manifest("v1", raw, MT_OCI_MANIFEST)
    d.put_manifest(digest, raw, MT_OCI_MANIFEST)
    assert len(json.loads((tmp_path / "oci/index.json").read_text())["manifests"]) == 1
    assert d.mount_blob(digest, "x") is False
    if shutil.which("skopeo"):
        out = subprocess.run(["skopeo", "inspect", "--raw", f"oci:{tmp_path / 'oci'}:v1"],
                             capture_output=True, check=True).stdout
        assert out == raw


def test_errors(tmp_path):
    with pytest.raises(NotFound, match="not an OCI image layout"):
        LayoutDir(tmp_path / "none").get_manifest("latest")
    d = LayoutDir(tmp_path / "oci", create=True)
    d.put_manifest("other", b"{}", "application/vnd.oci.image.manifest.v1+json")
    with pytest.raises(NotFound, match="manifest unknown"):
        d.get_manifest("nope")
    assert d.head_manifest("nope") is None
    p, digest, data = blob_file(tmp_path, 1000, seed=8)
    with pytest.raises(DigestMismatch):
        d.push_blob(digest_bytes(b"other"), len(data), p)
    assert d.blob_size(digest_bytes(b"other")) is None
    assert [f.name for f in (tmp_path / "oci").iterdir()] != [] and \
        not [f for f in (tmp_path / "oci").iterdir() if f.name.startswith("w-")]
    d.push_blob(digest, len(data), p)
    with pytest.raises(NotFound):
        d.fetch_blob(digest_bytes(b"other"), io.BytesIO())
    (tmp_path / "oci/blobs/sha256" / digest[7:]).write_bytes(bytes(1000))
    with pytest.raises(DigestMismatch):
        d.fetch_blob(digest, io.BytesIO())
