"""Image archives: save (docker-archive in the dual form, or a plain OCI archive) and load
(docker-archive old and new, OCI archive, OCI layout dir).

Save writes the archive tar with our own deterministic headers, straight from the store's blobs.
Load verifies every digest and diff_id in a staging area under tmp/ and only then moves blobs into
place and updates the indexes, so a bad archive leaves the store as it was.
"""
from __future__ import annotations

import json
import os
import posixpath
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from cache import atomic, fspath, platform, refs, schema, tarfmt
from cache import image as im
from cache.compress import (
    CHUNK,
    SNIFF_BYTES,
    HashingWriter,
    copy_exactly,
    layer_digest,
    open_decompressed,
    sniff,
)
from cache.errors import StoreError
from cache.fspath import clean
from cache.keys import digest_bytes

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
    with open(path, "rb") as f:
        copy_exactly(f, out, size, f"blob {digest} shrank while saving")
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
    decompressed into the store's tmp/, removed again by close() whatever happens)."""

    def __init__(self, path: Path, tmp_file):
        self.tmp = self.tf = None
        try:
            with open(path, "rb") as f:
                kind = sniff(f.read(SNIFF_BYTES))
            if kind != "none":
                out, self.tmp = tmp_file("ld")
                with out, open(path, "rb") as f:
                    r = open_decompressed(f)
                    while data := r.read(CHUNK):
                        out.write(data)
                path = self.tmp
            self.tf = tarfile.open(path, "r:")  # noqa: SIM115 - closed in close()
            self.members = {"/".join(clean(m.name)): m for m in self.tf}
        except (tarfile.TarError, EOFError) as e:
            self.close()
            raise StoreError(f"not a valid image archive ({e})") from None
        except BaseException:
            self.close()
            raise

    def _member(self, name: str) -> tarfile.TarInfo:
        """The file member `name` names, following link members (docker-archive v1 layer dirs
        may link layer.tar files) inside the archive."""
        want, m = name, self.members.get(name)
        for _ in range(fspath.MAX_LINKS):  # a loop ends here
            if m is None:
                raise StoreError(f"the archive names {want!r}, which is not in it")
            if not (m.issym() or m.islnk()):
                if not m.isfile():
                    raise StoreError(f"archive member {want!r} is not a file")
                return m
            target = m.linkname if m.islnk() else posixpath.join(posixpath.dirname(name), m.linkname)
            name = "/".join(clean(target))
            m = self.members.get(name)
        raise StoreError(f"archive member {want!r}: too many levels of links (a loop?)")

    def exists(self, name: str) -> bool:
        return "/".join(clean(name)) in self.members

    def open(self, name: str):
        m = self._member("/".join(clean(name)))
        try:
            return self.tf.extractfile(m)
        except (tarfile.TarError, EOFError) as e:
            raise StoreError(f"archive member {name!r}: {e}") from None

    def close(self) -> None:
        if self.tf is not None:
            self.tf.close()
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)


class _DirSource:
    """Files of an OCI layout dir, each resolved inside it (its symlinks cannot lead out)."""

    def __init__(self, path: Path):
        self.root = path

    def exists(self, name: str) -> bool:
        try:
            self.open(name).close()
            return True
        except StoreError:
            return False

    def open(self, name: str):
        try:
            return fspath.open_in_root(self.root, name)
        except (FileNotFoundError, NotADirectoryError):
            raise StoreError(f"the layout names {name!r}, which is not in it") from None
        except IsADirectoryError:
            raise StoreError(f"layout entry {name!r} is not a file") from None

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
    if expected is not None and digest_bytes(raw) != expected:
        raise StoreError(f"digest mismatch for {name}: expected {expected}, got {digest_bytes(raw)}")
    try:
        return json.loads(raw), raw
    except ValueError as e:
        raise StoreError(f"{name}: invalid JSON ({e})") from None
    except RecursionError:
        raise StoreError(f"{name}: JSON nested too deeply") from None


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
    try:
        kind, got, tar_size = layer_digest(tmp)
    except StoreError as e:
        raise StoreError(f"layer {name}: {e}") from None
    if got != diff_id:
        raise StoreError(f"layer {name} does not match the config's diff_id {diff_id} "
                         f"(its tar hashes to {got}): the archive is corrupt")
    st.layers.append((diff_id, h.digest, h.size, kind, tar_size))


@dataclass
class ArchiveImage:
    """One image an archive or layout holds, as read (digests of JSON documents checked):
    `layers` are (member name, diff_id, descriptor or None: docker's manifest.json has none)."""
    config_name: str
    config: dict
    raw: bytes
    layers: list[tuple[str, str, dict | None]]
    names: list[str]                      # full names it is tagged with in the archive
    manifest: dict | None = None          # the OCI manifest (None: docker's manifest.json)
    descriptor: dict | None = None        # its descriptor (index.json's, or a nested index's)
    top: dict | None = None               # the index.json entry it was found under


def _docker_images(src):
    doc = schema.docker_manifest(_read_json(src, "manifest.json")[0])
    for i, entry in enumerate(doc):
        cfg_name = entry["Config"]
        expected = None
        base = cfg_name.rsplit("/", 1)[-1].removesuffix(".json")
        if len(base) == 64 and all(c in "0123456789abcdef" for c in base):
            expected = "sha256:" + base
        config, raw = _read_json(src, cfg_name, expected)
        ids = schema.config(config, cfg_name)
        layers = entry.get("Layers") or []
        if len(layers) != len(ids):
            raise StoreError(f"manifest.json: [{i}]: {len(layers)} layers but {cfg_name} lists "
                             f"{len(ids)}")
        yield ArchiveImage(cfg_name, config, raw, [(n, d, None) for n, d in zip(layers, ids, strict=True)],
                           [refs.normalize(t) for t in entry.get("RepoTags") or []])


def _blob_name(digest: str) -> str:
    return f"blobs/sha256/{digest[7:]}"


def _manifests(src, desc: dict, depth: int = 0):
    """Yield (descriptor, manifest doc) for image manifests, following nested indexes and
    keeping only the host's platform when an index lists several."""
    name = _blob_name(desc["digest"])
    doc, _ = _read_json(src, name, desc["digest"])
    if isinstance(doc, dict) and schema.is_index(doc, desc.get("mediaType")):
        if depth >= 4:
            raise StoreError(f"{name}: indexes nested too deeply")
        children = schema.index(doc, name)
        host = platform.host()
        pick = [c for c in children if not c.get("platform") or platform.matches(c["platform"], host)]
        for c in pick or children[:1]:
            yield from _manifests(src, {**c, "annotations": desc.get("annotations")}, depth + 1)
        return
    yield desc, schema.manifest(doc, name)


def _oci_images(src):
    tops = schema.index(_read_json(src, "index.json")[0], "index.json")
    if not tops:
        raise StoreError("index.json: lists no images")
    for top in tops:
        for desc, man in _manifests(src, top):
            mname = _blob_name(desc["digest"])
            cfg = man["config"]
            cname = _blob_name(cfg["digest"])
            config, raw = _read_json(src, cname, cfg["digest"])
            ids = schema.config(config, cname)
            layers = man.get("layers") or []
            if len(layers) != len(ids):
                raise StoreError(f"{mname}: {len(layers)} layers but the config {cname} lists "
                                 f"{len(ids)}")
            out = []
            for layer, diff_id in zip(layers, ids, strict=True):
                name = _blob_name(layer["digest"])
                if not src.exists(name):
                    raise StoreError(f"{mname} names layer {layer['digest']}, which is not in "
                                     "the archive")
                out.append((name, diff_id, layer))
            ann = top.get("annotations") or {}
            name = ann.get("io.containerd.image.name") or ann.get("org.opencontainers.image.ref.name")
            names = [refs.normalize(name)] if name and name_ok(name) else []
            yield ArchiveImage(cname, config, raw, out, names, man, desc, top)


def read_images(src, *, prefer_oci: bool = False):
    """The images of an opened archive (`open_source`): docker's manifest.json first, as load
    reads it, unless `prefer_oci` and there is an index.json (the dual form has both; only the
    index names manifests)."""
    if src.exists("manifest.json") and not (prefer_oci and src.exists("index.json")):
        return _docker_images(src)
    if src.exists("index.json"):
        return _oci_images(src)
    raise StoreError("not an image archive (no manifest.json or index.json)")


def open_source(path: Path, tmp_file):
    """An OCI layout dir or an archive tar (a compressed one is first decompressed into a
    file from `tmp_file(kind) -> (file, path)`); close() it."""
    return _DirSource(path) if path.is_dir() else _TarSource(path, tmp_file)


def _load(store, src, st: _Staged) -> None:
    for img in read_images(src):
        for name, diff_id, desc in img.layers:
            if desc is None:
                exp = ("sha256:" + name.rsplit("/", 1)[-1]) if name.startswith("blobs/sha256/") else None
                _stage_layer(store, st, src, name, diff_id, exp)
            else:
                _stage_layer(store, st, src, name, diff_id, desc["digest"], desc.get("size"))
        st.configs.append(img.raw)
        st.tags.extend((full, img.raw) for full in img.names)


def name_ok(name: str) -> bool:
    """OCI ref.name is often a bare tag (`latest`); only a full reference names an image."""
    if ":" not in name.rsplit("/", 1)[-1] and "/" not in name:
        return False
    try:
        refs.normalize(name)
        return True
    except StoreError:
        return False


def load(store, path, *, label: str | None = None) -> list[tuple[str, list[str]]]:
    """Load an archive file or OCI layout dir; returns [(image id, [full tag names])]. Any
    fault of the archive is a StoreError `<label or path>: <file in the archive>: <what is
    wrong>`, and the store is left as it was."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no such file or directory")
    st = _Staged()
    src = None
    try:
        src = open_source(path, store.tmp_file)
        _load(store, src, st)
        return _commit(store, st)
    except StoreError as e:
        raise StoreError(f"{label or path}: {e}") from None
    finally:
        for tmp in st.tmps:
            tmp.unlink(missing_ok=True)
        if src is not None:
            src.close()


def _commit(store, st: _Staged) -> list[tuple[str, list[str]]]:
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
