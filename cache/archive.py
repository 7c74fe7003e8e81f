"""Image archives: save (docker-archive in the dual form, or a plain OCI archive) and load
(docker-archive old and new, OCI archive, OCI layout dir).

Save writes the archive tar with our own deterministic headers, straight from the store's blobs.
Load verifies every digest and diff_id in a staging area under tmp/ and only then moves blobs into
place and updates the indexes, so a bad archive leaves the store as it was.
"""
from __future__ import annotations

import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from cache import image as im
from cache import atomic, refs, tarfmt
from cache.compress import CHUNK, HashingWriter, open_decompressed, sniff
from cache.errors import StoreError

_MAX_JSON = 16 << 20


# ---- save ----------------------------------------------------------------------------------

def _entry(out, name: str, data: bytes) -> None:
    out.write(tarfmt.header(name.encode(), mode=0o644, size=len(data)))
    out.write(data)
    out.write(tarfmt.pad(len(data)))


def _dir_entry(out, name: str) -> None:
    out.write(tarfmt.header(name.encode(), mode=0o755, typeflag=tarfmt.DIR))


def _blob_entry(out, store, digest: str) -> None:
    path = store.blob_path(digest)
    size = path.stat().st_size
    out.write(tarfmt.header(f"blobs/sha256/{digest[7:]}".encode(), mode=0o644, size=size))
    left = size
    with open(path, "rb") as f:
        while left:
            data = f.read(min(CHUNK, left))
            if not data:
                raise StoreError(f"blob {digest} shrank while saving")
            out.write(data)
            left -= len(data)
    out.write(tarfmt.pad(size))


def save(store, names: list[str], out, *, fmt: str = "docker", compression: str = "gzip") -> None:
    """Write the images `names` (tags or IDs) as one archive tar to `out`: a binary file object,
    or a path (written to a temporary name beside it and renamed when complete)."""
    if fmt not in ("docker", "oci"):
        raise StoreError(f"unknown archive format {fmt!r} (use docker or oci)")
    if isinstance(out, (str, os.PathLike)):
        path = Path(out)
        with atomic.replacing(path, kind="." + path.name) as f:
            save(store, names, f, fmt=fmt, compression=compression)
        return
    index_entries, manifest_json, blobs = [], [], set()
    for name in names:
        img = store.image(name)
        desc = store.manifest(img.id, compression)
        man = json.loads(store.read_blob(desc["digest"]))
        blobs.update([desc["digest"], img.id] + [layer["digest"] for layer in man["layers"]])
        tags = []
        try:
            full = refs.normalize(name)
            if store.tags().get(full) == img.id:
                tags = [full]
        except StoreError:
            pass  # an ID or name@digest: saved without a name, like docker
        for full in tags:
            index_entries.append({**desc, "annotations": {
                "io.containerd.image.name": full,
                "org.opencontainers.image.ref.name": refs.split_tag(full)[1]}})
        if not tags:
            index_entries.append(desc)
        manifest_json.append({"Config": f"blobs/sha256/{img.id[7:]}",
                              "RepoTags": [refs.familiar(t) for t in tags] or None,
                              "Layers": [f"blobs/sha256/{layer['digest'][7:]}" for layer in man["layers"]]})
    index = {"schemaVersion": 2, "mediaType": im.MT_OCI_INDEX, "manifests": index_entries}
    _dir_entry(out, "blobs/")
    _dir_entry(out, "blobs/sha256/")
    for d in sorted(blobs):
        _blob_entry(out, store, d)
    _entry(out, "index.json", json.dumps(index, separators=(",", ":")).encode())
    if fmt == "docker":
        _entry(out, "manifest.json", json.dumps(manifest_json, separators=(",", ":")).encode())
    _entry(out, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    out.write(tarfmt.END)


# ---- load: sources -------------------------------------------------------------------------

class _TarSource:
    """Members of an archive tar by name (random access; a compressed archive is first
    decompressed into the store's tmp/)."""

    def __init__(self, path: Path, store):
        self.tmp = None
        with open(path, "rb") as f:
            kind = sniff(f.read(4))
        if kind != "none":
            out, self.tmp = store.tmp_file("ld")
            with out, open(path, "rb") as f:
                r = open_decompressed(f)
                while data := r.read(CHUNK):
                    out.write(data)
            path = self.tmp
        try:
            self.tf = tarfile.open(path, "r:")  # noqa: SIM115 - closed in close()
            self.members = {}
            for m in self.tf:
                name = "/".join(p for p in m.name.split("/") if p not in ("", "."))
                self.members[name] = m
        except (tarfile.TarError, EOFError) as e:
            self.close()
            raise StoreError(f"{path}: not a valid image archive ({e})") from None

    def exists(self, name: str) -> bool:
        return name in self.members

    def open(self, name: str):
        m = self.members.get(name)
        if m is None:
            raise StoreError(f"archive names {name!r}, which is not in it")
        if m.issym() or m.islnk():  # docker-archive v1 layer dirs may link layer.tar files
            target = m.linkname if m.islnk() else os.path.normpath(
                os.path.join(os.path.dirname(name), m.linkname))
            return self.open("/".join(p for p in target.split("/") if p not in ("", ".")))
        if not m.isfile():
            raise StoreError(f"archive member {name!r} is not a file")
        try:
            return self.tf.extractfile(m)
        except (tarfile.TarError, EOFError) as e:
            raise StoreError(f"archive member {name!r}: {e}") from None

    def close(self) -> None:
        if getattr(self, "tf", None) is not None:
            self.tf.close()
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)


class _DirSource:
    def __init__(self, path: Path):
        self.root = path.resolve()

    def _path(self, name: str) -> Path:
        p = (self.root / name).resolve()
        if self.root not in p.parents:
            raise StoreError(f"layout names {name!r}, outside the layout directory")
        return p

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def open(self, name: str):
        try:
            return open(self._path(name), "rb")
        except FileNotFoundError:
            raise StoreError(f"layout names {name!r}, which is not in it") from None

    def close(self) -> None:
        pass


# ---- load: staging -------------------------------------------------------------------------

@dataclass
class _Staged:
    blobs: dict[str, Path] = field(default_factory=dict)      # digest -> tmp file
    tmps: list[Path] = field(default_factory=list)            # every tmp file we made
    layers: list[tuple[str, str, int, str, int]] = field(default_factory=list)
    configs: list[bytes] = field(default_factory=list)
    tags: list[tuple[str, bytes]] = field(default_factory=list)  # (full name, config raw)


def _read_json(src, name: str, expected: str | None = None):
    with src.open(name) as f:
        raw = f.read(_MAX_JSON + 1)
    if len(raw) > _MAX_JSON:
        raise StoreError(f"{name}: too large for a JSON document")
    if expected is not None:
        from cache.keys import digest_bytes
        if digest_bytes(raw) != expected:
            raise StoreError(f"digest mismatch for {name}: expected {expected}, got {digest_bytes(raw)}")
    try:
        return json.loads(raw), raw
    except ValueError as e:
        raise StoreError(f"{name}: invalid JSON ({e})") from None


def _stage_layer(store, st: _Staged, src, name: str, diff_id: str, expected: str | None,
                 expected_size: int | None = None) -> None:
    """Copy a layer blob to tmp/ hashing it, then hash its uncompressed tar: both must match."""
    with src.open(name) as f:
        out, tmp = store.tmp_file("ld")
        st.tmps.append(tmp)
        h = HashingWriter(out)
        with out:
            while data := f.read(CHUNK):
                h.write(data)
    st.blobs[h.digest] = tmp
    if expected is not None and h.digest != expected:
        raise StoreError(f"digest mismatch for layer {name}: expected {expected}, got {h.digest}")
    if expected_size is not None and h.size != expected_size:
        raise StoreError(f"size mismatch for layer {name}: expected {expected_size}, got {h.size}")
    with open(tmp, "rb") as f:
        kind = sniff(f.read(4))
        f.seek(0)
        r = open_decompressed(f)
        d = HashingWriter()
        while data := r.read(CHUNK):
            d.write(data)
    if d.digest != diff_id:
        raise StoreError(f"layer {name} does not match the config's diff_id {diff_id} "
                         f"(its tar hashes to {d.digest}): the archive is corrupt")
    st.layers.append((diff_id, h.digest, h.size, kind, d.size))


def _diff_ids(config: dict, where: str) -> list[str]:
    ids = (config.get("rootfs") or {}).get("diff_ids")
    if not isinstance(ids, list):
        raise StoreError(f"{where}: image config has no rootfs.diff_ids")
    return ids


def _load_docker(store, src, st: _Staged) -> None:
    doc, _ = _read_json(src, "manifest.json")
    if not isinstance(doc, list) or not doc:
        raise StoreError("manifest.json: expected a non-empty list of images")
    for entry in doc:
        cfg_name = entry.get("Config")
        if not isinstance(cfg_name, str):
            raise StoreError("manifest.json: an entry has no Config")
        expected = None
        base = cfg_name.rsplit("/", 1)[-1].removesuffix(".json")
        if len(base) == 64 and all(c in "0123456789abcdef" for c in base):
            expected = "sha256:" + base
        config, raw = _read_json(src, cfg_name, expected)
        ids = _diff_ids(config, cfg_name)
        layers = entry.get("Layers") or []
        if len(layers) != len(ids):
            raise StoreError(f"manifest.json: {len(layers)} layers but the config lists {len(ids)}")
        for name, diff_id in zip(layers, ids):
            exp = None
            if name.startswith("blobs/sha256/"):
                exp = "sha256:" + name.rsplit("/", 1)[-1]
            _stage_layer(store, st, src, name, diff_id, exp)
        st.configs.append(raw)
        for tag in entry.get("RepoTags") or []:
            st.tags.append((refs.normalize(tag), raw))


def _host_platform() -> dict:
    import platform
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return {"os": "linux", "architecture": arch}


def _manifests(src, desc: dict, depth: int = 0):
    """Yield (descriptor, manifest doc) for image manifests, following nested indexes and
    keeping only the host's platform when an index lists several."""
    mt = desc.get("mediaType")
    doc, _ = _read_json(src, f"blobs/sha256/{desc['digest'][7:]}", desc["digest"])
    if mt in (im.MT_OCI_INDEX, im.MT_DOCKER_LIST) or "manifests" in doc:
        if depth > 4:
            raise StoreError("index nesting too deep")
        children = doc.get("manifests") or []
        host = _host_platform()
        pick = [c for c in children if not c.get("platform")
                or all(c["platform"].get(k) == v for k, v in host.items())]
        for c in pick or children[:1]:
            yield from _manifests(src, {**c, "annotations": desc.get("annotations")}, depth + 1)
        return
    yield desc, doc


def _load_oci(store, src, st: _Staged) -> None:
    index, _ = _read_json(src, "index.json")
    for top in index.get("manifests") or []:
        from cache.store import check_digest
        check_digest(top.get("digest"))
        for desc, man in _manifests(src, top):
            cfg = man.get("config") or {}
            config, raw = _read_json(src, f"blobs/sha256/{check_digest(cfg.get('digest'))[7:]}",
                                     cfg["digest"])
            ids = _diff_ids(config, cfg["digest"])
            layers = man.get("layers") or []
            if len(layers) != len(ids):
                raise StoreError(f"manifest {desc['digest']}: {len(layers)} layers but the config "
                                 f"lists {len(ids)}")
            for layer, diff_id in zip(layers, ids):
                d = check_digest(layer.get("digest"))
                name = f"blobs/sha256/{d[7:]}"
                if not src.exists(name):
                    raise StoreError(f"manifest {desc['digest']} names layer {d}, which is not in "
                                     "the archive")
                _stage_layer(store, st, src, name, diff_id, d, layer.get("size"))
            st.configs.append(raw)
            ann = top.get("annotations") or {}
            name = ann.get("io.containerd.image.name") or ann.get("org.opencontainers.image.ref.name")
            if name and name_ok(name):
                st.tags.append((refs.normalize(name), raw))


def name_ok(name: str) -> bool:
    """OCI ref.name is often a bare tag (`latest`); only a full reference names an image."""
    if ":" not in name.rsplit("/", 1)[-1] and "/" not in name:
        return False
    try:
        refs.normalize(name)
        return True
    except StoreError:
        return False


def load(store, path) -> list[tuple[str, list[str]]]:
    """Load an archive file or OCI layout dir; returns [(image id, [full tag names])]."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no such file or directory")
    src = _DirSource(path) if path.is_dir() else _TarSource(path, store)
    st = _Staged()
    try:
        if src.exists("manifest.json"):
            _load_docker(store, src, st)
        elif src.exists("index.json"):
            _load_oci(store, src, st)
        else:
            raise StoreError(f"{path}: not an image archive (no manifest.json or index.json)")
        return _commit(store, st)
    finally:
        for tmp in st.tmps:
            tmp.unlink(missing_ok=True)
        src.close()


def _commit(store, st: _Staged) -> list[tuple[str, list[str]]]:
    from cache.keys import digest_bytes
    result: dict[str, list[str]] = {}
    with store.locked():
        for digest, tmp in st.blobs.items():
            dest = store.blob_path(digest)
            if not dest.exists():
                store.add_blob_file(tmp, digest)
        for diff_id, digest, size, kind, tar_size in st.layers:
            store.add_received_layer(diff_id, digest, size, kind, tar_size)
        for raw in st.configs:
            result.setdefault(store.put_config_bytes(raw), [])
        for full, raw in st.tags:
            image_id = digest_bytes(raw)
            store.tag(full, image_id)
            result[image_id].append(full)
        store.write_index()
    return list(result.items())
