"""Which image a reference names (the one set of rules: `resolve`), and `open_image`: an image's
config and layer dirs for `pybuild run`, found without loading `cache.store`.

`open_image` does what `Store.open().image(ref)` and `layer_dir` on each of its layers do when
everything is already in place, with only os, fcntl and C modules loaded (`cache.store` and
what it pulls in cost ~8 ms of a run's start-up). Anything else (a store not made yet, an
image that is not there, a received layer not unpacked yet, a corrupt index or config) gives
None: the caller then takes the Store path, which pulls, unpacks or says what is wrong.
"""
from __future__ import annotations

import os

from cache import atomic, layout, refs
from cache.errors import StoreError
from cache.jsonread import loads
from cache.layout import is_digest, is_hex
from cache.leases import Leases


def resolve(ref: str, read) -> str:
    """Image ID for a tag (`busybox` = `docker.io/library/busybox:latest`), a full ID, an ID
    prefix (like docker, at least one hex digit and unambiguous) or name@digest; `read(name)`
    gives a store index as a dict. StoreError when there is no such image or the prefix is
    ambiguous."""
    if not isinstance(ref, str) or not ref:
        raise StoreError("no such image: ''")
    images = read(layout.IMAGES)
    if is_digest(ref) and ref in images:
        return ref
    try:
        repo, tag, digest = refs.parse(ref)
    except StoreError:
        repo = None
    if repo is not None:
        tags = read(layout.TAGS)
        if tag is not None and f"{repo}:{tag}" in tags:
            image_id = tags[f"{repo}:{tag}"]
            if digest is None:
                return image_id
        if digest is not None:
            named = f"{repo}@{digest}"
            for image_id, rec in images.items():
                if named in (rec.get("repo_digests") or ()):
                    return image_id
            for image_id, rec in images.items():
                if digest in (rec.get("manifests") or {}).values() or digest == image_id:
                    return image_id
    hexpart = ref.removeprefix("sha256:")
    if len(hexpart) <= 64 and is_hex(hexpart):
        found = [i for i in images if i[7:].startswith(hexpart)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise StoreError(f"ambiguous image ID prefix {ref!r}: matches {len(found)} images")
    raise StoreError(f"no such image: {ref}")


def open_image(root, ref: str) -> tuple[str, dict, list[str]] | None:
    """(image ID, config, layer dirs top layer first: overlay's lowerdir order) of the image
    `ref` names in the store at `root`, held for this process (cache.leases) as
    `Store.image` and `Store.layer_dir` hold it; None when the Store path must do it."""
    root = os.fspath(root)
    try:
        if not (os.path.isdir(os.path.join(root, layout.TMP_DIR))
                and os.path.exists(os.path.join(root, layout.OCI_LAYOUT))
                and os.path.exists(os.path.join(root, layout.OCI_INDEX))):
            return None     # Store.open makes these first
        with atomic.Lock(os.path.join(root, layout.LOCK)).held():
            # under the lock, up to the hold: no prune between the lookup and the hold
            image_id = resolve(ref, lambda name: layout.read_index(root, name))
            if not is_digest(image_id):
                return None
            with open(layout.blob_path(root, image_id), "rb") as f:
                config = loads(f.read())
            if not isinstance(config, dict) or not isinstance(config.get("rootfs") or {}, dict):
                return None
            diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
            if not isinstance(diff_ids, list) or not all(is_digest(d) for d in diff_ids):
                return None
            dirs = layout.layer_dirs(root, diff_ids)   # a delta layer's base after it
            if not all(os.path.exists(d) for d in dirs):
                return None     # a received layer not unpacked yet: Store.layer_dir does it
            if os.path.isdir(os.path.join(root, layout.LAYERMETA_DIR)):    # deltas may be here
                infos = layout.read_index(root, layout.LAYERS)
                if any(layout.delta_base(root, d) != (infos.get(d) or {}).get("base")
                       for d in diff_ids):
                    return None     # a delta's record and its meta disagree: the Store says so
            # every dir's layer: the image's and the bases of its deltas
            Leases(root).hold(image_id, *("sha256:" + os.path.basename(d) for d in dirs))
    except (StoreError, OSError, ValueError, AttributeError, TypeError):
        return None     # corrupt data among them: the Store path says what is wrong
    return image_id, config, dirs
