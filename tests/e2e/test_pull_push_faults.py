"""Ship under faults, end to end as a user sees them: `pybuild pull` / `push` through the
FaultProxy (tests/registry_proxy.py) in front of a real docker-registry. Either the command
succeeds (retries, Range resume, a fresh token) or it fails with one `pybuild: error:` line,
exit 1, and leaves the store as it was: no new blob, tag, image or temporary file; a failed
push leaves no manifest in the registry."""
from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from busybox_fixture import copy_store, run_pybuild
from e2e_helpers import ok, store_snapshot
from e2e_helpers import one_error_line as _one_line
from registry_proxy import FaultProxy

BIG_MB = 20      # one layer of random bytes: its gzip blob is over the 16 MiB of one PUT


def one_error_line(r, *words) -> str:
    """pull and push fail with exit 1."""
    return _one_line(r, *words, code=1)


def layer_digests(registry, repo: str, tag: str) -> list[dict]:
    """The layer descriptors of repo:tag, asked of the registry itself (not through the proxy)."""
    req = urllib.request.Request(f"{registry.url}/v2/{repo}/manifests/{tag}", headers={
        "Accept": "application/vnd.oci.image.manifest.v1+json, "
                  "application/vnd.docker.distribution.manifest.v2+json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())["layers"]


def has_manifest(registry, repo: str, tag: str) -> bool:
    req = urllib.request.Request(f"{registry.url}/v2/{repo}/manifests/{tag}", method="HEAD", headers={
        "Accept": "application/vnd.oci.image.manifest.v1+json, "
                  "application/vnd.docker.distribution.manifest.v2+json"})
    try:
        with urllib.request.urlopen(req, timeout=30):
            return True
    except urllib.error.HTTPError as e:
        assert e.code == 404, e
        return False


@pytest.fixture
def proxy(registry):
    with FaultProxy(registry.url) as p:
        yield p
    assert p.errors == [], p.errors[0]



@pytest.fixture
def pushed(busybox_root, registry, request, monkeypatch) -> str:
    """busybox pushed straight to the registry as `<test name>/busybox:1`; returns that path."""
    repo = request.node.name.lower().replace("_", "-")[:60] + "/busybox"
    ok(run_pybuild("tag", "busybox", f"{registry.host}/{repo}:1"))
    ok(run_pybuild("push", "-q", f"{registry.host}/{repo}:1"))
    return repo


@pytest.fixture(scope="module")
def big(busybox_store, registry, tmp_path_factory) -> str:
    """An image with a BIG_MB random layer, in the registry as faults/big:1 (pushed straight)."""
    root = copy_store(busybox_store.root, tmp_path_factory.mktemp("big") / "root")
    ctx = tmp_path_factory.mktemp("bigctx")
    (ctx / "Dockerfile").write_text(f"FROM busybox\nRUN head -c {BIG_MB}000000 /dev/urandom > /big\n")
    env = dict(os.environ, PYBUILD_ROOT=str(root))
    ok(run_pybuild("build", "-q", "-t", f"{registry.host}/faults/big:1", str(ctx), env=env))
    ok(run_pybuild("push", "-q", f"{registry.host}/faults/big:1", env=env, timeout=300))
    return "faults/big"


@pytest.fixture
def big_root(big, registry, tmp_path_factory, monkeypatch) -> Path:
    """A store holding the big image (pulled straight from the registry); PYBUILD_ROOT."""
    root = tmp_path_factory.mktemp("bigroot") / "root"
    monkeypatch.setenv("PYBUILD_ROOT", str(root))
    ok(run_pybuild("pull", "-q", f"{registry.host}/{big}:1"))
    return root


# ---- pull ---------------------------------------------------------------------------------------

def test_a_wrong_blob_is_one_line_naming_it_and_the_store_is_unchanged(pushed, registry, proxy,
                                                                       empty_root):
    (layer,) = layer_digests(registry, pushed, "1")
    proxy.corrupt_blob(layer["digest"], offset=layer["size"] // 2)
    before = store_snapshot(empty_root)
    line = one_error_line(run_pybuild("pull", f"{proxy.host}/{pushed}:1"), layer["digest"])
    assert "hash" in line or "digest" in line, line
    assert store_snapshot(empty_root) == before
    assert proxy.requests("GET", layer["digest"])[-1].fault == "corrupt"


def test_a_wrong_config_is_one_line_too(pushed, registry, proxy, empty_root):
    req = urllib.request.Request(f"{registry.url}/v2/{pushed}/manifests/1", headers={
        "Accept": "application/vnd.oci.image.manifest.v1+json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        config = json.loads(resp.read())["config"]["digest"]
    proxy.corrupt_blob(config, offset=10)
    before = store_snapshot(empty_root)
    one_error_line(run_pybuild("pull", f"{proxy.host}/{pushed}:1"), config)
    assert store_snapshot(empty_root) == before


def test_one_wrong_layer_of_two_downloading_at_once_leaves_nothing(big, registry, proxy,
                                                                  empty_root):
    small, large = sorted(layer_digests(registry, big, "1"), key=lambda d: d["size"])
    proxy.corrupt_blob(large["digest"], offset=large["size"] - 100)  # found at the very end
    before = store_snapshot(empty_root)
    # the digest decides what is said (not the gzip error the flipped byte also causes)
    one_error_line(run_pybuild("pull", f"{proxy.host}/{big}:1"), large["digest"], "hash to")
    assert store_snapshot(empty_root) == before  # the good layer's temporary went too
    assert proxy.requests("GET", small["digest"])[0].status == 200


def test_a_few_500s_are_retried(pushed, proxy, empty_root):
    proxy.fail(500, times=2, method="GET", path="/manifests/")
    proxy.fail(503, times=2, method="GET", path="/blobs/")
    r = ok(run_pybuild("pull", "-q", f"{proxy.host}/{pushed}:1"))
    assert r.stdout == f"{proxy.host}/{pushed}:1\n"
    assert len([e for e in proxy.log if e.fault in ("status 500", "status 503")]) == 4
    ok(run_pybuild("run", "--rm", f"{proxy.host}/{pushed}:1", "true"))


def test_a_registry_that_keeps_failing_is_one_line(pushed, proxy, empty_root):
    proxy.fail(500, times=None, method="GET", path="/blobs/")
    before = store_snapshot(empty_root)
    t = time.monotonic()
    line = one_error_line(run_pybuild("pull", f"{proxy.host}/{pushed}:1"), proxy.host, "500")
    assert "attempts" in line, line
    assert time.monotonic() - t < 20  # the retry budget (1 s here) bounds the waiting
    assert store_snapshot(empty_root) == before
    assert len(proxy.requests("GET", "/blobs/")) > 1


def test_429_with_retry_after_is_waited_for(pushed, proxy, empty_root, monkeypatch):
    monkeypatch.setenv("PYBUILD_REGISTRY_RETRY_BUDGET", "5")
    proxy.throttle(retry_after=1, method="GET", path="/manifests/")
    ok(run_pybuild("pull", "-q", f"{proxy.host}/{pushed}:1"))
    first, second = proxy.requests("GET", "/manifests/")[:2]
    assert first.status == 429 and second.status == 200
    assert second.time - first.time >= 0.95


def test_a_connection_dropped_mid_blob_resumes_with_range(pushed, registry, proxy, empty_root):
    (layer,) = layer_digests(registry, pushed, "1")
    proxy.drop_after(layer["size"] // 2, digest=layer["digest"])
    ok(run_pybuild("pull", "-q", f"{proxy.host}/{pushed}:1"))
    gets = proxy.requests("GET", layer["digest"])
    assert gets[0].fault == "drop" and gets[0].range is None
    assert gets[1].range == f"bytes={gets[0].sent}-", [g.range for g in gets]
    assert gets[1].status == 206
    ok(run_pybuild("run", "--rm", f"{proxy.host}/{pushed}:1", "true"))


def test_a_401_in_the_middle_of_a_token_session_gets_a_new_token(busybox_root, token_registry,
                                                                 tmp_path, monkeypatch):
    reg = token_registry
    with FaultProxy(reg.url) as proxy:
        ref = f"{proxy.host}/tokens/faults:1"
        ok(run_pybuild("login", "-u", reg.user, "--password-stdin", proxy.host, input=reg.password))
        ok(run_pybuild("tag", "busybox", ref))
        ok(run_pybuild("push", "-q", ref))
        monkeypatch.setenv("PYBUILD_ROOT", str(tmp_path / "fresh"))
        proxy.unauthorized(method="GET", path="/blobs/sha256:")
        n = len(reg.tokens.requests)
        ok(run_pybuild("pull", "-q", ref))
        assert [e.status for e in proxy.requests("GET", "/blobs/sha256:")][:2] == [401, 200]
        assert len(reg.tokens.requests) - n >= 2  # the session's token, then a fresh one
    assert proxy.errors == [], proxy.errors[0]


def test_a_slow_registry_is_only_slow(pushed, proxy, empty_root):
    proxy.slow(0.05, rate=8 << 20)
    ok(run_pybuild("pull", "-q", f"{proxy.host}/{pushed}:1"))
    ok(run_pybuild("run", "--rm", f"{proxy.host}/{pushed}:1", "true"))


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root (run as root)")
def test_a_full_disk_is_one_line_and_leaves_the_store_as_it_was(big, registry, tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, f"cannot mount a tmpfs: {r.stderr.strip()}"
    try:
        env = dict(os.environ, PYBUILD_ROOT=str(mnt / "root"))
        ok(run_pybuild("images", env=env))
        before = store_snapshot(mnt / "root")
        line = one_error_line(run_pybuild("pull", f"{registry.host}/{big}:1", env=env))
        assert "space" in line.lower(), line
        assert store_snapshot(mnt / "root") == before
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


# ---- push ---------------------------------------------------------------------------------------

def test_push_retries_500s_on_patch_and_put(big_root, registry, proxy):
    proxy.fail(500, times=1, method="PATCH")                         # never reached the registry
    proxy.fail(500, times=1, method="PATCH", after_upstream=True)    # landed; the answer was lost
    proxy.fail(500, times=2, method="PUT", path="/blobs/uploads/")
    ref = f"{proxy.host}/faults/retried:1"
    ok(run_pybuild("tag", f"{registry.host}/faults/big:1", ref))
    r = ok(run_pybuild("push", "-q", ref))
    assert len([e for e in proxy.log if e.fault == "status 500"]) == 4
    assert has_manifest(registry, "faults/retried", "1")
    # what arrived is the image: another store pulls and checks every digest and diff_id
    ok(run_pybuild("pull", "-q", f"{registry.host}/faults/retried@{r.stdout.strip()}",
                   env=dict(os.environ, PYBUILD_ROOT=str(big_root.parent / "check"))))


def test_push_recovers_from_a_put_whose_answer_was_lost(big_root, registry, proxy):
    proxy.fail(500, times=None, method="PUT", path="/blobs/uploads/.*digest=", after_upstream=True)
    ref = f"{proxy.host}/faults/lostput:1"
    ok(run_pybuild("tag", f"{registry.host}/faults/big:1", ref))
    ok(run_pybuild("push", "-q", ref))  # the blob is there: a HEAD says so, no new upload
    assert has_manifest(registry, "faults/lostput", "1")
    puts = [e.path.rpartition("digest=")[2] for e in proxy.requests("PUT", "/blobs/uploads/")]
    assert len(puts) >= 2 and len(set(puts)) == len(puts), "a blob was uploaded twice"
    assert all(e.status == 500 for e in proxy.requests("PUT", "/blobs/uploads/"))


@pytest.mark.parametrize("method", ["PATCH", "PUT"])
def test_a_connection_dropped_during_an_upload(method, big_root, registry, proxy):
    """The request reaches the registry, its answer never comes back: the connection is cut
    while the proxy holds the answer (PATCH: a chunk of the big layer; PUT: a closing PUT)."""
    ref = f"{proxy.host}/faults/dropped-{method.lower()}:1"
    ok(run_pybuild("tag", f"{registry.host}/faults/big:1", ref))
    done = threading.Event()
    path = "/blobs/uploads/" if method == "PUT" else ""

    def watch() -> None:  # every answer waits 0.4 s: cut while the first `method`'s waits
        while not done.is_set() and not proxy.requests(method, path):
            time.sleep(0.001)
        time.sleep(0.15)
        proxy.cut()
        proxy.slow(0)
    proxy.slow(0.4)
    t = threading.Thread(target=watch)
    t.start()
    try:
        r = run_pybuild("push", "-q", ref)
    finally:
        done.set()
        t.join()
    log = [(e.method, e.path.split("?")[0].rsplit("/", 1)[-1][:20], e.status) for e in proxy.log]
    first = proxy.requests(method, path)[0]
    if method == "PATCH":  # the client asked the session where it stood
        assert proxy.requests("GET", "/blobs/uploads/"), log
    else:                  # the client asked whether the blob had arrived
        digest = first.path.rpartition("digest=")[2].replace("%3A", ":")
        assert [e for e in proxy.requests("HEAD", digest) if e.time > first.time], log
    if r.returncode:
        one_error_line(r)
        assert not has_manifest(registry, f"faults/dropped-{method.lower()}", "1")
    else:
        assert has_manifest(registry, f"faults/dropped-{method.lower()}", "1")


def test_pull_always_asks_with_head_and_gets_nothing_when_current(pushed, proxy, empty_root):
    """`run --pull always` / `build --pull` on an image that is current: one HEAD of the tag,
    no manifest or blob GET (docker.io does not count a HEAD against the pull rate limit)."""
    ref = f"{proxy.host}/{pushed}:1"
    ok(run_pybuild("pull", "-q", ref))
    proxy.reset_log()
    r = ok(run_pybuild("run", "--rm", "--pull", "always", ref, "echo", "current"))
    assert r.stdout == "current\n"
    assert [e.method for e in proxy.requests(path="/manifests/")] == ["HEAD"]
    assert proxy.requests("GET", "/blobs/") == []
