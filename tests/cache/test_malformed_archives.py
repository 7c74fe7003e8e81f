"""`pybuild load` and `pybuild import` given archives of the wrong shape: JSON documents that are
valid JSON but not what the format says, links that loop, paths nested thousands deep, corrupt
compressed archives. Each must end with one `pybuild: error:` line naming the file of the
archive at fault, a non-zero exit, and the store exactly as it was (tmp/ included)."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
from pathlib import Path

import pytest
from test_archives import snapshot  # tests/cache/test_archives.py

from cache.store import Store


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _layer() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo("hello.txt")
        ti.size = 3
        tf.addfile(ti, io.BytesIO(b"hi\n"))
    return buf.getvalue()


LAYER = _layer()
DIFF_ID = "sha256:" + _sha(LAYER)


def _config(**over) -> bytes:
    cfg = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
           "rootfs": {"type": "layers", "diff_ids": [DIFF_ID]}, "history": []}
    cfg.update(over)
    return json.dumps(cfg).encode()


def _tar(path: Path, members: dict) -> Path:
    """members: name -> bytes (a file) or ("sym", target) / ("lnk", target)."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, v in members.items():
            ti = tarfile.TarInfo(name)
            if isinstance(v, tuple):
                ti.type = tarfile.SYMTYPE if v[0] == "sym" else tarfile.LNKTYPE
                ti.linkname = v[1]
                tf.addfile(ti)
            else:
                ti.size = len(v)
                tf.addfile(ti, io.BytesIO(v))
    return path


def docker_members(manifest=None, config: bytes | None = None, **entry) -> dict:
    """A docker-archive; `manifest` replaces manifest.json, `entry` fields its one entry."""
    config = _config() if config is None else config
    cname = f"blobs/sha256/{_sha(config)}"
    lname = f"blobs/sha256/{_sha(LAYER)}"
    if manifest is None:
        manifest = [{"Config": cname, "RepoTags": ["mal/formed:1"], "Layers": [lname], **entry}]
    return {cname: config, lname: LAYER, "manifest.json": json.dumps(manifest).encode()}


def _blob(members: dict, doc) -> dict:
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    members[f"blobs/sha256/{_sha(raw)}"] = raw
    return {"digest": "sha256:" + _sha(raw), "size": len(raw)}


def oci_members(*, config=None, manifest=None, index=None, nested=None, **fields) -> dict:
    """An OCI archive; each argument replaces one document (`nested`: an index between
    index.json and the manifest, given as its list of children or a whole document),
    `fields` replace fields of the manifest."""
    m: dict = {}
    cdesc = _blob(m, _config() if config is None else config)
    ldesc = _blob(m, LAYER)
    if manifest is None:
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **cdesc},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **ldesc}],
                    **fields}
    mdesc = {"mediaType": "application/vnd.oci.image.manifest.v1+json", **_blob(m, manifest)}
    if nested is not None:
        doc = nested if isinstance(nested, dict) else {"schemaVersion": 2, "manifests": nested}
        mdesc = {"mediaType": "application/vnd.oci.image.index.v1+json", **_blob(m, doc)}
    if index is None:
        index = {"schemaVersion": 2, "manifests": [
            {**mdesc, "annotations": {"io.containerd.image.name": "docker.io/mal/formed:1"}}]}
    m["index.json"] = json.dumps(index).encode()
    m["oci-layout"] = b'{"imageLayoutVersion":"1.0.0"}'
    return m


DEEP = "/".join(["d"] * 3000)

CASES = {
    # docker-archive manifest.json
    "manifest.json is [1]": (lambda: docker_members(manifest=[1]), r"manifest\.json: \[0\]: .*object"),
    "manifest.json is an object": (lambda: docker_members(manifest={"Config": "x"}),
                                   r"manifest\.json.*list"),
    "manifest.json is []": (lambda: docker_members(manifest=[]), r"manifest\.json.*no images"),
    "Layers [5, null]": (lambda: docker_members(Layers=[5, None]),
                         r"manifest\.json: \[0\]\.Layers\[0\]: expected a string, got a number"),
    "Layers is a string": (lambda: docker_members(Layers="l.tar"), r"manifest\.json.*Layers.*list"),
    "Config missing": (lambda: docker_members(manifest=[{"Layers": []}]), r"manifest\.json.*Config"),
    "RepoTags [5]": (lambda: docker_members(RepoTags=[5]), r"manifest\.json.*RepoTags.*string"),
    "docker config is a list": (lambda: docker_members(config=b"[1, 2]"), r"blobs/sha256/.*object"),
    "docker config diff_ids hold a number": (
        lambda: docker_members(config=_config(rootfs={"type": "layers", "diff_ids": [5]})),
        r"blobs/sha256/.*diff_ids.*string"),
    "JSON nested 100000 deep": (lambda: docker_members(config=b"[" * 100000 + b"]" * 100000),
                                r"blobs/sha256/.*nested too deeply"),
    # OCI archive
    "index.json is []": (lambda: oci_members(index=[]), r"index\.json.*object"),
    "index.json manifests [5]": (lambda: oci_members(index={"manifests": [5]}),
                                 r"index\.json.*manifests\[0\].*object"),
    "index.json manifests is an object": (lambda: oci_members(index={"manifests": {"a": 1}}),
                                          r"index\.json.*manifests.*list"),
    "index.json entry without digest": (lambda: oci_members(index={"manifests": [{"size": 1}]}),
                                        r"index\.json.*manifests\[0\].*digest"),
    "OCI manifest is a list": (lambda: oci_members(manifest=[1]), r"blobs/sha256/.*object"),
    "OCI manifest layers hold a number": (lambda: oci_members(layers=[5]),
                                          r"blobs/sha256/.*layers\[0\].*object"),
    "OCI manifest without config": (lambda: oci_members(manifest={"layers": []}),
                                    r"blobs/sha256/.*config"),
    "OCI config is a list": (lambda: oci_members(config=b"[]"), r"blobs/sha256/.*object"),
    "OCI layer size is a string": (
        lambda: oci_members(layers=[{"digest": "sha256:" + _sha(LAYER), "size": "9"}]),
        r"blobs/sha256/.*layers\[0\]\.size: expected an integer"),
    "nested index entry without digest": (lambda: oci_members(nested=[{"mediaType": "x"}]),
                                          r"blobs/sha256/.*manifests\[0\].*digest"),
    "nested index manifests is a number": (lambda: oci_members(nested={"manifests": 5}),
                                           r"blobs/sha256/.*manifests.*list"),
    "nested index platform is a string": (
        lambda: oci_members(nested=[{"digest": "sha256:" + "2" * 64, "platform": "linux"},
                                    {"digest": "sha256:" + "3" * 64, "platform": "linux"}]),
        r"blobs/sha256/.*platform.*object"),
    "annotations is a list": (
        lambda: oci_members(index={"manifests": [{"digest": "sha256:" + "0" * 64,
                                                  "annotations": ["a"]}]}),
        r"index\.json.*annotations.*object"),
    # links and depth inside the archive
    "manifest.json is a symlink loop": (
        lambda: {**docker_members(), "manifest.json": ("sym", "a"), "a": ("sym", "manifest.json")},
        r"manifest\.json.*(symbolic links|loop)"),
    "layer is a hardlink loop": (
        lambda: {**docker_members(manifest=[{"Config": "c.json", "Layers": ["l1"]}]),
                 "c.json": _config(), "l1": ("lnk", "l2"), "l2": ("lnk", "l1")},
        r"l1.*(links|loop)"),
    "layer symlink 3000 deep": (
        lambda: {**docker_members(manifest=[{"Config": "c.json", "Layers": ["l"]}]),
                 "c.json": _config(), "l": ("sym", DEEP + "/x"), DEEP + "/x": ("sym", "../" * 3000 + "l")},
        r"\bl\b.*(symbolic links|loop)"),
    "layer under a 3000-level deep path": (
        lambda: {**docker_members(manifest=[{"Config": "c.json", "Layers": [DEEP + "/layer.tar"]}]),
                 "c.json": _config(), DEEP + "/layer.tar": LAYER},
        None),  # a deep name is fine: it loads
}


@pytest.fixture
def loaded_store(store_root, pybuild, tmp_path):
    """A store holding one image loaded from a good archive of the shape the cases break."""
    good = _tar(tmp_path / "good.tar", docker_members())
    r = pybuild("load", "-i", str(good))
    assert r.returncode == 0 and r.stdout == "Loaded image: mal/formed:1\n", r.stderr
    Store.open()
    return store_root


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_archive_is_one_clear_error(case, loaded_store, pybuild, tmp_path):
    make, message = CASES[case]
    bad = _tar(tmp_path / "bad.tar", make())
    before = snapshot(loaded_store)
    r = pybuild("load", "-i", str(bad))
    if message is None:
        assert r.returncode == 0, r.stderr
        return
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("pybuild: error: "), r.stderr
    assert str(bad) in lines[0], lines[0]
    assert re.search(message, lines[0]), lines[0]
    assert snapshot(loaded_store) == before


def test_good_oci_archive_of_the_test_shapes_loads(store_root, pybuild, tmp_path):
    """The OCI builder above makes a valid archive when nothing is replaced (so each case
    breaks one thing)."""
    r = pybuild("load", "-i", str(_tar(tmp_path / "ok.tar", oci_members())))
    assert r.returncode == 0 and r.stdout == "Loaded image: mal/formed:1\n", r.stderr


def test_nested_index_loads(store_root, pybuild, tmp_path):
    inner = oci_members()
    idx = json.loads(inner["index.json"])
    m = {k: v for k, v in inner.items() if k != "index.json"}
    child = {k: v for k, v in idx["manifests"][0].items() if k != "annotations"}
    child["platform"] = {"os": "linux", "architecture": "amd64"}
    nd = _blob(m, {"schemaVersion": 2, "manifests": [child]})
    m["index.json"] = json.dumps({"manifests": [{**nd, "annotations": {
        "io.containerd.image.name": "docker.io/mal/formed:2"}}]}).encode()
    r = pybuild("load", "-i", str(_tar(tmp_path / "n.tar", m)))
    assert r.returncode == 0 and r.stdout == "Loaded image: mal/formed:2\n", r.stderr


def _zstd(data: bytes) -> bytes:
    zstandard = pytest.importorskip("zstandard", reason="zstandard not installed (pip install zstandard)")
    return zstandard.ZstdCompressor().compress(data)


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_corrupt_compressed_archive_leaves_nothing_in_tmp(kind, loaded_store, pybuild, tmp_path):
    plain = _tar(tmp_path / "good.tar", docker_members()).read_bytes()
    packed = gzip.compress(plain, mtime=0) if kind == "gzip" else _zstd(plain)
    bad = tmp_path / f"bad.tar.{kind}"
    bad.write_bytes(packed[: len(packed) * 2 // 3])  # cut: decompression fails part way
    before = snapshot(loaded_store)
    r = pybuild("load", "-i", str(bad))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith("pybuild: error: "), r.stderr
    assert re.search(f"{kind}|truncated|corrupt", lines[0]), lines[0]
    assert "/tmp/ld-" not in lines[0], lines[0]  # names the user's file, not our scratch copy
    assert snapshot(loaded_store) == before
    assert not any((loaded_store / "tmp").iterdir())


# ---- import ---------------------------------------------------------------------------------

IMPORT_CASES = {
    "symlink loop": ({"a": ("sym", "b"), "b": ("sym", "a"), "a/x": b"x"}, r"a/x.*symbolic links"),
    "3000-level deep path": ({DEEP + "/f": b"x"}, r"path too long"),
    "600-level deep path": ({"/".join(["d"] * 600) + "/f": b"x"}, r"path too deep"),
    "hardlink to itself": ({"h": ("lnk", "h")}, r"hardlink"),
}


@pytest.mark.parametrize("case", list(IMPORT_CASES))
def test_malformed_import_is_one_clear_error(case, loaded_store, pybuild, tmp_path):
    members, message = IMPORT_CASES[case]
    bad = _tar(tmp_path / "rootfs.tar", members)
    before = snapshot(loaded_store)
    r = pybuild("import", str(bad), "mal/imported:1")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"pybuild: error: {bad}: "), r.stderr
    assert re.search(message, lines[0]), lines[0]
    assert snapshot(loaded_store) == before


def test_malformed_archive_on_stdin_is_named_stdin(loaded_store, pybuild, tmp_path):
    bad = _tar(tmp_path / "bad.tar", docker_members(manifest=[1]))
    before = snapshot(loaded_store)
    r = pybuild("load", input=bad.read_bytes())
    err = r.stderr.decode()
    assert r.returncode == 1 and err.startswith("pybuild: error: stdin: manifest.json: [0]: "), err
    assert err.count("\n") == 1 and snapshot(loaded_store) == before


def test_corrupt_gzip_import_names_the_file(loaded_store, pybuild, tmp_path):
    packed = gzip.compress(_layer(), mtime=0)
    bad = tmp_path / "rootfs.tar.gz"
    bad.write_bytes(packed[: len(packed) // 2])
    before = snapshot(loaded_store)
    r = pybuild("import", str(bad))
    assert r.returncode == 1 and r.stderr.startswith(f"pybuild: error: {bad}: "), r.stderr
    assert re.search("truncated|corrupt", r.stderr) and r.stderr.count("\n") == 1, r.stderr
    assert snapshot(loaded_store) == before
