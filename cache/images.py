"""Images and tags: image configs (blobs named by their digest, the image ID), images.json,
tags.json, manifests made on first save/push, and index.json (the OCI layout's index).

    images.json  {image id: {"added": t, "manifests": {compression: digest},
                             "repo_digests": ["host/repo@sha256:...", ...],
                             "source_manifest": {"digest", "mediaType"}}}
    tags.json    {"docker.io/library/busybox:latest": image id}

`repo_digests` are docker's RepoDigests: the manifest digests this image has in registries
(pulled or pushed), so `name@sha256:...` resolves locally and is never asked for again.
`source_manifest` is the exact manifest a pulled image came with; a push of the unchanged
image sends those bytes again, so its digest stays what the registry it came from says.

An image this process stores or opens is held (cache.leases) before the lock under which it is
written or looked up: prune -a keeps the untagged image of a build until the build has tagged it,
as BuildKit's lease keeps a result referenced until it is exported. A tag is only written under
the lock after the image's config and layers were seen present under that same lock.
"""
from __future__ import annotations

import time
from pathlib import Path

from cache import image as im
from cache import imagelookup, layout, refs
from cache.blobs import Blobs
from cache.errors import StoreError
from cache.image import Image
from cache.indexes import Indexes
from cache.jsonread import loads
from cache.layerstore import LayerStore


class ImageStore:
    def __init__(self, root: Path, blobs: Blobs, layers: LayerStore, indexes: Indexes):
        self.root = Path(root)
        self.blobs, self.layers, self.ix, self.lock = blobs, layers, indexes, indexes.lock
        self.leases = layers.leases

    # ---- reading -------------------------------------------------------------------------

    def records(self) -> dict[str, dict]:
        return self.ix.read(layout.IMAGES)

    def tags(self) -> dict[str, str]:
        return self.ix.read(layout.TAGS)

    def get(self, ref_or_id: str) -> Image:
        """The image, held for this process (its layers with it) from here on."""
        with self.lock.held():
            image_id = self.resolve(ref_or_id)
            self.leases.hold(image_id)  # under the lock: no prune between lookup and hold
            raw = self.blobs.read(image_id)
        try:
            config = loads(raw)
        except ValueError as e:
            raise StoreError(f"image {image_id}: corrupt config ({e})") from None
        return Image(image_id, config, tuple((config.get("rootfs") or {}).get("diff_ids") or ()))

    def resolve(self, ref: str) -> str:
        """Image ID for a tag (`busybox` = `docker.io/library/busybox:latest`), a full ID, an ID
        prefix (like docker, at least one hex digit and unambiguous) or name@digest."""
        return imagelookup.resolve(ref, self.ix.read)

    def tags_of(self, image_id: str) -> list[str]:
        return sorted(t for t, i in self.tags().items() if i == image_id)

    # ---- writing -------------------------------------------------------------------------

    def put(self, config: dict, tags=()) -> str:
        """Store an image config, and tag it, in one step under the lock; its digest is the image
        ID. Every diff_id must be in the store."""
        from cache.keys import canonical_json
        raw = canonical_json(config)
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        with self.lock.held():
            gone = self.layers.missing(diff_ids)
            if gone:
                raise StoreError(f"image config names layer {gone[0]}, which is not in the store")
            image_id = self.put_config_bytes(raw)
            if tags:
                self.tag(tags, image_id)
        return image_id

    def put_config_bytes(self, raw: bytes) -> str:
        from cache.keys import digest_bytes
        self.leases.hold(digest_bytes(raw))  # its tag, if any, comes later: prune -a keeps it
        with self.lock.held():  # blob and record together: prune never sees one without the other
            image_id = self.blobs.put(raw)
            with self.ix.update(layout.IMAGES) as idx:
                idx.setdefault(image_id, {"added": int(time.time()), "manifests": {}})
        return image_id

    def tag(self, names, image_id: str) -> list[str]:
        """Point each of `names` (normalised like docker) at an image, all or none; returns the
        full names. The image's config and layers are checked under the same lock."""
        full = [refs.normalize(n) for n in names]
        with self.lock.held():
            image_id = self.resolve(image_id)
            img = self.get(image_id)  # its config blob is here
            gone = self.layers.missing(img.diff_ids)
            if gone:
                raise StoreError(f"image {image_id} names layer {gone[0]}, which is not in the store")
            with self.ix.update(layout.TAGS) as tags:
                for f in full:
                    tags[f] = image_id
            self.write_index()
        return full

    def record_distribution(self, image_id: str, repo_digest: str,
                            source_manifest: dict | None = None) -> None:
        """Remember that `repo_digest` (`host/repo@sha256:...`) is this image in a registry;
        `source_manifest` ({digest, mediaType}, its bytes a blob) when it was pulled."""
        with self.ix.update(layout.IMAGES) as idx:
            rec = idx.setdefault(image_id, {"added": int(time.time()), "manifests": {}})
            repo = repo_digest.partition("@")[0]
            digests = [d for d in rec.get("repo_digests") or () if d.partition("@")[0] != repo]
            rec["repo_digests"] = sorted([*digests, repo_digest])
            if source_manifest is not None:
                rec["source_manifest"] = dict(source_manifest)

    def repo_digest(self, image_id: str, repo: str) -> str | None:
        """The manifest digest this image is known by in `repo` (full name), if any."""
        for d in (self.records().get(image_id) or {}).get("repo_digests") or ():
            name, _, digest = d.partition("@")
            if name == repo:
                return digest
        return None

    def untag(self, name: str) -> str:
        full = refs.normalize(name)
        with self.lock.held():
            with self.ix.update(layout.TAGS) as tags:
                if full not in tags:
                    raise StoreError(f"no such image: {name}")
                image_id = tags.pop(full)
            self.write_index()
        return image_id

    def remove(self, image_id: str) -> None:
        """Drop an image record and its tags (blobs go at the next prune)."""
        self.drop([image_id], with_tags=True)

    def drop(self, image_ids, *, with_tags: bool = False) -> None:
        ids = set(image_ids)
        if not ids:
            return
        with self.lock.held():
            if with_tags:
                with self.ix.update(layout.TAGS) as tags:
                    for t in [t for t, i in tags.items() if i in ids]:
                        del tags[t]
            with self.ix.update(layout.IMAGES) as idx:
                for i in ids:
                    idx.pop(i, None)
            self.write_index()

    def forget_missing_manifests(self) -> None:
        """Drop manifest records whose blob is gone (after a blob sweep)."""
        with self.lock.held():
            idx = self.records()
            gone = [(rec, c) for rec in idx.values() for c, d in (rec.get("manifests") or {}).items()
                    if not self.blobs.has(d)]
            for rec, c in gone:
                del rec["manifests"][c]
            lost = [rec for rec in idx.values() if (rec.get("source_manifest") or {}).get("digest")
                    and not self.blobs.has(rec["source_manifest"]["digest"])]
            for rec in lost:
                del rec["source_manifest"]
            if gone or lost:
                self.ix.write(layout.IMAGES, idx)

    def manifest(self, image_id: str, compression: str = "gzip") -> dict:
        """The OCI manifest descriptor of an image with layers compressed as asked, making the
        compressed blobs and the manifest on first use."""
        from cache.keys import canonical_json
        img = self.get(image_id)
        rec = self.records().get(img.id, {})
        have = (rec.get("manifests") or {}).get(compression)
        if have and self.blobs.has(have):
            raw = self.blobs.read(have)
            return {"mediaType": im.MT_OCI_MANIFEST, "digest": have, "size": len(raw),
                    "platform": im.platform_of(img.config)}
        layers = [self.layers.blob(d, compression) for d in img.diff_ids]
        cfg_size = self.blobs.size(img.id)
        doc = im.manifest({"mediaType": im.MT_OCI_CONFIG, "digest": img.id, "size": cfg_size}, layers)
        raw = canonical_json(doc)
        with self.lock.held():
            digest = self.blobs.put(raw)
            with self.ix.update(layout.IMAGES) as idx:
                rec = idx.setdefault(img.id, {"added": int(time.time())})
                rec.setdefault("manifests", {})[compression] = digest
            self.write_index()
        return {"mediaType": im.MT_OCI_MANIFEST, "digest": digest, "size": len(raw),
                "platform": im.platform_of(img.config)}

    def write_index(self) -> None:
        """index.json lists every manifest made so far, one entry per tag, so the store root is
        itself a valid OCI layout (`skopeo inspect oci:<root>:busybox:latest`)."""
        with self.lock.held():
            images, tags = self.records(), self.tags()
            entries = []
            for image_id, rec in sorted(images.items()):
                for comp, digest in sorted((rec.get("manifests") or {}).items()):
                    if not self.blobs.has(digest):
                        continue
                    desc = {"mediaType": im.MT_OCI_MANIFEST, "digest": digest,
                            "size": self.blobs.size(digest)}
                    names = [refs.familiar(t) for t, i in sorted(tags.items()) if i == image_id]
                    if comp != "gzip" or not names:
                        entries.append(desc)
                    for n in names if comp == "gzip" else []:
                        entries.append({**desc, "annotations": {
                            "org.opencontainers.image.ref.name": n}})
            self.ix.write(layout.OCI_INDEX, {"schemaVersion": 2, "mediaType": im.MT_OCI_INDEX,
                                             "manifests": entries})
