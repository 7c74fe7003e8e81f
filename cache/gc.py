"""Garbage collection for `pybuild prune`, through the store parts' public API.

Roots: every image record (tagged or not) and every build-cache entry; from them, configs,
manifests, layers (dirs and blobs) are kept. Any `sha256:` string inside a cache entry counts as
a reference, so the builder can keep layers and images alive without telling us its schema.
What a running process holds is kept too, named by its owner (`cache.owner`: pid + start time):
its leases (`cache.leases`: the images and layers a build or container uses, commits or is
about to tag), and its tmp/ files and scratch dirs.
`all_=True` also drops untagged images and the whole build cache before collecting;
`build_cache=True` only the build cache.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from cache import layerdelta, layout, owner

_SHA = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass
class PruneReport:
    tmp: int = 0
    blobs: int = 0
    layers: int = 0
    images: int = 0
    cache_entries: int = 0
    bytes: int = 0
    busy: int = 0  # dead scratch dirs left because something is still mounted in them


def _size(path) -> int:
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            total = 0
            for dp, dns, fns in os.walk(path):
                for n in fns + dns:
                    try:
                        total += os.lstat(os.path.join(dp, n)).st_size
                    except OSError:
                        pass
            return total
        return os.lstat(path).st_size
    except OSError:
        return 0


def _refs_in(value, out: set) -> None:
    if isinstance(value, str):
        out.update(_SHA.findall(value))
    elif isinstance(value, dict):
        for k, v in value.items():
            _refs_in(k, out)
            _refs_in(v, out)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _refs_in(v, out)


def stale_scratch(store) -> list[Path]:
    """tmp/ entries (scratch dirs and temporary files) whose owning process is gone, or that
    name no owner: garbage, though a dead build's overlay may still be mounted in one (unmount
    those first: prune leaves a dir that holds a mount)."""
    out = []
    for e in os.scandir(store.tmp):
        tok = owner.of_name(e.name)
        if tok is None or not owner.alive(tok):
            out.append(Path(e.path))
    return sorted(out)


def _remove_stale(store, rep: PruneReport, mounts: Collection[str]) -> None:
    for path in stale_scratch(store):
        real = os.path.realpath(path)  # the kernel names mount points by their real path
        if any(m == real or m.startswith(real + "/") for m in mounts):
            rep.busy += 1  # rmtree would reach through the mount into what it shows
            continue
        rep.bytes += _size(path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        rep.tmp += 1


def prune(store, *, all_: bool = False, build_cache: bool = False,
          mount_points: Collection[str] | None = None, pinned: Collection[str] = ()) -> PruneReport:
    """Remove what nothing references. Dead tmp/ entries go too when the caller says what is
    mounted in its namespace (`mount_points`, read by runtime.mountinfo: cache runs no kernel
    code); an entry that still holds a mount is left (rmtree would reach into what it shows).
    `pinned`: image IDs kept as roots even untagged (the images containers are made from:
    cache reads no container record, the builder passes them). `build_cache`: clear the build
    cache (and collect what only it kept) without dropping images (`builder prune`)."""
    rep = PruneReport()
    blobs, layers, images_ = store.blob_store, store.layer_store, store.image_store
    with store.locked():
        if mount_points is not None:
            _remove_stale(store, rep, mount_points)
        held = {d for d in store.leases.held_by_others() if _SHA.fullmatch(d)}
        held |= {d for d in pinned if _SHA.fullmatch(d)}
        images = images_.records()
        tags = images_.tags()
        if all_:
            tagged = set(tags.values())
            dangling = [i for i in images if i not in tagged and i not in held]
            if dangling:
                images_.drop(dangling)
                rep.images = len(dangling)
                images = images_.records()
        if all_ or build_cache:
            rep.cache_entries = store.build_cache.clear()
        keep: set[str] = set(images) | set(tags.values())
        _refs_in(store.build_cache.entries(), keep)
        keep |= held
        infos = layers.infos()
        # close over configs -> diff_ids, manifests -> blobs, layers -> their blobs
        for image_id in list(keep):
            try:
                cfg = json.loads(blobs.path(image_id).read_bytes())
            except (OSError, ValueError):
                continue
            if isinstance(cfg, dict):
                keep.update(d for d in (cfg.get("rootfs") or {}).get("diff_ids") or ()
                            if isinstance(d, str))
            rec = images.get(image_id, {})
            source = (rec.get("source_manifest") or {}).get("digest")
            for mdigest in [*(rec.get("manifests") or {}).values(), *([source] if source else [])]:
                keep.add(mdigest)
                try:
                    _refs_in(json.loads(blobs.path(mdigest).read_bytes()), keep)
                except (OSError, ValueError):
                    pass
        for d in list(keep):    # a delta layer needs its base (cache.layerdelta)
            base = layout.delta_base(store.root, d)
            if base is not None:
                keep.add(base)
        for d in list(keep):
            for b in (infos.get(d, {}).get("blobs") or {}).values():
                keep.add(b["digest"])
        # sweep
        dropped = {d for d in infos if d not in keep} | {d for d in layers.dir_ids() if d not in keep}
        dropped |= {d for d in layerdelta.meta_ids(store.root) if d not in keep}
        for d in dropped:
            if layers.path(d).exists():
                rep.bytes += _size(layers.path(d))
                rep.layers += 1
            rep.bytes += _size(layout.layer_meta_path(store.root, d))  # a kept tar, a plan
        layers.remove(dropped)
        for d in blobs.digests():
            if d not in keep:
                rep.bytes += blobs.remove(d)
                rep.blobs += 1
        store.sources.forget(set(blobs.digests()))
        images_.forget_missing_manifests()
        images_.write_index()
    return rep
