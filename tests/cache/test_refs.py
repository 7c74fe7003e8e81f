"""Image references parse as docker's (distribution/reference ParseNormalizedNamed): the
familiar short forms normalise to docker.io/library, a first component with a dot, a colon, or
`localhost` (or any capital letter) is a registry host, and bad names are refused."""
from __future__ import annotations

import pytest

from cache import refs
from cache.errors import StoreError

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize("ref,want", [
    ("busybox", ("docker.io/library/busybox", "latest", None)),
    ("busybox:1.36", ("docker.io/library/busybox", "1.36", None)),
    ("library/busybox", ("docker.io/library/busybox", "latest", None)),
    ("docker.io/busybox", ("docker.io/library/busybox", "latest", None)),
    ("team/app", ("docker.io/team/app", "latest", None)),
    ("team/sub/app:v", ("docker.io/team/sub/app", "v", None)),
    ("localhost/app", ("localhost/app", "latest", None)),
    ("localhost:5000/app:1", ("localhost:5000/app", "1", None)),
    ("127.0.0.1:5000/a/b", ("127.0.0.1:5000/a/b", "latest", None)),
    ("registry.example.com/app", ("registry.example.com/app", "latest", None)),
    ("Registry/app", ("Registry/app", "latest", None)),
    (f"busybox@{DIGEST}", ("docker.io/library/busybox", None, DIGEST)),
    (f"h:5000/app:1@{DIGEST}", ("h:5000/app", "1", DIGEST)),
    ("a_b/c__d/e-f.g", ("docker.io/a_b/c__d/e-f.g", "latest", None)),
    ("[::1]:5000/app", ("[::1]:5000/app", "latest", None)),
    ("[fe80::1]/app:2", ("[fe80::1]/app", "2", None)),
    ("a-b.Example.com:443/app", ("a-b.Example.com:443/app", "latest", None)),
])
def test_docker_normalisation(ref, want):
    assert refs.parse(ref) == want


@pytest.mark.parametrize("ref", [
    "", " busybox", "Busybox", "team/App", "busybox:", "busybox:-x", "busybox:" + "t" * 129,
    "busybox@sha256:abc", "busybox@md5:" + "0" * 32, "a//b", "-a/b", "a/b-", "a/.b", "a__/b",
    # the registry host follows docker's domain grammar
    "host:abc/x", "host:/x", "ex_ample.com/x", "exa mple.com/x", "-a.com/x", "a-.com/x", "a..com/x",
    ".a.com/x", "a.com./x", "[::1/x", "[zz::1]:5000/x", "a.com:5000:1/x", "exa\x1bmple.com/x",
])
def test_invalid_reference_format(ref):
    with pytest.raises(StoreError, match="invalid reference format"):
        refs.parse(ref)


def test_familiar_forms_are_what_docker_shows():
    assert refs.familiar("docker.io/library/busybox:latest") == "busybox:latest"
    assert refs.familiar("docker.io/team/app:1") == "team/app:1"
    assert refs.familiar("127.0.0.1:5000/x/y:2") == "127.0.0.1:5000/x/y:2"
    assert refs.normalize("busybox") == "docker.io/library/busybox:latest"
