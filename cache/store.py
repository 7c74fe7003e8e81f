"""The store: an OCI image layout on disk plus small JSON indexes, safe for several pybuild
processes at once.

    <root>/oci-layout, index.json, blobs/sha256/<hex>   the OCI image layout
    <root>/tags.json       {"docker.io/library/busybox:latest": image id}
    <root>/images.json     {image id: {"added": t, "manifests": {compression: digest}}}
    <root>/layers.json     {diff_id: {"size": n, "origin": "built"|"received",
                                      "blobs": {compression: {"digest", "size"}}}}
    <root>/cachekeys.json  {step key: value dict}  (the builder's cache index)
    <root>/layers/<hex>/   layer dirs at rest, in overlay format (usable as lowerdirs)
    <root>/tmp/            scratch dirs and half-written files: garbage after a crash
    <root>/lock            fcntl lock taken around every index update

Every file is written as tmp + fsync + rename, and blobs/layers are in place before an index
names them, so a killed process leaves garbage at most (removed by prune), never a dangling
reference.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

from cache import layout, refs
from cache.errors import StoreError
from cache.image import Image

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def default_root() -> Path:
    return Path(layout.default_root())


def check_digest(d: str, what: str = "digest") -> str:
    if not isinstance(d, str) or not _DIGEST.match(d):
        raise StoreError(f"invalid {what}: {d!r} (expected sha256:<64 hex digits>)")
    return d


def _fsync_dir(path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Store:
    """Open with Store.open(); all methods are safe to call from several processes."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.blobs = self.root / "blobs" / "sha256"
        self.layers = self.root / "layers"
        self.tmp = self.root / "tmp"
        self._tlock = threading.RLock()
        self._depth = 0
        self._lockfd: int | None = None

    # ---- opening and locking -------------------------------------------------------------

    @classmethod
    def open(cls, root=None) -> Store:
        s = cls(Path(root) if root else default_root())
        try:
            for d in (s.blobs, s.layers, s.tmp):
                d.mkdir(parents=True, exist_ok=True)
            if not (s.root / "oci-layout").exists() or not (s.root / "index.json").exists():
                with s.locked():
                    if not (s.root / "oci-layout").exists():
                        s._write_file(s.root / "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
                    if not (s.root / "index.json").exists():
                        s._write_index()
        except PermissionError as e:
            raise StoreError(f"cannot use store at {s.root}: {e.strerror} (set PYBUILD_ROOT or "
                             "--root to a directory you can write)") from None
        return s

    @contextlib.contextmanager
    def locked(self):
        """Exclusive across processes (flock) and threads (RLock); re-entrant."""
        with self._tlock:
            if self._depth == 0:
                self._lockfd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                fcntl.flock(self._lockfd, fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    os.close(self._lockfd)  # closing drops the flock
                    self._lockfd = None

    # ---- atomic files and JSON indexes ---------------------------------------------------

    def _tmpfile(self, prefix: str = "w-"):
        """Named `<kind>-<pid>-...` so prune can tell a live writer's file from garbage."""
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix=f"{prefix}{os.getpid()}-")
        return os.fdopen(fd, "wb"), Path(name)

    def _write_file(self, path: Path, data: bytes) -> None:
        f, tmp = self._tmpfile()
        try:
            with f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.rename(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)

    def _read_json(self, name: str):
        try:
            with open(self.root / name, "rb") as f:
                return json.load(f)
        except FileNotFoundError:
            return {}
        except ValueError as e:
            raise StoreError(f"{self.root / name}: corrupt store index ({e})") from None

    def _write_json(self, name: str, value) -> None:
        self._write_file(self.root / name, json.dumps(value, indent=1, sort_keys=True).encode())

    @contextlib.contextmanager
    def _update(self, name: str):
        """Read-modify-write of one index under the lock."""
        with self.locked():
            value = self._read_json(name)
            yield value
            self._write_json(name, value)

    # ---- blobs ---------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.blobs / check_digest(digest)[7:]

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).exists()

    def read_blob(self, digest: str) -> bytes:
        try:
            return self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"blob {digest} is missing from the store (run `pybuild prune`, then "
                             "pull or load the image again)") from None

    def put_blob(self, data: bytes) -> str:
        from cache.keys import digest_bytes
        d = digest_bytes(data)
        path = self.blob_path(d)
        if not path.exists():
            self._write_file(path, data)
        return d

    def ingest(self, src, expected: str | None = None, limit: int | None = None) -> tuple[str, int]:
        """Copy a stream into blobs/ while hashing; a digest mismatch leaves nothing behind."""
        from cache.compress import CHUNK, HashingWriter
        f, tmp = self._tmpfile("in-")
        try:
            with f:
                h = HashingWriter(f)
                while True:
                    data = src.read(CHUNK)
                    if not data:
                        break
                    h.write(data)
                    if limit is not None and h.size > limit:
                        raise StoreError("blob is larger than its descriptor says")
                f.flush()
                os.fsync(f.fileno())
            if expected is not None and h.digest != expected:
                raise StoreError(f"digest mismatch: expected {expected}, got {h.digest}")
            os.chmod(tmp, 0o644)
            os.rename(tmp, self.blob_path(h.digest))
            return h.digest, h.size
        finally:
            tmp.unlink(missing_ok=True)

    # ---- layers --------------------------------------------------------------------------

    def new_scratch(self) -> Path:
        """A fresh empty dir under tmp/ (same filesystem as layers/, so commit is a rename)."""
        return Path(tempfile.mkdtemp(dir=self.tmp, prefix=f"scratch-{os.getpid()}-"))

    def layer_path(self, diff_id: str) -> Path:
        return self.layers / check_digest(diff_id, "diff_id")[7:]

    def layer_info(self, diff_id: str) -> dict | None:
        return self._read_json(layout.LAYERS).get(diff_id)

    def commit_layer(self, upper, *, epoch: int | None = 0, keep_empty: bool = False) -> str | None:
        """Move an overlay upper dir (or any dir in overlay format) into the store as a layer;
        returns its diff_id. An empty dir gives None (no layer) unless `keep_empty`: BuildKit
        commits the 1024-byte empty tar for a RUN/COPY/WORKDIR that changed nothing."""
        from cache.layers import is_empty_dir, write_tar
        upper = Path(upper)
        if not keep_empty and is_empty_dir(upper):
            return None
        from cache.layers import fingerprint
        res = write_tar(upper, None, epoch=epoch)
        # outside the lock: renaming the dir changes only its own ctime, which is left out
        fp = fingerprint(upper)
        dest = self.layer_path(res.diff_id)
        moved = None
        with self.locked():
            if dest.exists():
                shutil.rmtree(upper, ignore_errors=True)
            else:
                try:
                    os.rename(upper, dest)
                    moved = fp  # the inodes just hashed are the layer's now
                except OSError as e:
                    if e.errno != 18:  # EXDEV: copy through our own tar
                        raise
                    self._copy_layer_in(upper, dest, res.diff_id, epoch)
                    shutil.rmtree(upper, ignore_errors=True)
                _fsync_dir(self.layers)
            with self._update(layout.LAYERS) as idx:
                info = idx.setdefault(res.diff_id, {"origin": "built", "blobs": {}})
                info["size"] = res.size
                if moved is not None:
                    info["fingerprint"] = moved
                # prune spares it while this process lives (for an hour at most): a build
                # between commit_layer and put_image/cache_put must not lose its layer
                info["pid"], info["t"] = os.getpid(), int(time.time())
                if "epoch" not in info and info["origin"] == "built":
                    info["epoch"] = epoch
        return res.diff_id

    def _copy_layer_in(self, src: Path, dest: Path, diff_id: str, epoch) -> None:
        from cache.layers import extract, write_tar
        f, tmp = self._tmpfile("cp-")
        scratch = self.new_scratch()
        try:
            with f:
                write_tar(src, f, epoch=epoch)
            with open(tmp, "rb") as r:
                got = extract(r, scratch)
            if got != diff_id:
                raise StoreError(f"layer copy changed its content ({got} != {diff_id})")
            os.rename(scratch, dest)
        finally:
            tmp.unlink(missing_ok=True)
            shutil.rmtree(scratch, ignore_errors=True)

    def layer_dir(self, diff_id: str) -> Path:
        """The layer's directory (overlay format), unpacking a received blob on first use."""
        dest = self.layer_path(diff_id)
        if dest.exists():
            return dest
        info = self.layer_info(diff_id)
        if not info or not info.get("blobs"):
            raise StoreError(f"layer {diff_id} is not in the store")
        from cache.layers import extract
        _kind, blob = next(iter(sorted(info["blobs"].items())))
        scratch = self.new_scratch()
        try:
            with open(self.blob_path(blob["digest"]), "rb") as f:
                got = extract(f, scratch)
            if got != diff_id:
                raise StoreError(f"layer blob {blob['digest']} does not match its diff_id "
                                 f"{diff_id} (got {got})")
            with self.locked():
                if not dest.exists():
                    os.rename(scratch, dest)
                    _fsync_dir(self.layers)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return dest

    def layer_tar(self, diff_id: str, out) -> str:
        """Write the uncompressed layer tar to `out`; returns the diff_id it hashed to."""
        from cache.compress import CHUNK, HashingWriter, open_decompressed
        info = self.layer_info(diff_id)
        if info is None:
            raise StoreError(f"layer {diff_id} is not in the store")
        if info.get("origin") == "built":
            from cache.layers import write_tar
            return write_tar(self.layer_path(diff_id), out, epoch=info.get("epoch", 0)).diff_id
        _kind, blob = next(iter(sorted(info["blobs"].items())))
        h = HashingWriter(out)
        with open(self.blob_path(blob["digest"]), "rb") as f:
            shutil.copyfileobj(open_decompressed(f), h, CHUNK)
        return h.digest

    def layer_blob(self, diff_id: str, compression: str = "gzip") -> dict:
        """A descriptor {mediaType, digest, size} of the layer compressed as asked, making and
        keeping the blob on first use (byte-identical every time for built layers)."""
        from cache.compress import MEDIA_TYPES, HashingWriter, compressor
        if compression not in MEDIA_TYPES:
            raise StoreError(f"unknown compression {compression!r} (use gzip or zstd)")
        info = self.layer_info(diff_id)
        if info is None:
            raise StoreError(f"layer {diff_id} is not in the store")
        have = info.get("blobs", {}).get(compression)
        if have and self.has_blob(have["digest"]):
            return {"mediaType": MEDIA_TYPES[compression], "digest": have["digest"], "size": have["size"]}
        f, tmp = self._tmpfile("z-")
        try:
            with f:
                h = HashingWriter(f)
                c = compressor(compression, h, threaded=True)
                got = self._blob_tar(diff_id, info, c)
                c.close()
                f.flush()
                os.fsync(f.fileno())
            if got != diff_id:
                raise StoreError(f"layer {diff_id} changed on disk (it now hashes to {got}); "
                                 "remove the image and build it again")
            os.chmod(tmp, 0o644)
            with self.locked():
                os.rename(tmp, self.blob_path(h.digest))
                with self._update(layout.LAYERS) as idx:
                    idx[diff_id].setdefault("blobs", {})[compression] = {"digest": h.digest,
                                                                         "size": h.size}
        finally:
            tmp.unlink(missing_ok=True)
        return {"mediaType": MEDIA_TYPES[compression], "digest": h.digest, "size": h.size}

    def _blob_tar(self, diff_id: str, info: dict, out) -> str:
        """`layer_tar` for making a blob: a built layer dir whose fingerprint is what it was at
        commit, before and after the write, is not hashed again (its diff_id is known)."""
        from cache.layers import fingerprint, write_tar
        fp = info.get("fingerprint")
        if info.get("origin") != "built" or not fp:
            return self.layer_tar(diff_id, out)
        path = self.layer_path(diff_id)
        if fingerprint(path) != fp:
            return self.layer_tar(diff_id, out)  # hashed: says what it hashes to now
        res = write_tar(path, out, epoch=info.get("epoch", 0), hash_tar=False)
        if fingerprint(path) != fp or res.size != info.get("size"):
            raise StoreError(f"layer {diff_id} changed on disk while it was written; "
                             "remove the image and build it again")
        return diff_id

    def add_received_layer(self, diff_id: str, blob_digest: str, blob_size: int, compression: str,
                           size: int | None = None) -> None:
        with self._update(layout.LAYERS) as idx:
            info = idx.setdefault(diff_id, {"origin": "received", "blobs": {}})
            info.setdefault("blobs", {})[compression] = {"digest": blob_digest, "size": blob_size}
            if size is not None:
                info.setdefault("size", size)

    # ---- images and tags -----------------------------------------------------------------

    def put_image(self, config: dict) -> str:
        """Store an image config; its digest is the image ID. Every diff_id must be in the store."""
        from cache.keys import canonical_json
        for d in (config.get("rootfs") or {}).get("diff_ids", []):
            if self.layer_info(d) is None and not self.layer_path(d).exists():
                raise StoreError(f"image config names layer {d}, which is not in the store")
        return self.put_config_bytes(canonical_json(config))

    def put_config_bytes(self, raw: bytes) -> str:
        with self.locked():  # blob and record together: prune never sees one without the other
            image_id = self.put_blob(raw)
            with self._update(layout.IMAGES) as idx:
                idx.setdefault(image_id, {"added": int(time.time()), "manifests": {}})
        return image_id

    def images(self) -> dict[str, dict]:
        return self._read_json(layout.IMAGES)

    def tags(self) -> dict[str, str]:
        return self._read_json(layout.TAGS)

    def image(self, ref_or_id: str) -> Image:
        image_id = self.resolve(ref_or_id)
        try:
            config = json.loads(self.read_blob(image_id))
        except ValueError as e:
            raise StoreError(f"image {image_id}: corrupt config ({e})") from None
        return Image(image_id, config, tuple((config.get("rootfs") or {}).get("diff_ids") or ()))

    def tag(self, name: str, image_id: str) -> str:
        """Point `name` (normalised like docker) at an image; returns the full name."""
        image_id = self.resolve(image_id)
        full = refs.normalize(name)
        with self._update(layout.TAGS) as tags:
            tags[full] = image_id
        self._write_index()
        return full

    def untag(self, name: str) -> str:
        full = refs.normalize(name)
        with self._update(layout.TAGS) as tags:
            if full not in tags:
                raise StoreError(f"no such image: {name}")
            image_id = tags.pop(full)
        self._write_index()
        return image_id

    def resolve(self, ref: str) -> str:
        """Image ID for a tag (`busybox` = `docker.io/library/busybox:latest`), a full ID, an ID
        prefix (like docker, at least one hex digit and unambiguous) or name@digest."""
        if not isinstance(ref, str) or not ref:
            raise StoreError("no such image: ''")
        images = self.images()
        if _DIGEST.match(ref) and ref in images:
            return ref
        try:
            repo, tag, digest = refs.parse(ref)
        except StoreError:
            repo = None
        if repo is not None:
            tags = self.tags()
            if tag is not None and f"{repo}:{tag}" in tags:
                image_id = tags[f"{repo}:{tag}"]
                if digest is None:
                    return image_id
            if digest is not None:
                for image_id, rec in images.items():
                    if digest in (rec.get("manifests") or {}).values() or digest == image_id:
                        return image_id
        hexpart = ref.removeprefix("sha256:")
        if re.fullmatch(r"[0-9a-f]{1,64}", hexpart):
            found = [i for i in images if i[7:].startswith(hexpart)]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise StoreError(f"ambiguous image ID prefix {ref!r}: matches {len(found)} images")
        raise StoreError(f"no such image: {ref}")

    def tags_of(self, image_id: str) -> list[str]:
        return sorted(t for t, i in self.tags().items() if i == image_id)

    def remove_image(self, image_id: str) -> None:
        """Drop an image record and its tags (blobs go at the next prune)."""
        with self.locked():
            with self._update(layout.TAGS) as tags:
                for t in [t for t, i in tags.items() if i == image_id]:
                    del tags[t]
            with self._update(layout.IMAGES) as idx:
                idx.pop(image_id, None)
        self._write_index()

    def manifest(self, image_id: str, compression: str = "gzip") -> dict:
        """The OCI manifest descriptor of an image with layers compressed as asked, making the
        compressed blobs and the manifest on first use."""
        from cache import image as im
        from cache.keys import canonical_json
        img = self.image(image_id)
        rec = self.images().get(img.id, {})
        have = (rec.get("manifests") or {}).get(compression)
        if have and self.has_blob(have):
            raw = self.read_blob(have)
            return {"mediaType": im.MT_OCI_MANIFEST, "digest": have, "size": len(raw),
                    "platform": im.platform_of(img.config)}
        layers = [self.layer_blob(d, compression) for d in img.diff_ids]
        cfg_size = self.blob_path(img.id).stat().st_size
        doc = im.manifest({"mediaType": im.MT_OCI_CONFIG, "digest": img.id, "size": cfg_size}, layers)
        raw = canonical_json(doc)
        with self.locked():
            digest = self.put_blob(raw)
            with self._update(layout.IMAGES) as idx:
                rec = idx.setdefault(img.id, {"added": int(time.time())})
                rec.setdefault("manifests", {})[compression] = digest
            self._write_index()
        return {"mediaType": im.MT_OCI_MANIFEST, "digest": digest, "size": len(raw),
                "platform": im.platform_of(img.config)}

    def _write_index(self) -> None:
        """index.json lists every manifest made so far, one entry per tag, so the store root is
        itself a valid OCI layout (`skopeo inspect oci:<root>:busybox:latest`)."""
        from cache import image as im
        with self.locked():
            images, tags = self.images(), self.tags()
            entries = []
            for image_id, rec in sorted(images.items()):
                for comp, digest in sorted((rec.get("manifests") or {}).items()):
                    if not self.has_blob(digest):
                        continue
                    desc = {"mediaType": im.MT_OCI_MANIFEST, "digest": digest,
                            "size": self.blob_path(digest).stat().st_size}
                    names = [refs.familiar(t) for t, i in sorted(tags.items()) if i == image_id]
                    if comp != "gzip" or not names:
                        entries.append(desc)
                    for n in names if comp == "gzip" else []:
                        entries.append({**desc, "annotations": {
                            "org.opencontainers.image.ref.name": n}})
            self._write_json("index.json", {"schemaVersion": 2, "mediaType": im.MT_OCI_INDEX,
                                            "manifests": entries})

    # ---- build cache ---------------------------------------------------------------------

    def cache_get(self, key: str) -> dict | None:
        return self._read_json(layout.CACHEKEYS).get(key)

    def cache_put(self, key: str, value: dict) -> None:
        json.dumps(value)  # fail here, not half-way through the index write
        with self._update(layout.CACHEKEYS) as idx:
            idx[key] = value
