"""Garbage collection for `pybuild prune`.

Roots: every image record (tagged or not) and every build-cache entry; from them, configs,
manifests, layers (dirs and blobs) are kept. Any `sha256:` string inside a cache entry counts as
a reference, so the builder can keep layers and images alive without telling us its schema.
A layer committed by a process that is still running is kept too (a build between
commit_layer and put_image), and so is a tmp/ file or dir whose owner pid is alive.
`all_=True` also drops untagged images and the whole build cache before collecting.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass

from cache import layout

_SHA = re.compile(r"sha256:[0-9a-f]{64}")
_TMP = re.compile(r"^[a-z]+-(\d+)-")
PIN_SECONDS = 3600


@dataclass
class PruneReport:
    tmp: int = 0
    blobs: int = 0
    layers: int = 0
    images: int = 0
    cache_entries: int = 0
    bytes: int = 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


def prune(store, *, all_: bool = False, tmp: bool = True) -> PruneReport:
    rep = PruneReport()
    with store.locked():
        if tmp:
            for e in os.scandir(store.tmp):
                m = _TMP.match(e.name)
                if m and _alive(int(m.group(1))) and int(m.group(1)) != 0:
                    continue
                rep.bytes += _size(e.path)
                if e.is_dir(follow_symlinks=False):
                    shutil.rmtree(e.path, ignore_errors=True)
                else:
                    os.unlink(e.path)
                rep.tmp += 1
        images = store.images()
        tags = store.tags()
        if all_:
            tagged = set(tags.values())
            dangling = [i for i in images if i not in tagged]
            if dangling:
                with store._update(layout.IMAGES) as idx:
                    for i in dangling:
                        idx.pop(i, None)
                rep.images = len(dangling)
                images = store.images()
            cache = store._read_json(layout.CACHEKEYS)
            if cache:
                rep.cache_entries = len(cache)
                store._write_json(layout.CACHEKEYS, {})
        keep: set[str] = set(images) | set(tags.values())
        _refs_in(store._read_json(layout.CACHEKEYS), keep)
        layers = store._read_json(layout.LAYERS)
        for d, info in layers.items():
            if (info.get("pid") and info["pid"] != os.getpid() and _alive(info["pid"])
                    and time.time() - info.get("t", 0) < PIN_SECONDS):
                keep.add(d)
        # close over configs -> diff_ids, manifests -> blobs, layers -> their blobs
        for image_id in list(keep):
            try:
                cfg = json.loads(store.blob_path(image_id).read_bytes())
            except (OSError, ValueError):
                continue
            if isinstance(cfg, dict):
                keep.update(d for d in (cfg.get("rootfs") or {}).get("diff_ids") or ()
                            if isinstance(d, str))
            for mdigest in (images.get(image_id, {}).get("manifests") or {}).values():
                keep.add(mdigest)
                try:
                    _refs_in(json.loads(store.blob_path(mdigest).read_bytes()), keep)
                except (OSError, ValueError):
                    pass
        for d in list(keep):
            for b in (layers.get(d, {}).get("blobs") or {}).values():
                keep.add(b["digest"])
        # sweep
        dropped = [d for d in layers if d not in keep]
        if dropped:
            with store._update(layout.LAYERS) as idx:
                for d in dropped:
                    idx.pop(d, None)
        for e in os.scandir(store.layers):
            if "sha256:" + e.name not in keep:
                rep.bytes += _size(e.path)
                shutil.rmtree(e.path, ignore_errors=True)
                rep.layers += 1
        for e in os.scandir(store.blobs):
            if "sha256:" + e.name not in keep:
                rep.bytes += _size(e.path)
                os.unlink(e.path)
                rep.blobs += 1
        with store._update(layout.IMAGES) as idx:
            for rec in idx.values():
                mans = rec.get("manifests") or {}
                for comp in [c for c, d in mans.items() if not store.has_blob(d)]:
                    del mans[comp]
        store._write_index()
    return rep
