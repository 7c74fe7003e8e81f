"""The store: an OCI image layout on disk plus small JSON indexes, safe for several pybuild
processes at once. `Store` is the facade the builder, archives and fixtures code against; each
job lives in its own module:

    blobs/sha256/<hex>          cache.blobs       content-addressed blobs
    layers/<hex>/, layers.json  cache.layerstore  layer dirs at rest (overlay format), their
                                                  compressed blobs, scratch dirs under tmp/
    images.json, tags.json,     cache.images      image configs, tags, manifests, and the OCI
      index.json, oci-layout                      layout's index (the root is a valid layout)
    cachekeys.json              cache.buildcache  the builder's step-key index
    sources.json                cache.sources     registry repos known to hold each blob
    lock, tmp/                  cache.atomic      the flock around every index update; tmp +
                                                  fsync + rename for every file
    leases/<pid>.<start>        cache.leases      what each running process holds
    (paths and names: cache.layout; garbage collection: cache.gc; which image a reference
    names, and `pybuild run`'s look-up without this module: cache.imagelookup)

Blobs and layers are in place before an index names them, so a killed process leaves garbage
at most (removed by prune), never a dangling reference.
"""
from __future__ import annotations

from pathlib import Path

from cache import atomic, layout
from cache.blobs import Blobs, check_digest
from cache.buildcache import BuildCache
from cache.errors import StoreError
from cache.image import Image
from cache.images import ImageStore
from cache.indexes import Indexes
from cache.layerstore import LayerStore
from cache.leases import Leases
from cache.sources import Sources

__all__ = ["Store", "check_digest", "default_root"]


def default_root() -> Path:
    return Path(layout.default_root())


class Store:
    """Open with Store.open(); all methods are safe to call from several processes.
    `blob_store`, `layer_store`, `image_store`, `build_cache` and `leases` are the parts (gc
    uses them);
    `blobs`, `layers` and `tmp` are the dirs."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.blobs = self.root / layout.BLOBS_DIR
        self.layers = self.root / layout.LAYERS_DIR
        self.tmp = self.root / layout.TMP_DIR
        self.lock = atomic.Lock(self.root / layout.LOCK)
        self.indexes = Indexes(self.root, self.lock, self.tmp)
        self.leases = Leases(self.root)
        self.blob_store = Blobs(self.root, self.tmp, self.lock, self.leases)
        self.layer_store = LayerStore(self.root, self.blob_store, self.indexes, self.leases)
        self.image_store = ImageStore(self.root, self.blob_store, self.layer_store, self.indexes)
        self.build_cache = BuildCache(self.indexes)
        self.sources = Sources(self.indexes)

    @classmethod
    def open(cls, root=None) -> Store:
        s = cls(Path(root) if root else default_root())
        try:
            for d in (s.blobs, s.layers, s.tmp):
                d.mkdir(parents=True, exist_ok=True)
            if not (s.root / layout.OCI_LAYOUT).exists() or not (s.root / layout.OCI_INDEX).exists():
                with s.locked():
                    if not (s.root / layout.OCI_LAYOUT).exists():
                        atomic.write_file(s.root / layout.OCI_LAYOUT, b'{"imageLayoutVersion":"1.0.0"}',
                                          tmp_dir=s.tmp)
                    if not (s.root / layout.OCI_INDEX).exists():
                        s.image_store.write_index()
        except (PermissionError, NotADirectoryError, FileExistsError) as e:
            # the root the user chose (--root, $PYBUILD_ROOT) cannot be written, or is or lies
            # under a file
            raise StoreError(f"cannot use store at {s.root}: {e.strerror} (set PYBUILD_ROOT or "
                             "--root to a directory you can write)") from None
        return s

    def locked(self):
        """The store lock: exclusive across processes and threads; re-entrant."""
        return self.lock.held()

    def tmp_file(self, kind: str = "w"):
        """A temporary (file, path) in tmp/, named for this process (prune spares it while the
        process runs); move it in with `add_blob_file`, or delete it."""
        return atomic.tmp_file(self.tmp, kind)

    # ---- blobs ---------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.blob_store.path(digest)

    def has_blob(self, digest: str) -> bool:
        return self.blob_store.has(digest)

    def read_blob(self, digest: str) -> bytes:
        return self.blob_store.read(digest)

    def put_blob(self, data: bytes) -> str:
        return self.blob_store.put(data)

    def add_blob_file(self, tmp, digest: str, *, synced: bool = False) -> None:
        """Move a complete file from `tmp_file` in as blob `digest` (already verified;
        `synced`: already fsynced, so nothing is flushed under the lock)."""
        self.blob_store.publish(tmp, digest, synced=synced)

    def ingest(self, src, expected: str | None = None, limit: int | None = None) -> tuple[str, int]:
        return self.blob_store.ingest(src, expected, limit)

    # ---- layers --------------------------------------------------------------------------

    def new_scratch(self) -> Path:
        return self.layer_store.new_scratch()

    def layer_path(self, diff_id: str) -> Path:
        return self.layer_store.path(diff_id)

    def layer_info(self, diff_id: str) -> dict | None:
        return self.layer_store.info(diff_id)

    def commit_layer(self, upper, *, epoch: int | None = 0, keep_empty: bool = False,
                     keep_source: bool = False, keep_base=None) -> str | None:
        return self.layer_store.commit(upper, epoch=epoch, keep_empty=keep_empty,
                                       keep_source=keep_source, keep_base=keep_base)

    def commit_delta_layer(self, upper, base: str, index: dict, *, epoch: int | None = 0) -> str:
        return self.layer_store.commit_delta(upper, base, index, epoch=epoch)

    def delta_base(self, key: str) -> tuple[str, dict] | None:
        return self.layer_store.find_base(key)

    def layer_dir(self, diff_id: str) -> Path:
        """One layer's own dir (a delta layer's is only its changes: mount `layer_dirs`)."""
        return self.layer_store.dir_of(diff_id)

    def layer_dirs(self, diff_ids) -> list[Path]:
        """The dirs to mount for `diff_ids` (bottom first), top first as overlay takes them."""
        return self.layer_store.dirs(diff_ids)

    def layer_tar(self, diff_id: str, out) -> str:
        return self.layer_store.tar(diff_id, out)

    def layer_blob(self, diff_id: str, compression: str = "gzip") -> dict:
        return self.layer_store.blob(diff_id, compression)

    def add_received_layer(self, diff_id: str, blob_digest: str, blob_size: int, compression: str,
                           size: int | None = None) -> None:
        self.layer_store.add_received(diff_id, blob_digest, blob_size, compression, size)

    # ---- images and tags -----------------------------------------------------------------

    def put_image(self, config: dict, tags=()) -> str:
        """Store an image config (and tag it, in the same locked step); returns the image ID."""
        return self.image_store.put(config, tags)

    def put_config_bytes(self, raw: bytes) -> str:
        return self.image_store.put_config_bytes(raw)

    def images(self) -> dict[str, dict]:
        return self.image_store.records()

    def tags(self) -> dict[str, str]:
        return self.image_store.tags()

    def image(self, ref_or_id: str) -> Image:
        return self.image_store.get(ref_or_id)

    def tag(self, name: str, image_id: str) -> str:
        """Point `name` (normalised like docker) at an image; returns the full name."""
        return self.image_store.tag([name], image_id)[0]

    def tag_all(self, names, image_id: str) -> list[str]:
        """`tag` for several names at once: all or none, under one lock."""
        return self.image_store.tag(names, image_id)

    def untag(self, name: str) -> str:
        return self.image_store.untag(name)

    def resolve(self, ref: str) -> str:
        return self.image_store.resolve(ref)

    def tags_of(self, image_id: str) -> list[str]:
        return self.image_store.tags_of(image_id)

    def remove_image(self, image_id: str) -> None:
        self.image_store.remove(image_id)

    def record_distribution(self, image_id: str, repo_digest: str,
                            source_manifest: dict | None = None) -> None:
        self.image_store.record_distribution(image_id, repo_digest, source_manifest)

    def repo_digest(self, image_id: str, repo: str) -> str | None:
        return self.image_store.repo_digest(image_id, repo)

    def manifest(self, image_id: str, compression: str = "gzip") -> dict:
        return self.image_store.manifest(image_id, compression)

    def write_index(self) -> None:
        self.image_store.write_index()

    # ---- build cache ---------------------------------------------------------------------

    def cache_get(self, key: str) -> dict | None:
        return self.build_cache.get(key)

    def cache_put(self, key: str, value: dict) -> None:
        self.build_cache.put(key, value)
