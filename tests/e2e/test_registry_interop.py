"""Interop through a real registry, as a user observes it: what pybuild pushes, skopeo and
podman read (same digests, same image ID, it runs); what they push (a real Debian bookworm, a
schema2 copy, a multi-platform index), pybuild pulls, builds on and runs; zstd layers both ways.

Every test works in store roots of its own (PYBUILD_ROOT) and repositories of its own on the
session's docker-registry on loopback (plain http: pybuild and podman are told
--tls-verify=false only where they need it)."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import debian_fixture
import podman_fixture
import pytest
from e2e_helpers import ok, one_error_line
from podman_fixture import NO_PODMAN, RUN_OPTS

podman = podman_fixture.podman  # the fixture

SKOPEO = shutil.which("skopeo")
needs_skopeo = pytest.mark.skipif(SKOPEO is None, reason="needs skopeo (./install.sh installs it)")
needs_podman = pytest.mark.skipif(NO_PODMAN is not None, reason=NO_PODMAN or "")
DEBIAN_SKIP = debian_fixture.skip_reason()
needs_debian = pytest.mark.skipif(DEBIAN_SKIP is not None, reason=DEBIAN_SKIP or "")

APP = """\
FROM busybox
RUN mkdir /data && echo built-by-pybuild > /data/f
ENV MODE=interop
CMD ["cat", "/data/f"]
"""


def skopeo(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([SKOPEO, *args], capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, f"skopeo {' '.join(args)}: {r.stderr[-1000:]}"
    return r


def skopeo_inspect(ref: str, *extra: str) -> dict:
    return json.loads(skopeo("inspect", "--tls-verify=false", *extra, f"docker://{ref}").stdout)


def inspect(pybuild, ref: str) -> dict:
    return json.loads(ok(pybuild("inspect", ref)).stdout)[0]



@pytest.fixture
def app(busybox_root, registry, pybuild, tmp_path, request) -> tuple[str, dict]:
    """APP built and pushed by `pybuild build --push` to a repository named after the test;
    (its reference, what `pybuild inspect` says of it)."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(APP)
    ref = f"{registry.host}/interop-{request.node.name.lower().replace('_', '-')[5:40].strip('-')}/app:1"
    ok(pybuild("build", "-q", "--push", "-t", ref, str(ctx)))
    return ref, inspect(pybuild, ref)


# -- 1. a real Debian pushed by skopeo: FROM it, RUN in it, cache, run it ------------------------

@pytest.fixture(scope="module")
def debian(registry) -> debian_fixture.Pushed:
    """Debian bookworm (minbase) pushed by skopeo as HOST/library/debian:bookworm, once."""
    return debian_fixture.push_debian(registry.host, "library/debian", "bookworm")


@needs_debian
def test_build_from_a_real_debian_runs_apt_and_dpkg_and_caches(debian, empty_root, pybuild,
                                                               tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM {debian.ref}\n"
        "RUN dpkg-query -W -f='${Version}' coreutils > /v && apt-get --version | head -1 > /apt"
        " && cat /etc/debian_version\n")
    r = ok(pybuild("build", "--progress", "plain", "-t", "deb-app", str(ctx)))
    assert f"[internal] load metadata for {debian.ref}" in r.stderr and "Pulling from" in r.stderr
    assert re.search(r"^#\d+ \d+\.\d+ 12\.\d+$", r.stderr, re.M), r.stderr  # the RUN's output
    built = inspect(pybuild, "deb-app")
    assert inspect(pybuild, debian.ref)["RepoDigests"] == [
        f"{debian.ref.rsplit(':', 1)[0]}@{debian.digest}"]
    out = ok(pybuild("run", "--rm", "deb-app", "sh", "-c",
                     "cat /v; echo; cat /apt; cat /etc/debian_version")).stdout.splitlines()
    assert re.fullmatch(r"\d+\.\d+-\d+", out[0]), out      # coreutils' Debian version, e.g. 9.1-1
    assert out[1].startswith("apt 2."), out                 # bookworm's apt 2.6
    assert re.fullmatch(r"12\.\d+", out[2]), out
    again = ok(pybuild("build", "--progress", "plain", "-t", "deb-app", str(ctx)))
    assert again.stderr.count("CACHED") == 2, again.stderr   # the FROM (no pull) and the one RUN
    assert re.search(r"^#\d+ \d+\.\d+ ", again.stderr, re.M) is None, again.stderr  # nothing ran
    assert inspect(pybuild, "deb-app")["Id"] == built["Id"]
    assert "Pulling from" not in again.stderr, again.stderr  # nothing was pulled this time


@needs_debian
def test_run_pulls_the_debian_image_and_shows_bookworm(debian, empty_root, pybuild):
    r = ok(pybuild("run", "--rm", debian.ref, "cat", "/etc/os-release"))
    assert "VERSION_CODENAME=bookworm" in r.stdout
    assert 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"' in r.stdout
    assert f"Unable to find image '{debian.ref}' locally" in r.stderr


# -- 2. podman pulls what pybuild pushed ------------------------------------------------------------

@needs_podman
def test_podman_pulls_and_runs_what_build_push_pushed(app, podman):
    ref, built = app
    podman("pull", "-q", "--tls-verify=false", ref)
    got = json.loads(podman("image", "inspect", ref).stdout)[0]
    assert "sha256:" + got["Id"] == built["Id"]          # image ID = config digest on both sides
    assert got["RootFS"]["Layers"] == built["RootFS"]["Layers"] and len(got["RootFS"]["Layers"]) == 2
    assert f"{ref.rsplit(':', 1)[0]}@{got['Digest']}" in built["RepoDigests"]  # same manifest
    assert podman("run", *RUN_OPTS, ref).stdout == "built-by-pybuild\n"  # the image's CMD
    assert podman("run", *RUN_OPTS, ref, "sh", "-c", "echo $MODE").stdout == "interop\n"


# -- 3. skopeo reads it, converts it to schema2; pybuild pulls that back ------------------------

@needs_skopeo
def test_skopeo_copy_and_inspect_agree_with_pybuild_inspect(app, tmp_path):
    ref, built = app
    info = skopeo_inspect(ref)
    assert f"{ref.rsplit(':', 1)[0]}@{info['Digest']}" in built["RepoDigests"]
    assert info["Env"] == built["Config"]["Env"] and "MODE=interop" in info["Env"]
    assert info["Architecture"] == built["Architecture"] and info["Os"] == built["Os"] == "linux"
    config = skopeo_inspect(ref, "--config")
    assert config["config"]["Cmd"] == built["Config"]["Cmd"] == ["cat", "/data/f"]
    assert config["rootfs"]["diff_ids"] == built["RootFS"]["Layers"]
    layout = tmp_path / "oci"
    skopeo("copy", "-q", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:app")
    (desc,) = json.loads((layout / "index.json").read_text())["manifests"]
    assert desc["digest"] == info["Digest"]              # copied unchanged: same manifest bytes
    manifest = json.loads((layout / "blobs" / "sha256" / desc["digest"][7:]).read_bytes())
    assert manifest["config"]["digest"] == built["Id"]
    assert [d["digest"] for d in manifest["layers"]] == info["Layers"] and len(info["Layers"]) == 2
    for d in manifest["layers"]:                          # every blob is what its digest says
        blob = (layout / "blobs" / "sha256" / d["digest"][7:]).read_bytes()
        assert "sha256:" + hashlib.sha256(blob).hexdigest() == d["digest"]


@needs_skopeo
def test_a_schema2_copy_made_by_skopeo_is_pulled_back_and_runs(app, registry, empty_root, pybuild):
    ref, built = app
    v2s2 = ref.replace("/app:1", "/app-v2s2:1")
    skopeo("copy", "-q", "--src-tls-verify=false", "--dest-tls-verify=false", "--format", "v2s2",
           f"docker://{ref}", f"docker://{v2s2}")
    raw = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{v2s2}").stdout)
    assert raw["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert {d["mediaType"] for d in raw["layers"]} == {
        "application/vnd.docker.image.rootfs.diff.tar.gzip"}
    r = ok(pybuild("pull", "--progress", "plain", v2s2))
    assert f"Digest: {skopeo_inspect(v2s2)['Digest']}" in r.stderr
    got = inspect(pybuild, v2s2)
    assert got["RootFS"]["Layers"] == built["RootFS"]["Layers"]
    assert got["Config"]["Env"] == built["Config"]["Env"]
    assert ok(pybuild("run", "--rm", v2s2)).stdout == "built-by-pybuild\n"
    assert ok(pybuild("run", "--rm", v2s2, "sh", "-c", "echo $MODE")).stdout == "interop\n"


# -- 4. zstd layers ---------------------------------------------------------------------------------

@pytest.fixture
def zstd_app(app, pybuild) -> tuple[str, str]:
    """APP pushed again, to another repository, with `pybuild push --compression zstd`;
    (its reference, its image ID)."""
    ref, built = app
    zref = ref.replace("/app:1", "/app-zstd:1")
    ok(pybuild("tag", ref, zref))
    ok(pybuild("push", "--compression", "zstd", zref))
    return zref, built["Id"]


@needs_skopeo
def test_a_zstd_push_is_zstd_in_the_registry_and_pulls_and_runs(zstd_app, empty_root, pybuild):
    zref, image_id = zstd_app
    raw = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{zref}").stdout)
    assert [d["mediaType"] for d in raw["layers"]] == [
        "application/vnd.oci.image.layer.v1.tar+zstd"] * 2, raw
    r = ok(pybuild("pull", "--progress", "plain", zref))
    assert "Pull complete" in r.stderr
    assert inspect(pybuild, zref)["Id"] == image_id
    assert ok(pybuild("run", "--rm", zref)).stdout == "built-by-pybuild\n"


@needs_podman
def test_podman_pulls_and_runs_a_zstd_image(zstd_app, podman):
    """podman 4.3 (containers/image 5.23) decompresses zstd layers."""
    zref, image_id = zstd_app
    podman("pull", "-q", "--tls-verify=false", zref)
    assert "sha256:" + json.loads(podman("image", "inspect", zref).stdout)[0]["Id"] == image_id
    assert podman("run", *RUN_OPTS, zref).stdout == "built-by-pybuild\n"


# -- 5. a multi-platform index --------------------------------------------------------------------

def _blob(layout: Path, data: bytes, media_type: str) -> dict:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest[7:]).write_bytes(data)
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def _other_platform_image(layout: Path, arch: str) -> tuple[dict, str]:
    """A one-layer image for linux/`arch` in `layout` (its layer: /arch, no binaries);
    (its manifest descriptor, its config digest)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        data = f"{arch}\n".encode()
        info = tarfile.TarInfo("arch")
        info.size, info.mode, info.mtime = len(data), 0o644, 1700000000
        tf.addfile(info, io.BytesIO(data))
    tar = buf.getvalue()
    layer = _blob(layout, gzip.compress(tar, mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip")
    config = {"architecture": arch, "os": "linux", "config": {"Cmd": ["/x"]},
              "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]}}
    cdesc = _blob(layout, json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json")
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": cdesc, "layers": [layer]}
    return _blob(layout, json.dumps(manifest).encode(), manifest["mediaType"]), cdesc["digest"]


@pytest.fixture
def multi(busybox_root, registry, pybuild, tmp_path) -> dict:
    """An OCI index pushed by `skopeo copy --all`: the host's platform = busybox as `pybuild
    save --format oci` writes it, and a second platform (arm64, or amd64 on an arm64 host)
    whose layer holds only /arch. {ref, host, host_id, other, other_id}."""
    busybox = inspect(pybuild, "busybox")
    host_arch = busybox["Architecture"]
    other = "arm64" if host_arch != "arm64" else "amd64"
    archive, layout = tmp_path / "bb.tar", tmp_path / "layout"
    ok(pybuild("save", "--format", "oci", "-o", str(archive), "busybox"))
    with tarfile.open(archive) as tf:
        tf.extractall(layout)  # our own archive; no `filter=` (Python 3.11.2)
    (host_desc,) = json.loads((layout / "index.json").read_text())["manifests"]
    host_desc = {k: host_desc[k] for k in ("mediaType", "digest", "size")}
    host_desc["platform"] = {"architecture": host_arch, "os": "linux"}
    other_desc, other_id = _other_platform_image(layout, other)
    other_desc["platform"] = {"architecture": other, "os": "linux"}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [other_desc, host_desc]}  # the host's second: a pick, not the first entry
    idesc = _blob(layout, json.dumps(index).encode(), index["mediaType"])
    idesc["annotations"] = {"org.opencontainers.image.ref.name": "multi"}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [idesc]}))
    ref = f"{registry.host}/interop-multi/busybox:1"
    skopeo("copy", "-q", "--all", "--dest-tls-verify=false", f"oci:{layout}:multi", f"docker://{ref}")
    return {"ref": ref, "host": f"linux/{host_arch}", "host_id": busybox["Id"],
            "other": f"linux/{other}", "other_id": other_id, "index": idesc["digest"]}


@needs_skopeo
def test_pull_picks_the_platform_from_an_index(multi, empty_root, pybuild):
    ref = multi["ref"]
    raw = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}").stdout)
    assert raw["mediaType"] == "application/vnd.oci.image.index.v1+json" and len(raw["manifests"]) == 2
    r = ok(pybuild("pull", "--progress", "plain", ref))
    assert f"Digest: {multi['index']}" in r.stderr      # the index's digest, as docker says it
    got = inspect(pybuild, ref)
    assert got["Id"] == multi["host_id"] and f"linux/{got['Architecture']}" == multi["host"]
    assert ok(pybuild("run", "--rm", ref, "echo", "host")).stdout == "host\n"
    ok(pybuild("pull", "-q", "--platform", multi["other"], ref))
    got = inspect(pybuild, ref)
    assert got["Id"] == multi["other_id"] and f"linux/{got['Architecture']}" == multi["other"]
    one_error_line(pybuild("run", "--rm", ref), "/x")  # its CMD is not there: one line, no trace
    line = one_error_line(pybuild("pull", "--platform", "linux/s390x", ref), "linux/s390x")
    assert multi["host"] in line and multi["other"] in line, line
    assert inspect(pybuild, ref)["Id"] == multi["other_id"]  # the failed pull changed nothing


@needs_skopeo
def test_an_image_for_another_platform_is_pulled_with_docker_s_warning(multi, empty_root,
                                                                      pybuild, registry):
    ok(pybuild("pull", "-q", "--platform", multi["other"], multi["ref"]))
    single = f"{registry.host}/interop-other/only:1"
    ok(pybuild("tag", multi["ref"], single))
    ok(pybuild("push", "-q", single))
    ok(pybuild("rmi", single, multi["ref"]))
    r = ok(pybuild("pull", "--progress", "plain", single))
    assert f"WARNING: The requested image's platform ({multi['other']})" in r.stderr
    assert "does not match the detected host platform" in r.stderr
    assert inspect(pybuild, single)["Id"] == multi["other_id"]
