"""A real Debian bookworm (minbase) base image for the registry tests, pushed by an independent
tool (skopeo), never by pybuild, so a pybuild pull is checked against something it did not write.

    from debian_fixture import push_debian, skip_reason
    pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")
    pushed = push_debian("127.0.0.1:5000")      # -> Pushed(ref="127.0.0.1:5000/library/debian:
                                                #    bookworm", digest="sha256:...")

The rootfs tar is made once by `mmdebstrap --variant=minbase --mode=root --format=tar` (about
20 s, network) and cached at CACHE_TAR with a key file beside it (mmdebstrap version, suite,
variant, mirror, SOURCE_DATE_EPOCH, the tar's sha256): later runs take no network while the key
matches. Both are written atomically under a lock, so parallel sessions build it once.
push_debian lays the tar out as a one-layer OCI image layout (the tar hard-linked in as an
uncompressed layer, so no copy) and runs `skopeo copy oci:... docker://HOST/REPO:TAG`
(skopeo gzips the layer on the way, as a docker push would).

A plain module (not conftest) so bench/ scripts can use it too.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import NamedTuple

CACHE_DIR = Path("/var/cache/pybuild-tests")
CACHE_TAR = CACHE_DIR / "debian-bookworm-minbase.tar"
CACHE_KEY = CACHE_DIR / "debian-bookworm-minbase.json"
PYTHON = ("python3-pip",)  # `include=PYTHON`: minbase plus python3 and pip (issue 12's .pyc check)
SUITE, VARIANT = "bookworm", "minbase"
MIRROR = "http://deb.debian.org/debian"
SOURCE_DATE_EPOCH = 1700000000   # 2023-11-14: fixed, so file times and the config's "created"
                                 # do not change from one build to the next
ARCHES = {"amd64": ("amd64", None), "arm64": ("arm64", "v8"), "armhf": ("arm", "v7"),
          "armel": ("arm", "v5"), "i386": ("386", None), "ppc64el": ("ppc64le", None),
          "s390x": ("s390x", None), "riscv64": ("riscv64", None)}


class Pushed(NamedTuple):
    ref: str       # "HOST/REPO:TAG"
    digest: str    # the manifest digest as pushed (skopeo --digestfile)


def mmdebstrap_version() -> str | None:
    if not shutil.which("mmdebstrap"):
        return None
    r = subprocess.run(["mmdebstrap", "--version"], capture_output=True, text=True, check=False)
    return r.stdout.strip() if r.returncode == 0 else None


def _want_key(version: str, include: tuple[str, ...] = ()) -> dict:
    key = {"mmdebstrap": version, "suite": SUITE, "variant": VARIANT, "mirror": MIRROR,
           "source_date_epoch": SOURCE_DATE_EPOCH}
    if include:  # the plain minbase key stays what it was: its cached tar stays valid
        key["include"] = sorted(include)
    return key


def _paths(include: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """(tar, key file) of the image with `include`d packages (none: the plain minbase)."""
    if not include:
        return CACHE_TAR, CACHE_KEY
    stem = f"debian-{SUITE}-{VARIANT}-" + "-".join(sorted(include))
    return CACHE_DIR / f"{stem}.tar", CACHE_DIR / f"{stem}.json"


def _cached_key(include: tuple[str, ...] = ()) -> dict | None:
    """The cache's key (with its tar's sha256 and size) when the tar is there, complete, and was
    made by this mmdebstrap; else None."""
    tar, key_file = _paths(include)
    try:
        key = json.loads(key_file.read_text())
        size = tar.stat().st_size
    except (OSError, ValueError):
        return None
    version = mmdebstrap_version()
    want = _want_key(version or key.get("mmdebstrap", ""), include)
    if (not isinstance(key, dict) or key.get("size") != size
            or {k: key.get(k) for k in want} != want):
        return None
    return key


def _mirror_reachable(timeout: float = 5) -> bool:
    try:
        req = urllib.request.Request(f"{MIRROR}/dists/{SUITE}/InRelease", method="HEAD")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def skip_reason(include: tuple[str, ...] = ()) -> str | None:
    """None when push_debian (make_layout with `include`) can work here; else what to do (for
    pytest.mark.skipif). Checked once per process."""
    if include not in _skip:
        _skip[include] = _find_skip_reason(include)
    return _skip[include]


_skip: dict[tuple[str, ...], str | None] = {}


def _find_skip_reason(include: tuple[str, ...] = ()) -> str | None:
    if not shutil.which("skopeo"):
        return "needs skopeo to push the Debian base image (apt-get install skopeo)"
    if _cached_key(include) is not None:
        return None
    where = f"no cached Debian image at {_paths(include)[0]}"
    if mmdebstrap_version() is None:
        return f"{where} and no mmdebstrap to make it (apt-get install mmdebstrap)"
    if os.geteuid() != 0:
        return f"{where}, and mmdebstrap --mode=root needs root: run the tests as root once"
    if not _mirror_reachable():
        return (f"{where}, and {MIRROR} is unreachable: run the tests once with network "
                "(the image is cached after that)")
    return None


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return "sha256:" + h.hexdigest()


def debian_tar(include: tuple[str, ...] = ()) -> tuple[Path, dict]:
    """(the cached rootfs tar, its key), made with mmdebstrap first when missing or stale;
    `include`: packages added to minbase (`mmdebstrap --include`), cached apart."""
    tar, key_file = _paths(include)
    key = _cached_key(include)
    if key is not None:
        return tar, key
    from cache.atomic import Lock, publish, write_json

    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with Lock(CACHE_DIR / ".debian.lock").held():
        key = _cached_key(include)  # another process made it while this one waited
        if key is not None:
            return tar, key
        version = mmdebstrap_version()
        if version is None:
            raise RuntimeError("mmdebstrap is not installed (apt-get install mmdebstrap)")
        tmp = CACHE_DIR / f".debian-{os.getpid()}.tar"
        env = dict(os.environ, SOURCE_DATE_EPOCH=str(SOURCE_DATE_EPOCH))
        extra = [f"--include={','.join(sorted(include))}"] if include else []
        try:
            r = subprocess.run(["mmdebstrap", f"--variant={VARIANT}", "--mode=root",
                                "--format=tar", "--quiet", *extra, SUITE, str(tmp), MIRROR],
                               env=env, capture_output=True, text=True, check=False, timeout=900)
            if r.returncode != 0:
                raise RuntimeError(f"mmdebstrap failed ({r.returncode}): {r.stderr[-2000:]}")
            key = dict(_want_key(version, include), sha256=_sha256_file(tmp),
                       size=tmp.stat().st_size)
            key_file.unlink(missing_ok=True)   # a crash from here on leaves no matching key
            publish(tmp, tar)
            write_json(key_file, key)
        finally:
            tmp.unlink(missing_ok=True)
    return tar, key


def debian_gzip(include: tuple[str, ...] = ()) -> tuple[Path, dict]:
    """(the cached rootfs tar gzipped, {"sha256", "size"} of the .gz): made once from debian_tar
    with `gzip -n -1` (~6 s for the 245 MB python image) and cached beside it, keyed by the tar's
    sha256, so an image loaded from it keeps a compressed blob: a later `pybuild save` or push
    copies it instead of compressing 245 MB again (~9 s)."""
    tar, key = debian_tar(include)
    gz, gz_key = tar.with_name(tar.name + ".gz"), tar.with_name(tar.name + ".gz.json")

    def cached() -> dict | None:
        try:
            k = json.loads(gz_key.read_text())
            ok = k.get("tar_sha256") == key["sha256"] and k.get("size") == gz.stat().st_size
        except (OSError, ValueError, AttributeError):
            return None
        return k if ok else None

    if (k := cached()) is not None:
        return gz, k
    from cache.atomic import Lock, publish, write_json

    with Lock(CACHE_DIR / ".debian.lock").held():
        if (k := cached()) is not None:
            return gz, k
        tmp = CACHE_DIR / f".debian-{os.getpid()}.tar.gz"
        try:
            with open(tmp, "wb") as out:
                subprocess.run(["gzip", "-n", "-1", "-c", str(tar)], stdout=out, check=True)
            k = {"tar_sha256": key["sha256"], "sha256": _sha256_file(tmp),
                 "size": tmp.stat().st_size}
            gz_key.unlink(missing_ok=True)
            publish(tmp, gz)
            write_json(gz_key, k)
        finally:
            tmp.unlink(missing_ok=True)
    return gz, k


def _write_blob(layout: Path, data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest[7:]).write_bytes(data)
    return digest, len(data)


def make_layout(layout: Path, tag: str = SUITE, include: tuple[str, ...] = (), *,
                gzip: bool = False) -> Path:
    """An OCI image layout at `layout` holding the Debian image under `tag`: one uncompressed
    layer (the cached tar, hard-linked when on the same filesystem), the host's platform;
    `include`: the image with those packages added (`debian_tar`); gzip: the layer is the cached
    gzip of the tar instead (`debian_gzip`), the same image (same config, diff_id and ID)."""
    tar, key = debian_tar(include)
    blob, media = (tar, key), "application/vnd.oci.image.layer.v1.tar"
    if gzip:
        blob, media = debian_gzip(include), media + "+gzip"
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    layer = layout / "blobs" / "sha256" / blob[1]["sha256"][7:]
    if not layer.exists():
        try:
            os.link(blob[0], layer)
        except OSError:
            shutil.copyfile(blob[0], layer)
    dpkg_arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                               check=True).stdout.strip()
    arch, variant = ARCHES.get(dpkg_arch, (dpkg_arch, None))
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(SOURCE_DATE_EPOCH))
    config = {"created": created, "architecture": arch, "os": "linux",
              "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
                                 "/sbin:/bin"], "Cmd": ["bash"]},
              "rootfs": {"type": "layers", "diff_ids": [key["sha256"]]},
              "history": [{"created": created, "created_by":
                           f"{key['mmdebstrap']} --variant={VARIANT} {SUITE} {MIRROR}"}]}
    if variant:
        config["variant"] = variant
    cdigest, csize = _write_blob(layout, json.dumps(config, sort_keys=True).encode())
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": cdigest, "size": csize},
                "layers": [{"mediaType": media, "digest": blob[1]["sha256"],
                            "size": blob[1]["size"]}]}
    mdigest, msize = _write_blob(layout, json.dumps(manifest, sort_keys=True).encode())
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_text(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": mdigest, "size": msize,
                       "annotations": {"org.opencontainers.image.ref.name": tag}}]}))
    return layout


def push_debian(registry_host: str, repo: str = "library/debian", tag: str = SUITE, *,
                tls_verify: bool = False, creds: str | None = None,
                manifest_format: str | None = None) -> Pushed:
    """Push the Debian bookworm minbase image to `registry_host` as REPO:TAG with skopeo: one
    gzip layer (~63 MB), an OCI manifest, or a Docker schema2 one with manifest_format="v2s2"
    (skopeo's --format). `creds` is "user:password" for a registry with auth."""
    ref = f"{registry_host}/{repo}:{tag}"
    with tempfile.TemporaryDirectory(prefix="debian-oci-", dir=CACHE_DIR
                                     if os.access(CACHE_DIR, os.W_OK) else None) as d:
        layout = make_layout(Path(d) / "layout", tag)
        cmd = ["skopeo", "copy", "--quiet", f"--dest-tls-verify={str(tls_verify).lower()}",
               "--digestfile", str(Path(d) / "digest")]
        if creds:
            cmd.append(f"--dest-creds={creds}")
        if manifest_format:
            cmd.append(f"--format={manifest_format}")
        r = subprocess.run([*cmd, f"oci:{layout}:{tag}", f"docker://{ref}"],
                           capture_output=True, text=True, check=False, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"skopeo copy to {ref} failed: {r.stderr.strip()[-2000:]}")
        return Pushed(ref, (Path(d) / "digest").read_text().strip())
