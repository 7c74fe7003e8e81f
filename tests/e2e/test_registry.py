"""Ship, end to end as a user types it: `pybuild push`, `pull`, `login`, FROM / COPY --from /
`run` pulling what is missing, `build --push`, against Debian's real docker-registry on
loopback, with skopeo and podman as judges of what pybuild put there.

Every test works in store roots of its own (PYBUILD_ROOT) and in repositories of its own on the
session's registries; credentials and registries.conf are the test's own files (conftest's
hermetic registry environment)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from e2e_helpers import ok, one_error_line, store_snapshot
from registry_fixture import run_registry

SKOPEO = shutil.which("skopeo")
needs_skopeo = pytest.mark.skipif(SKOPEO is None, reason="needs skopeo (./install.sh installs it)")


def skopeo_inspect(ref: str, *extra: str) -> dict:
    r = subprocess.run([SKOPEO, "inspect", "--tls-verify=false", *extra, f"docker://{ref}"],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def image_id(pybuild, ref: str) -> str:
    return ok(pybuild("inspect", "-f", "{{.Id}}", ref)).stdout.strip()



@pytest.fixture
def pushed(busybox_root, registry, pybuild, request) -> str:
    """busybox pushed by pybuild to a repository named after the test; returns its reference."""
    ref = f"{registry.host}/{request.node.name.lower().replace('_', '-')[:60]}/busybox:1"
    ok(pybuild("tag", "busybox", ref))
    ok(pybuild("push", ref))
    return ref


@needs_skopeo
def test_push_is_read_by_skopeo_and_pull_gives_the_same_image(pushed, busybox_root, empty_root,
                                                               pybuild, monkeypatch):
    monkeypatch.setenv("PYBUILD_ROOT", str(busybox_root))
    built_id = image_id(pybuild, pushed)
    info = skopeo_inspect(pushed)
    assert info["Digest"].startswith("sha256:")
    assert len(info["Layers"]) == 1
    monkeypatch.setenv("PYBUILD_ROOT", str(empty_root))
    r = ok(pybuild("pull", "--progress", "plain", pushed))
    assert r.stdout == pushed + "\n"
    assert f"Digest: {info['Digest']}" in r.stderr
    assert "Pull complete" in r.stderr
    assert image_id(pybuild, pushed) == built_id  # the image ID is the config digest: unchanged
    r = ok(pybuild("inspect", "-f", "{{json .RepoDigests}}", pushed))
    assert f"{pushed.rsplit(':', 1)[0]}@{info['Digest']}" in r.stdout
    again = ok(pybuild("pull", "--progress", "plain", pushed))
    assert "Image is up to date" in again.stderr and "Pull complete" not in again.stderr
    r = ok(pybuild("run", "--rm", pushed, "echo", "pulled and ran"))
    assert r.stdout == "pulled and ran\n"


def test_quiet_pull_prints_only_the_reference(pushed, empty_root, pybuild):
    r = ok(pybuild("pull", "-q", pushed))
    assert r.stdout == pushed + "\n"
    assert r.stderr == ""


def test_json_progress_is_one_object_per_line(pushed, empty_root, pybuild):
    r = ok(pybuild("pull", "--progress", "json", pushed))
    events = [json.loads(line) for line in r.stderr.splitlines()]
    assert any(e.get("status") == "Pull complete" for e in events)
    assert any(e.get("status") == "Downloading" and e["progressDetail"]["total"] for e in events)


def test_from_copy_from_and_run_pull_what_is_missing(pushed, empty_root, pybuild, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {pushed}\nCOPY --from={pushed} /bin/busybox /opt/busybox\n"
                                    "RUN /opt/busybox echo built > /built\n"
                                    f"RUN --mount=from={pushed},target=/m test -x /m/bin/busybox\n")
    r = ok(pybuild("build", "--progress", "plain", "-t", "app", str(ctx)))
    assert f"[internal] load metadata for {pushed}" in r.stderr and "Pulling from" in r.stderr
    # FROM, COPY --from, --mount pull it once
    assert r.stderr.count("[internal] load metadata for") == r.stderr.count("Pulling from") == 1
    assert ok(pybuild("run", "--rm", "app", "cat", "/built")).stdout == "built\n"
    # run pulls a missing image, saying so as docker does
    ok(pybuild("rmi", "app"))
    ok(pybuild("rmi", pushed))
    r = ok(pybuild("run", "--rm", pushed, "echo", "fresh"))
    assert r.stdout == "fresh\n"
    assert f"Unable to find image '{pushed}' locally" in r.stderr
    r = pybuild("run", "--rm", "--pull", "never", f"{pushed.rsplit(':', 1)[0]}:nope", "true")
    assert r.returncode == 125 and "no such image" in r.stderr


def test_a_digest_reference_is_never_asked_for_again(busybox_root, pybuild, tmp_path, monkeypatch):
    with run_registry(tmp_path / "short-lived") as reg:
        ref = f"{reg.host}/pinned/busybox:1"
        ok(pybuild("tag", "busybox", ref))
        ok(pybuild("push", ref))
        digest = skopeo_inspect(ref)["Digest"] if SKOPEO else None
        monkeypatch.setenv("PYBUILD_ROOT", str(tmp_path / "other"))
        r = ok(pybuild("pull", "--progress", "plain", ref))
        got = [ln for ln in r.stderr.splitlines() if ln.startswith("Digest: ")][0].split()[1]
        if digest:
            assert got == digest
        pinned = f"{reg.host}/pinned/busybox@{got}"
        ok(pybuild("pull", pinned))
    # the registry is gone: a build FROM the digest, even with --pull, uses the store's copy
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {pinned}\nRUN echo ok > /ok\n")
    ok(pybuild("build", "--pull", "-q", str(ctx)))
    # a tag cannot be checked without the registry: --pull says so in one line
    r = pybuild("build", "--pull", "-q", "-f", "-", str(ctx), input=f"FROM {ref}\n")
    one_error_line(r, reg.host)


@needs_skopeo
def test_build_push_and_output_type_registry(busybox_root, registry, pybuild, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo one > /one\nCMD [\"cat\", \"/one\"]\n")
    ref = f"{registry.host}/buildpush/app:1"
    r = ok(pybuild("build", "--push", "-t", ref, str(ctx)))
    assert "pushing" in r.stderr
    info = skopeo_inspect(ref)
    assert len(info["Layers"]) == 2
    ref2 = f"{registry.host}/buildpush/app:2"
    ok(pybuild("build", "-q", "--output", "type=registry", "-t", ref2, str(ctx)))
    assert skopeo_inspect(ref2)["Digest"] == info["Digest"]  # same image, same manifest bytes
    r = pybuild("build", "--push", "-q", str(ctx))
    one_error_line(r, "-t")
    ref3 = f"{registry.host}/buildpush/app:3"
    ok(pybuild("build", "-q", "--output", f"type=registry,name={ref3}", str(ctx)))
    assert skopeo_inspect(ref3)["Digest"] == info["Digest"]
    one_error_line(pybuild("build", "-q", "--output", f"type=registry,name={ref3},push=false",
                           str(ctx)), "push=false")
    one_error_line(pybuild("build", "-q", "--output", "type=registry,dest=/tmp/x", str(ctx)),
                   "dest")


def test_second_repository_on_one_registry_mounts_instead_of_uploading(pushed, busybox_root,
                                                                       registry, pybuild):
    other = f"{registry.host}/mount-target/busybox:1"
    ok(pybuild("tag", pushed, other))
    r = ok(pybuild("push", "--progress", "plain", other))
    repo_path = pushed.split("/", 1)[1].rsplit(":", 1)[0]
    assert f"Mounted from {repo_path}" in r.stderr, r.stderr
    r = ok(pybuild("push", "--progress", "plain", other))
    assert "Layer already exists" in r.stderr


@needs_skopeo
def test_an_image_pushed_by_skopeo_is_pulled_run_and_pushed_back_unchanged(
        busybox_root, registry, pybuild, tmp_path, empty_root, monkeypatch):
    archive = tmp_path / "bb.tar"
    monkeypatch.setenv("PYBUILD_ROOT", str(busybox_root))
    ok(pybuild("save", "-o", str(archive), "busybox"))
    ref = f"{registry.host}/from-skopeo/busybox:1"
    subprocess.run([SKOPEO, "copy", "-q", "--dest-tls-verify=false", f"docker-archive:{archive}",
                    f"docker://{ref}"], check=True, capture_output=True, timeout=120)
    digest = skopeo_inspect(ref)["Digest"]
    monkeypatch.setenv("PYBUILD_ROOT", str(empty_root))
    ok(pybuild("pull", ref))
    assert ok(pybuild("run", "--rm", ref, "echo", "hi")).stdout == "hi\n"
    back = f"{registry.host}/from-skopeo/again:1"
    ok(pybuild("tag", ref, back))
    r = ok(pybuild("push", "-q", back))
    assert r.stdout.strip() == digest  # the manifest it came with, byte for byte
    ok(pybuild("pull", "-q", f"{registry.host}/from-skopeo/busybox@{digest}"))


def test_unknown_tag_missing_registry_and_bad_names_are_one_line(pushed, empty_root, pybuild):
    before = store_snapshot(empty_root)
    repo = pushed.rsplit(":", 1)[0]
    one_error_line(pybuild("pull", f"{repo}:nope"), "not found")
    one_error_line(pybuild("pull", f"{repo.rsplit('/', 1)[0]}/nosuchrepo:1"), "not found")
    one_error_line(pybuild("pull", "127.0.0.1:9/nothing/here:1"), "127.0.0.1:9")
    one_error_line(pybuild("pull", "Upper/Case"), "invalid reference format")
    one_error_line(pybuild("pull", f"{repo}@sha256:{'0' * 64}"), "not found")
    one_error_line(pybuild("push", f"{repo}:not-here"), "does not exist locally")
    assert store_snapshot(empty_root) == before


def test_two_pulls_at_once_both_succeed_and_store_it_once(pushed, empty_root, pybuild):
    import sys

    from busybox_fixture import REPO
    procs = [subprocess.Popen([sys.executable, "-m", "builder", "pull", "-q", pushed], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert out == pushed + "\n"
    blobs = os.listdir(empty_root / "blobs" / "sha256")
    assert len(blobs) == 3  # config, layer, manifest: each once
    assert os.listdir(empty_root / "tmp") == []
    assert ok(pybuild("run", "--rm", pushed, "true"))


def test_login_push_pull_logout_with_basic_auth(busybox_root, auth_registry, pybuild, tmp_path, monkeypatch):
    reg = auth_registry
    ref = f"{reg.host}/private/busybox:1"
    ok(pybuild("tag", "busybox", ref))
    one_error_line(pybuild("push", ref), f"pybuild login {reg.host}")
    r = pybuild("login", "-u", reg.user, "--password-stdin", reg.host, input="wrong\n")
    one_error_line(r, "unauthorized")
    r = ok(pybuild("login", "-u", reg.user, "--password-stdin", reg.host, input=reg.password + "\n"))
    assert r.stdout == "Login Succeeded\n"
    conf = json.loads((Path(os.environ["DOCKER_CONFIG"]) / "config.json").read_text())
    assert reg.host in conf["auths"]
    ok(pybuild("push", ref))
    monkeypatch.setenv("PYBUILD_ROOT", str(tmp_path / "fresh"))
    ok(pybuild("pull", ref))
    assert ok(pybuild("logout", reg.host)).stdout == f"Removing login credentials for {reg.host}\n"
    one_error_line(pybuild("pull", ref), f"pybuild login {reg.host}")


def test_token_auth_push_and_pull(busybox_root, token_registry, pybuild, tmp_path, monkeypatch):
    reg = token_registry
    ref = f"{reg.host}/tokens/busybox:1"
    ok(pybuild("tag", "busybox", ref))
    ok(pybuild("login", "-u", reg.user, "--password-stdin", reg.host, input=reg.password))
    ok(pybuild("push", ref))
    monkeypatch.setenv("PYBUILD_ROOT", str(tmp_path / "fresh"))
    ok(pybuild("pull", ref))
    assert ok(pybuild("run", "--rm", ref, "echo", "t")).stdout == "t\n"
    ok(pybuild("logout", reg.host))


def test_from_busybox_resolves_through_a_docker_io_mirror(busybox_root, registry, pybuild,
                                                          tmp_path, empty_root, monkeypatch):
    monkeypatch.setenv("PYBUILD_ROOT", str(busybox_root))
    ok(pybuild("tag", "busybox", f"{registry.host}/library/busybox:latest"))
    ok(pybuild("push", f"{registry.host}/library/busybox:latest"))
    conf = tmp_path / "registries.conf"
    conf.write_text(f'[[registry]]\nlocation = "docker.io"\n[[registry.mirror]]\n'
                    f'location = "{registry.host}"\ninsecure = true\n')
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(conf))
    monkeypatch.setenv("PYBUILD_ROOT", str(empty_root))
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo mirrored > /m\n")
    ok(pybuild("build", "-t", "m", str(ctx)))
    assert ok(pybuild("run", "--rm", "m", "cat", "/m")).stdout == "mirrored\n"
    r = ok(pybuild("pull", "busybox"))
    assert r.stdout == "docker.io/library/busybox:latest\n"
    # blocked registries are refused before any request
    conf.write_text('[[registry]]\nlocation = "docker.io"\nblocked = true\n')
    one_error_line(pybuild("pull", "busybox:other"), "blocked")


def test_build_pull_takes_a_moved_tag_and_keeps_a_current_one(busybox_root, registry, pybuild,
                                                              tmp_path, monkeypatch):
    base = f"{registry.host}/moving/base:1"
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo v2 > /v\n")
    ok(pybuild("tag", "busybox", base))
    ok(pybuild("push", base))
    monkeypatch.setenv("PYBUILD_ROOT", str(tmp_path / "ci"))
    (ctx / "Dockerfile").write_text(f"FROM {base}\nRUN cat /v 2>/dev/null || echo none\n")
    r = ok(pybuild("build", "--pull", "--progress", "plain", str(ctx)))
    assert "Pulling from" in r.stderr
    r = ok(pybuild("build", "--pull", "--progress", "plain", str(ctx)))
    assert "Image is up to date" not in r.stderr and "Pull complete" not in r.stderr
    # the tag moves on in the registry: --pull takes the new image, a plain build does not
    monkeypatch.setenv("PYBUILD_ROOT", str(busybox_root))
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo v2 > /v\n")
    ok(pybuild("build", "-q", "-t", base, str(ctx)))
    ok(pybuild("push", base))
    monkeypatch.setenv("PYBUILD_ROOT", str(tmp_path / "ci"))
    (ctx / "Dockerfile").write_text(f"FROM {base}\nRUN cat /v > /seen\n")
    one_error_line(pybuild("build", "-q", str(ctx)), "/v")  # the old base has no /v
    ok(pybuild("build", "--pull", "-q", "-t", "seen", str(ctx)))
    assert ok(pybuild("run", "--rm", "seen", "cat", "/seen")).stdout == "v2\n"


@needs_skopeo
def test_prune_keeps_what_a_pulled_image_needs_to_be_pushed_unchanged(pushed, empty_root,
                                                                      registry, pybuild):
    ok(pybuild("pull", pushed))
    digest = skopeo_inspect(pushed)["Digest"]
    ok(pybuild("prune", "-a", "-f"))
    back = f"{registry.host}/after-prune/busybox:1"
    ok(pybuild("tag", pushed, back))
    assert ok(pybuild("push", "-q", back)).stdout.strip() == digest
    assert ok(pybuild("run", "--rm", back, "true"))
    sources = json.loads((empty_root / "sources.json").read_text())
    assert sources and all((empty_root / "blobs" / "sha256" / d[7:]).exists() for d in sources)
    ok(pybuild("rmi", back, pushed))
    ok(pybuild("prune", "-a", "-f"))
    assert json.loads((empty_root / "sources.json").read_text()) == {}  # gone with their blobs
    assert not list((empty_root / "blobs" / "sha256").iterdir())


def test_a_manifest_without_sizes_is_refused_before_any_blob(pushed, empty_root, registry,
                                                            pybuild):
    """Sizes bound what a registry may send (the spec requires them); one without is refused
    in one line, and nothing is downloaded or stored."""
    import urllib.request
    repo = pushed.split("/", 1)[1].rsplit(":", 1)[0]
    url = f"http://{registry.host}/v2/{repo}/manifests"
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    ok(pybuild("images"))  # the store exists (an empty layout) before we look at it
    with urllib.request.urlopen(urllib.request.Request(f"{url}/1", headers=accept)) as r:
        doc = json.loads(r.read())
    for desc in (doc["config"], doc["layers"][0]):
        bad = json.loads(json.dumps(doc))
        target = bad["config"] if desc is doc["config"] else bad["layers"][0]
        del target["size"]
        put = urllib.request.Request(f"{url}/nosize", data=json.dumps(bad).encode(), method="PUT",
                                     headers={"Content-Type": doc["mediaType"]})
        with urllib.request.urlopen(put) as r:
            assert r.status == 201
        before = store_snapshot(empty_root)
        one_error_line(pybuild("pull", pushed.rsplit(":", 1)[0] + ":nosize"), "has no valid size")
        assert store_snapshot(empty_root) == before
