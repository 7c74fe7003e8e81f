"""debian_fixture: the Debian bookworm image lands in a real docker-registry, skopeo can inspect
it, and its layer (read back from the registry, not from the local tar) is a Debian 12 rootfs."""
from __future__ import annotations

import json
import subprocess
import tarfile
import tempfile
import urllib.request
from pathlib import Path

import debian_fixture
import pytest
from debian_fixture import push_debian, skip_reason
from registry_fixture import run_registry

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")


@pytest.fixture(scope="module")
def registry():
    with tempfile.TemporaryDirectory(prefix="deb-reg-") as d, run_registry(Path(d)) as reg:
        host = reg.host
        yield host


def test_push_inspect_and_rootfs(registry):
    pushed = push_debian(registry, "library/debian", "bookworm")
    assert pushed.ref == f"{registry}/library/debian:bookworm"
    r = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{pushed.ref}"],
                       capture_output=True, text=True, check=True)
    info = json.loads(r.stdout)
    assert info["Digest"] == pushed.digest and info["Os"] == "linux" and len(info["Layers"]) == 1
    # the layer as the registry serves it: gzip (skopeo compressed it), a Debian 12 rootfs
    url = f"http://{registry}/v2/library/debian/blobs/{info['Layers'][0]}"
    found: dict[str, bytes | None] = {}
    with urllib.request.urlopen(url, timeout=60) as resp, \
            tarfile.open(fileobj=resp, mode="r|gz") as tf:
        for m in tf:
            name = m.name.removeprefix("./")
            if name == "usr/bin/apt-get":
                found[name] = None
                assert m.isfile() and m.mode & 0o111
            elif name == "etc/debian_version":
                found[name] = tf.extractfile(m).read()
    assert set(found) == {"usr/bin/apt-get", "etc/debian_version"}
    assert found["etc/debian_version"].decode().startswith("12."), found


def test_cached_and_second_push_is_the_same_image(registry):
    """The cache is used (no rebuild: same file, same key) and a push under another name gives
    the same manifest digest (the image is deterministic from the cached tar)."""
    tar, key = debian_fixture.debian_tar()
    mtime = tar.stat().st_mtime_ns
    first = push_debian(registry, "library/debian", "bookworm")
    again = push_debian(registry, "other/debian", "v12")
    assert again.digest == first.digest
    v2s2 = push_debian(registry, "other/debian", "schema2", manifest_format="v2s2")
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                          f"docker://{v2s2.ref}"], capture_output=True, text=True, check=True)
    assert json.loads(raw.stdout)["mediaType"] == (
        "application/vnd.docker.distribution.manifest.v2+json")
    assert debian_fixture.debian_tar() == (tar, key) and tar.stat().st_mtime_ns == mtime
    assert key["mmdebstrap"] == debian_fixture.mmdebstrap_version()
    assert skip_reason() is None
