"""An OCI image layout directory with the few methods of a registry repository that cache
export and import use (`--cache-to type=local,dest=DIR`, `--cache-from type=local,src=DIR`).

`blobs/sha256/<hex>`, `oci-layout` and `index.json`, whose entries name their tag with the
`org.opencontainers.image.ref.name` annotation, as skopeo, umoci and BuildKit read them. Every
file is written whole (cache.atomic) and every blob is hashed while it is copied in or out, so
a half-written or tampered dir is an error, never a wrong layer. Several writers may share a
dir: index.json is read-modified-written under a flock on `DIR/.lock`.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cache import atomic
from cache.blobs import check_digest
from cache.compress import CHUNK, HashingWriter
from cache.errors import StoreError
from cache.image import MT_OCI_INDEX

REF_NAME = "org.opencontainers.image.ref.name"
MAX_MANIFEST = 4 << 20  # as the registry client: a manifest is small


@dataclass(frozen=True)
class Manifest:
    raw: bytes
    media_type: str
    digest: str


class CacheDir:
    """`CacheDir(path)`: read from an existing layout, or written (created on first write)."""

    def __init__(self, path):
        self.root = Path(path)
        self.name = str(self.root)  # for messages, as Repository.name

    # ---- reading -------------------------------------------------------------------------
    def _blob(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / check_digest(digest)[7:]

    def _index(self) -> dict:
        try:
            doc = json.loads((self.root / "index.json").read_bytes())
        except FileNotFoundError:
            return {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": []}
        except (OSError, ValueError) as e:
            raise StoreError(f"{self.root}/index.json: unreadable ({e})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("manifests", []), list):
            raise StoreError(f"{self.root}/index.json: not an OCI image index")
        return doc

    def get_manifest(self, reference: str) -> Manifest:
        """The manifest tagged `reference` (or with that digest)."""
        if not self.root.is_dir():
            raise StoreError(f"{self.root}: not found")
        for d in self._index().get("manifests", []):
            if not isinstance(d, dict):
                continue
            ref = (d.get("annotations") or {}).get(REF_NAME)
            if ref == reference or d.get("digest") == reference:
                digest = check_digest(d.get("digest"), f"{self.root}/index.json digest")
                size = d.get("size")
                if not isinstance(size, int) or not 0 <= size <= MAX_MANIFEST:
                    raise StoreError(f"{self.root}/index.json: manifest {reference} has a bad size")
                out = io.BytesIO()
                self.fetch_blob(digest, out, size=size)
                return Manifest(out.getvalue(), d.get("mediaType") or "", digest)
        raise StoreError(f"{self.root}: no manifest tagged {reference!r}")

    def blob_size(self, digest: str) -> int | None:
        try:
            return self._blob(digest).stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            return None

    def fetch_blob(self, digest: str, out, *, size: int | None = None, progress=None) -> int:
        """Copy blob `digest` to binary file `out`, hashing; a blob that does not hash to its
        digest (or has another size) is an error, raised after the bytes went out, so the
        caller must treat what it got as untrusted until this returns."""
        path = self._blob(digest)
        h = HashingWriter(out)
        try:
            with open(path, "rb") as f:
                while data := f.read(CHUNK):
                    h.write(data)
                    if progress is not None:
                        progress(h.size)
        except (FileNotFoundError, NotADirectoryError):
            raise StoreError(f"{self.root}: blob {digest} is missing") from None
        if h.digest != digest or (size is not None and h.size != size):
            raise StoreError(f"{self.root}: blob {digest} is corrupt (its bytes hash to "
                             f"{h.digest}, {h.size} bytes)")
        return h.size

    # ---- writing -------------------------------------------------------------------------
    def _prepare(self) -> None:
        try:
            (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
            if not (self.root / "oci-layout").exists():
                atomic.write_file(self.root / "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        except (NotADirectoryError, FileExistsError, PermissionError) as e:
            raise StoreError(f"cannot write cache to {self.root}: {e.strerror}") from None

    def push_blob(self, digest: str, size: int, path, *, progress=None) -> None:
        """Copy the file at `path` in as blob `digest`, verified while it is copied."""
        self._prepare()
        dest = self._blob(digest)
        if self.blob_size(digest) == size:
            return
        f, tmp = atomic.tmp_file(self.root, "blob")
        try:
            with f, open(path, "rb") as src:
                h = HashingWriter(f)
                while data := src.read(CHUNK):
                    h.write(data)
                    if progress is not None:
                        progress(h.size)
                f.flush()
                os.fsync(f.fileno())
            if h.digest != digest or h.size != size:
                raise StoreError(f"{path}: changed while it was copied to {self.root} "
                                 f"(expected {digest}, {size} bytes)")
            atomic.publish(tmp, dest, synced=True)
        finally:
            tmp.unlink(missing_ok=True)

    def put_manifest(self, reference: str, raw: bytes, media_type: str) -> str:
        """Store the manifest and point tag `reference` at it (replacing what it named)."""
        from cache.keys import digest_bytes

        self._prepare()
        digest = digest_bytes(raw)
        if not self._blob(digest).exists():
            atomic.write_file(self._blob(digest), raw)
        entry = {"mediaType": media_type, "digest": digest, "size": len(raw),
                 "annotations": {REF_NAME: reference}}
        with atomic.Lock(self.root / ".lock").held():
            index = self._index()
            kept = [d for d in index.get("manifests", [])
                    if not (isinstance(d, dict) and (d.get("annotations") or {}).get(REF_NAME) == reference)]
            index["manifests"] = [*kept, entry]
            index.setdefault("schemaVersion", 2)
            index.setdefault("mediaType", MT_OCI_INDEX)
            atomic.write_json(self.root / "index.json", index)
        return digest

    def mount_blob(self, digest: str, from_path: str) -> bool:
        return False

