"""save/load judged by real tools (skopeo, umoci, docker), and bad archives refused with one
clear line while the store stays exactly as it was."""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from cache.layers import extract
from cache.store import Store

needs_skopeo = pytest.mark.skipif(shutil.which("skopeo") is None,
                                  reason="skopeo not installed (apt-get install skopeo)")
needs_umoci = pytest.mark.skipif(shutil.which("umoci") is None,
                                 reason="umoci not installed (apt-get install umoci)")


def _unpack(archive: Path, dest: Path) -> None:
    """Unpack an archive tar with our own safe extractor (every path kept inside `dest`)."""
    with open(archive, "rb") as f:
        extract(f, dest, whiteouts="apply")


def snapshot(root: Path) -> dict:
    """Every path under the store with its content hash: 'unchanged' means equal snapshots."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_file() and not p.is_symlink():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = "dir" if p.is_dir() else "other"
    return out


@pytest.fixture
def saved(busybox_root, pybuild, tmp_path):
    """busybox saved in both forms: {"docker": path, "oci": path}."""
    out = {}
    for fmt in ("docker", "oci"):
        out[fmt] = tmp_path / f"bb-{fmt}.tar"
        r = pybuild("save", "--format", fmt, "-o", str(out[fmt]), "busybox")
        assert r.returncode == 0, r.stderr
    return out


@needs_skopeo
def test_skopeo_inspects_both_forms(saved):
    bb = Store.open().image("busybox")
    for ref in (f"docker-archive:{saved['docker']}", f"oci-archive:{saved['oci']}:latest",
                f"oci-archive:{saved['docker']}:latest"):
        r = subprocess.run(["skopeo", "inspect", "--config", ref], check=False, capture_output=True,
                           text=True)
        assert r.returncode == 0, (ref, r.stderr)
        cfg = json.loads(r.stdout)
        assert cfg["rootfs"]["diff_ids"] == list(bb.diff_ids) and cfg["config"]["Cmd"] == ["sh"]
    r = subprocess.run(["skopeo", "inspect", "--raw", f"oci-archive:{saved['oci']}:latest"],
                       check=False, capture_output=True, text=True)
    man = json.loads(r.stdout)
    assert man["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert man["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert man["config"]["digest"] == bb.id


def test_docker_form_layout(saved):
    with tarfile.open(saved["docker"]) as tf:
        names = tf.getnames()
        manifest = json.load(tf.extractfile("manifest.json"))
        index = json.load(tf.extractfile("index.json"))
    assert {"oci-layout", "index.json", "manifest.json"} <= set(names)
    assert manifest[0]["RepoTags"] == ["busybox:latest"]
    assert index["manifests"][0]["annotations"] == {
        "io.containerd.image.name": "docker.io/library/busybox:latest",
        "org.opencontainers.image.ref.name": "latest"}
    with tarfile.open(saved["oci"]) as tf:
        assert "manifest.json" not in tf.getnames()


def test_save_is_deterministic(saved, pybuild, tmp_path):
    again = tmp_path / "again.tar"
    assert pybuild("save", "-o", str(again), "busybox").returncode == 0
    assert again.read_bytes() == saved["docker"].read_bytes()


@needs_umoci
def test_umoci_unpacks_the_oci_form(saved, tmp_path):
    layout = tmp_path / "layout"
    layout.mkdir()
    _unpack(saved["oci"], layout)
    bundle = tmp_path / "bundle"
    r = subprocess.run(["umoci", "unpack", "--image", f"{layout}:latest", str(bundle)],
                       check=False, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rootfs = bundle / "rootfs"
    assert (rootfs / "bin" / "busybox").read_bytes() == Path("/bin/busybox").read_bytes()
    assert os.readlink(rootfs / "bin" / "sh") == "busybox"
    assert "app:x:1000:1000" in (rootfs / "etc" / "passwd").read_text()
    assert oct((rootfs / "tmp").stat().st_mode & 0o7777) == "0o1777"
    cfg = json.loads((bundle / "config.json").read_text())
    assert cfg["process"]["args"] == ["sh"]


@pytest.mark.parametrize("fmt", ["docker", "oci"])
def test_load_into_a_fresh_store_gives_the_same_image(saved, fmt, tmp_path, pybuild, monkeypatch):
    bb = Store.open().image("busybox")
    monkeypatch.setenv("PYBUILD_ROOT", str(tmp_path / "fresh"))
    r = pybuild("load", "-i", str(saved[fmt]))
    assert r.returncode == 0, r.stderr
    store = Store.open()
    # both forms carry io.containerd.image.name, as BuildKit writes them
    assert r.stdout == "Loaded image: busybox:latest\n"
    img = store.image("busybox")
    assert img.id == bb.id and img.diff_ids == bb.diff_ids
    d = store.layer_dir(img.diff_ids[0])  # unpacked from the received blob on first use
    assert (d / "bin" / "busybox").read_bytes() == Path("/bin/busybox").read_bytes()
    assert (d / "home" / "app").stat().st_uid == (1000 if os.geteuid() == 0 else os.geteuid())
    # saved again from the loaded copy: the same archive bytes (blobs kept as received)
    again = tmp_path / "again.tar"
    assert pybuild("save", "--format", fmt, "-o", str(again), "busybox").returncode == 0
    if fmt == "docker":
        assert again.read_bytes() == saved[fmt].read_bytes()


def test_load_an_oci_layout_dir_and_zstd(busybox_root, pybuild, tmp_path, monkeypatch):
    arch = tmp_path / "z.tar"
    r = pybuild("save", "--format", "oci", "--compression", "zstd", "-o", str(arch), "busybox")
    assert r.returncode == 0
    layout = tmp_path / "layout"
    layout.mkdir()
    _unpack(arch, layout)
    man = json.loads((layout / "blobs/sha256" / json.loads((layout / "index.json").read_text())
                      ["manifests"][0]["digest"][7:]).read_text())
    assert man["layers"][0]["mediaType"].endswith("tar+zstd")
    monkeypatch.setenv("PYBUILD_ROOT", str(tmp_path / "fresh"))
    r = pybuild("load", "-i", str(layout))
    assert r.returncode == 0, r.stderr
    bb = Store.open().image(r.stdout.split()[-1])
    assert (Store.open().layer_dir(bb.diff_ids[0]) / "etc" / "group").is_file()


def test_load_old_docker_archive(busybox_root, pybuild, tmp_path, monkeypatch):
    """The pre-v25 docker save layout: <id>/layer.tar (uncompressed), <config>.json, manifest.json."""
    store = Store.open()
    bb = store.image("busybox")
    layer = io.BytesIO()
    store.layer_tar(bb.diff_ids[0], layer)
    cfg = store.blob_path(bb.id).read_bytes()
    buf = tmp_path / "old.tar"
    with tarfile.open(buf, "w") as tf:
        def add(name, data):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        add("abc123/layer.tar", layer.getvalue())
        add("abc123/VERSION", b"1.0")
        add(f"{bb.id[7:]}.json", cfg)
        add("manifest.json", json.dumps([{"Config": f"{bb.id[7:]}.json", "RepoTags": ["old/busybox:1"],
                                          "Layers": ["abc123/layer.tar"]}]).encode())
        add("repositories", b"{}")
    monkeypatch.setenv("PYBUILD_ROOT", str(tmp_path / "fresh"))
    r = pybuild("load", "-i", str(buf))
    assert r.returncode == 0 and r.stdout == "Loaded image: old/busybox:1\n", r.stderr
    assert Store.open().resolve("old/busybox:1") == bb.id
    r = pybuild("save", "-o", str(tmp_path / "re.tar"), "old/busybox:1")  # gzip made from the tar
    assert r.returncode == 0, r.stderr


def _rewrite(src: Path, dst: Path, change) -> None:
    """Copy an archive, letting change(name, data) -> data|None (None drops the member)."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for m in tin:
            data = tin.extractfile(m).read() if m.isfile() else None
            if m.isfile():
                data = change(m.name, data)
                if data is None:
                    continue
                m.size = len(data)
            tout.addfile(m, io.BytesIO(data) if data is not None else None)


def _bad_cases(saved: Path, tmp_path: Path):
    with tarfile.open(saved) as tf:
        man = json.load(tf.extractfile("manifest.json"))[0]
    layer = man["Layers"][0].rsplit("/", 1)[-1]
    cases = {}
    data = saved.read_bytes()
    cases["truncated"] = data[: len(data) // 2]
    cases["corrupt"] = b"\x00garbage" * 100
    p = tmp_path / "flip.tar"
    _rewrite(saved, p, lambda n, d: (d[:-20] + bytes(20)) if n.endswith(layer) else d)
    cases["digest mismatch"] = p.read_bytes()
    p = tmp_path / "missing.tar"
    _rewrite(saved, p, lambda n, d: None if n.endswith(layer) else d)
    cases["missing blob"] = p.read_bytes()
    return cases


@pytest.mark.parametrize("case,message", [
    ("truncated", "truncated|corrupt|not a valid|not in it"),
    ("corrupt", "not a valid image archive|not an image archive"),
    ("digest mismatch", "digest mismatch|corrupt"),
    ("missing blob", "not in"),
])
def test_bad_archives_fail_with_one_line_and_leave_the_store_unchanged(saved, busybox_root, pybuild, tmp_path,
                                                                      monkeypatch, case, message):
    import re
    bad = tmp_path / "bad.tar"
    bad.write_bytes(_bad_cases(saved["docker"], tmp_path)[case])
    fresh = tmp_path / "fresh"
    for root in (busybox_root, fresh):
        monkeypatch.setenv("PYBUILD_ROOT", str(root))
        Store.open()
        before = snapshot(root)
        r = pybuild("load", "-i", str(bad))
        assert r.returncode == 1, (case, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("pybuild: error: "), r.stderr
        assert re.search(message, lines[0]), lines[0]
        assert "Traceback" not in r.stderr
        assert snapshot(root) == before, f"{case}: the store changed"


def test_missing_manifest_blob_in_oci_layout(saved, pybuild, tmp_path, monkeypatch):
    layout = tmp_path / "layout"
    layout.mkdir()
    _unpack(saved["oci"], layout)
    index = json.loads((layout / "index.json").read_text())
    (layout / "blobs/sha256" / index["manifests"][0]["digest"][7:]).unlink()
    monkeypatch.setenv("PYBUILD_ROOT", str(tmp_path / "fresh"))
    r = pybuild("load", "-i", str(layout))
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "not in it" in r.stderr, r.stderr
