"""Build cache export and import (`--cache-to` / `--cache-from`), through a registry
repository or an OCI layout dir: anything with the methods below.

The format (SPEC-registry.md): one OCI image manifest, artifactType ARTIFACT_TYPE, whose config
is a valid OCI image config (so `skopeo inspect` and registries take it) with rootfs.diff_ids =
the layers in manifest order and an extra member "pybuild.cache": {"v": 1, "steps": {step key:
{"diff_id": d | null}}}. Step keys are machine-independent (cache.keys), so another store that
computes the same key may take the layer instead of running the step.

Export writes missing blobs, then the config, then the manifest under the tag (a reader sees
the old cache or the new one). Import reads the manifest and config once, on the first lookup,
and fetches a layer's blob only when a step hits: verified against its digest while it
streams and against its diff_id before the store records it as a received layer.
"""
from __future__ import annotations

import io
import json
import threading

from cache.compress import MEDIA_TYPES
from cache.errors import StoreError
from cache.image import MT_OCI_CONFIG, MT_OCI_MANIFEST

ARTIFACT_TYPE = "application/vnd.pybuild.buildcache.v1"
MEMBER = "pybuild.cache"
VERSION = 1
MAX_CONFIG = 64 << 20  # a max-mode cache of ~300k steps; anything bigger is not ours
_COMPRESSION = {mt: name for name, mt in MEDIA_TYPES.items()}


def export(store, steps, target, ref_tag: str, *, compression: str = "gzip") -> str:
    """Write the cache of `steps` [(step key, diff_id | None)] to `target` under tag
    `ref_tag`; returns the manifest digest. The same steps give the same bytes."""
    from cache import platform
    from cache.keys import canonical_json, digest_bytes

    entries: dict[str, dict] = {}
    layers: list[dict] = []
    diff_ids: list[str] = []
    for key, diff_id in steps:
        entries[key] = {"diff_id": diff_id}
        if diff_id and diff_id not in diff_ids:
            desc = store.layer_blob(diff_id, compression)
            layers.append({"mediaType": desc["mediaType"], "digest": desc["digest"], "size": desc["size"]})
            diff_ids.append(diff_id)
    for desc in layers:
        if target.blob_size(desc["digest"]) != desc["size"]:
            target.push_blob(desc["digest"], desc["size"], store.blob_path(desc["digest"]))
    config = {**platform.host(), "config": {}, "rootfs": {"type": "layers", "diff_ids": diff_ids},
              MEMBER: {"v": VERSION, "steps": entries}}
    raw_config = canonical_json(config)
    config_desc = {"mediaType": MT_OCI_CONFIG, "digest": digest_bytes(raw_config),
                   "size": len(raw_config)}
    if target.blob_size(config_desc["digest"]) != config_desc["size"]:
        f, tmp = store.tmp_file("cache")
        try:
            with f:
                f.write(raw_config)
            target.push_blob(config_desc["digest"], config_desc["size"], tmp)
        finally:
            tmp.unlink(missing_ok=True)
    manifest = {"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST, "artifactType": ARTIFACT_TYPE,
                "config": config_desc, "layers": layers}
    return target.put_manifest(ref_tag, canonical_json(manifest), MT_OCI_MANIFEST)


class Importer:
    """The cache one source holds under `ref_tag`, read on the first `lookup` (thread-safe:
    stages look up in parallel). A cache that cannot be read raises StoreError from that
    lookup, once; later lookups then miss."""

    def __init__(self, source, ref_tag: str):
        self.source = source
        self.ref_tag = ref_tag
        self._lock = threading.Lock()
        self._loaded = False
        self._steps: dict[str, dict] = {}
        self._layers: dict[str, dict] = {}  # diff_id -> its layer descriptor

    @property
    def name(self) -> str:
        return f"{getattr(self.source, 'name', self.source)}:{self.ref_tag}"

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self) -> None:
        """Read the manifest and config (small) once; StoreError says what is wrong."""
        with self._lock:
            if self._loaded:
                return
            self._loaded = True  # a cache that failed once is not asked again
            self._steps, self._layers = self._read()

    def _read(self) -> tuple[dict, dict]:
        from cache import schema
        from cache.keys import digest_bytes

        m = self.source.get_manifest(self.ref_tag)
        where = f"{self.name}: manifest"
        try:
            doc = json.loads(m.raw)
        except ValueError:
            raise StoreError(f"{where}: not JSON") from None
        schema.manifest(doc, where)
        if doc.get("artifactType") != ARTIFACT_TYPE:
            raise StoreError(f"{self.name}: not a pybuild build cache (artifactType "
                             f"{doc.get('artifactType')!r})")
        desc = doc["config"]
        size = desc.get("size")
        if not isinstance(size, int) or size > MAX_CONFIG:
            raise StoreError(f"{self.name}: cache config has a bad size {size!r}")
        buf = io.BytesIO()
        self.source.fetch_blob(desc["digest"], buf, size=size)
        raw = buf.getvalue()
        if digest_bytes(raw) != desc["digest"]:
            raise StoreError(f"{self.name}: cache config does not match its digest {desc['digest']}")
        try:
            config = json.loads(raw)
        except ValueError:
            raise StoreError(f"{self.name}: cache config: not JSON") from None
        diff_ids = schema.config(config, f"{self.name}: cache config")
        layers = doc.get("layers") or []
        if len(layers) != len(diff_ids):
            raise StoreError(f"{self.name}: cache lists {len(layers)} layers for "
                             f"{len(diff_ids)} diff_ids")
        cache = config.get(MEMBER)
        if not (isinstance(cache, dict) and cache.get("v") == VERSION
                and isinstance(cache.get("steps"), dict)):
            raise StoreError(f"{self.name}: cache config has no {MEMBER} v{VERSION} member")
        by_diff = {}
        for diff_id, layer in zip(diff_ids, layers, strict=True):
            if layer.get("mediaType") in _COMPRESSION and isinstance(layer.get("size"), int):
                by_diff[diff_id] = layer
        steps = {}
        for key, value in cache["steps"].items():
            d = value.get("diff_id") if isinstance(value, dict) else 0
            if d is None or (isinstance(d, str) and d in by_diff):  # else no hit
                steps[key] = {"diff_id": d}
        return steps, by_diff

    def lookup(self, store, key: str) -> dict | None:
        """The cache value {"diff_id": d} of step `key`, its layer now in `store`; None on a
        miss. StoreError when the cache or the layer cannot be read (nothing is recorded)."""
        self.load()
        value = self._steps.get(key)
        if value is None:
            return None
        diff_id = value["diff_id"]
        if diff_id is not None and store.layer_info(diff_id) is None:
            self._receive(store, diff_id, self._layers[diff_id])
        return dict(value)

    def _receive(self, store, diff_id: str, desc: dict) -> None:
        """Fetch one layer blob into the store and record it as a received layer."""
        from cache.registry import layerfetch

        digest, size = desc["digest"], desc["size"]
        if store.has_blob(digest):
            kind, tar_size = layerfetch.check(store.blob_path(digest), diff_id,
                                              f"{self.name}: layer {digest}")
        else:
            staged = layerfetch.stage(store, self.source, desc, diff_id)
            try:
                store.add_blob_file(staged.tmp, digest, synced=True)
            finally:
                staged.tmp.unlink(missing_ok=True)
            kind, tar_size = staged.compression, staged.tar_size
        store.add_received_layer(diff_id, digest, size, kind, tar_size)
