"""An OCI image layout directory that answers like a Repository (`--cache-to type=local,dest=
DIR`, `--cache-from type=local,src=DIR`, export/import): tags are index.json entries named by
`org.opencontainers.image.ref.name`, blobs live in blobs/sha256/<hex>, every write is atomic.
Index updates hold a flock on the `oci-layout` file (never replaced, so the lock stays one inode);
temporaries are written in the directory itself and renamed into place."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from cache import atomic
from cache.blobs import check_digest, is_digest
from cache.compress import CHUNK
from cache.keys import digest_bytes
from cache.registry.client import MANIFEST_MAX, MANIFEST_TYPES, Manifest, manifest_media_type
from cache.registry.errors import DigestMismatch, NotFound, RegistryError

REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'


class LayoutDir:
    def __init__(self, path, *, create: bool = False):
        """`create`: a dir to write, made (with oci-layout and index.json) on the first write."""
        self.root = Path(path)
        self.name = str(self.root)
        self.create = create

    def _prepare(self) -> None:
        if self.create:
            self.create = False
            try:
                (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
                if not (self.root / "oci-layout").exists():
                    atomic.write_file(self.root / "oci-layout", LAYOUT)
                if not (self.root / "index.json").exists():
                    atomic.write_json(self.root / "index.json", _empty_index())
            except OSError as e:
                raise RegistryError(f"cannot create OCI layout {self.root}: {e.strerror}") from None

    # ---- index ------------------------------------------------------------------------------

    def _index(self) -> dict:
        try:
            with open(self.root / "index.json", "rb") as f:
                index = json.load(f)
        except FileNotFoundError:
            return _empty_index()
        except (OSError, ValueError, UnicodeDecodeError) as e:
            raise RegistryError(f"{self.root}/index.json: unreadable: {e}") from None
        if not isinstance(index, dict) or not isinstance(index.get("manifests", []), list):
            raise RegistryError(f"{self.root}/index.json: not an OCI image index")
        index.setdefault("manifests", [])
        return index

    def _entry(self, reference: str) -> dict | None:
        for m in self._index()["manifests"]:
            if not isinstance(m, dict):
                continue
            if is_digest(reference) and m.get("digest") == reference:
                return m
            if not is_digest(reference) and (m.get("annotations") or {}).get(REF_NAME) == reference:
                return m
        return None

    def tags(self) -> list[str]:
        out = []
        for m in self._index()["manifests"]:
            name = (m.get("annotations") or {}).get(REF_NAME) if isinstance(m, dict) else None
            if isinstance(name, str) and name not in out:
                out.append(name)
        return out

    def _ref(self, reference: str) -> str:
        return f"{self.name}@{reference}" if is_digest(reference) else f"{self.name}:{reference}"

    # ---- manifests --------------------------------------------------------------------------

    def get_manifest(self, reference: str, accept=MANIFEST_TYPES) -> Manifest:
        if not (self.root / "oci-layout").is_file():  # asked here: a missing source is a miss
            raise NotFound(f"{self.root} is not an OCI image layout (no oci-layout file)")
        entry = self._entry(reference)
        if entry is None and not is_digest(reference):
            raise NotFound(f"manifest unknown: {self._ref(reference)} not found")
        digest = entry["digest"] if entry is not None else reference
        try:
            path = self.blob_path(digest)
        except RegistryError:
            raise RegistryError(f"{self.root}/index.json: bad digest for {reference}") from None
        try:
            if path.stat().st_size > MANIFEST_MAX:
                raise RegistryError(f"{self._ref(reference)}: manifest larger than {MANIFEST_MAX} bytes")
            raw = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"manifest unknown: {self._ref(reference)} not found") from None
        if digest_bytes(raw) != digest:
            raise DigestMismatch(f"{self._ref(reference)}: blob {digest} does not hash to its name")
        mt = manifest_media_type(raw, (entry or {}).get("mediaType"), self._ref(reference))
        if accept and mt not in accept:
            raise RegistryError(f"{self._ref(reference)}: manifest type {mt} is not one of "
                                f"{', '.join(accept)}")
        return Manifest(raw, mt, digest)

    def head_manifest(self, reference: str) -> tuple[str, str, int] | None:
        try:
            m = self.get_manifest(reference)
        except NotFound:
            return None
        return m.digest, m.media_type, len(m.raw)

    def put_manifest(self, reference: str, raw: bytes, media_type: str) -> str:
        """Store the bytes as a blob and point index.json at them: a tag replaces the entry of
        that name; a digest adds an unnamed entry unless one exists."""
        digest = digest_bytes(raw)
        if is_digest(reference) and reference != digest:
            raise DigestMismatch(f"{self._ref(reference)}: these manifest bytes hash to {digest}")
        self._prepare()
        self._put_bytes(digest, raw)
        entry = {"mediaType": media_type, "digest": digest, "size": len(raw)}
        with atomic.Lock(self.root / "oci-layout").held():
            index = self._index()
            ms = index["manifests"]
            if is_digest(reference):
                if any(isinstance(m, dict) and m.get("digest") == digest for m in ms):
                    return digest
                ms.append(entry)
            else:
                entry["annotations"] = {REF_NAME: reference}
                ms[:] = [m for m in ms if not (isinstance(m, dict) and
                                               (m.get("annotations") or {}).get(REF_NAME) == reference)]
                ms.append(entry)
            atomic.write_json(self.root / "index.json", index)
        return digest

    # ---- blobs ------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        try:
            check_digest(digest)
        except Exception as e:  # noqa: BLE001 - one error class for the caller
            raise RegistryError(str(e)) from None
        return self.root / "blobs" / "sha256" / digest[7:]

    def blob_size(self, digest: str) -> int | None:
        try:
            return self.blob_path(digest).stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            return None

    def fetch_blob(self, digest: str, out, *, size: int | None = None, progress=None) -> int:
        sha, n = hashlib.sha256(), 0
        try:
            f = open(self.blob_path(digest), "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise NotFound(f"blob unknown: {self.name}@{digest} not found") from None
        with f:
            while data := f.read(CHUNK):
                n += len(data)
                if size is not None and n > size:
                    raise DigestMismatch(f"{self.name}@{digest}: more than the {size} bytes expected")
                sha.update(data)
                out.write(data)
                if progress is not None:
                    progress(n)
        if size is not None and n != size:
            raise DigestMismatch(f"{self.name}@{digest}: {n} bytes, expected {size}")
        if "sha256:" + sha.hexdigest() != digest:
            raise DigestMismatch(f"{self.name}@{digest}: the blob's bytes hash to sha256:{sha.hexdigest()}")
        return n

    def mount_blob(self, digest: str, from_path: str) -> bool:
        return False

    def _put_bytes(self, digest: str, data: bytes) -> None:
        dest = self.blob_path(digest)
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_file(dest, data, tmp_dir=self.root)

    def push_blob(self, digest: str, size: int, path, *, progress=None) -> None:
        """Copy the file in, checking it hashes to `digest` and has `size` bytes."""
        self._prepare()
        dest = self.blob_path(digest)
        if dest.exists():
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        f, tmp = atomic.tmp_file(self.root)
        try:
            with f, open(path, "rb") as src:
                sha, n = hashlib.sha256(), 0
                while data := src.read(CHUNK):
                    sha.update(data)
                    f.write(data)
                    n += len(data)
                    if progress is not None:
                        progress(n)
                f.flush()
                os.fsync(f.fileno())
            got = "sha256:" + sha.hexdigest()
            if got != digest or n != size:
                raise DigestMismatch(f"{path}: {n} bytes hashing to {got}, not {size} bytes of {digest}")
            atomic.publish(tmp, dest, synced=True)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def _empty_index() -> dict:
    return {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}
