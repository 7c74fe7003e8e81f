"""Push: an image in the store -> a tag in a registry (docker push).

Layers first, a few at a time, then the config, the manifest last, so a registry never holds a
manifest whose blobs it lacks. Each blob is skipped when the registry has it (HEAD), mounted from
another repository of the same registry that is known to hold it (cache.sources), else
uploaded (client.push_blob: monolithic when small, chunked when large). An image pulled and
pushed unchanged is sent with the exact manifest it came with, so its digest stays the same.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from cache import refs, schema
from cache.errors import StoreError
from cache.registry.pull import byte_progress, open_repository, parallel, short

JOBS = 3  # docker's max-concurrent-uploads is 5; 2 cores here


@dataclass
class Pushed:
    name: str       # full name:tag
    digest: str     # manifest digest
    size: int       # manifest size


def _silent(event: dict) -> None:
    pass


def _manifest_for(store, image, compression: str) -> tuple[bytes, str]:
    """The manifest bytes to send: the pulled one when all its blobs are here, else ours."""
    rec = store.images().get(image.id) or {}
    src = rec.get("source_manifest")
    if src and store.has_blob(src["digest"]):
        raw = store.read_blob(src["digest"])
        try:
            doc = schema.manifest(json.loads(raw), src["digest"])
        except (ValueError, StoreError):
            doc = None
        if doc and all(store.has_blob(d["digest"]) for d in [doc["config"], *(doc.get("layers") or [])]):
            return raw, src["mediaType"]
    desc = store.manifest(image.id, compression)
    return store.read_blob(desc["digest"]), desc["mediaType"]


def push(store, ref: str, *, conf=None, tls_verify: bool = True, progress=None,
         compression: str = "gzip", jobs: int = JOBS) -> Pushed:
    progress = progress or _silent
    repo_full, tag, digest = refs.parse(ref)
    if tag is None:
        raise StoreError(f"cannot push a digest reference: {ref} (push a tag)")
    name = f"{repo_full}:{tag}"
    try:
        image = store.image(name)
    except StoreError:
        raise StoreError(f"an image does not exist locally with the tag: {refs.familiar(name)}") from None
    progress({"status": f"The push refers to repository [{refs.familiar_repo(repo_full)}]"})
    progress({"status": "Preparing", "id": "manifest"})
    raw, media_type = _manifest_for(store, image, compression)
    doc = schema.manifest(json.loads(raw), "manifest")
    (repo,) = open_repository(repo_full, conf=conf, tls_verify=tls_verify, push=True)
    here = f"{repo.endpoint.host}/{repo.endpoint.path}"
    layers = list({d["digest"]: d for d in doc.get("layers") or []}.values())

    def one(desc: dict) -> None:
        digest, size = desc["digest"], desc["size"]
        sid = short(digest)
        if repo.blob_size(digest) is not None:
            progress({"status": "Layer already exists", "id": sid})
            return
        for src in reversed(store.sources.of(digest)):
            host, _, path = src.partition("/")
            if host == repo.endpoint.host and path != repo.endpoint.path \
                    and repo.mount_blob(digest, path):
                progress({"status": f"Mounted from {path}", "id": sid})
                return
        repo.push_blob(digest, size, store.blob_path(digest),
                       progress=byte_progress(progress, "Pushing", sid, size))
        progress({"status": "Pushed", "id": sid})

    for desc in layers:
        progress({"status": "Preparing", "id": short(desc["digest"])})
    parallel(one, layers, jobs, "push")
    cfg = doc["config"]
    if repo.blob_size(cfg["digest"]) is None:
        repo.push_blob(cfg["digest"], cfg["size"], store.blob_path(cfg["digest"]))
    want = repo.put_manifest(tag, raw, media_type)  # checked there against what the registry says
    store.record_distribution(image.id, f"{repo_full}@{want}")
    store.sources.add([cfg["digest"], *(d["digest"] for d in layers)], here)
    return Pushed(name, want, len(raw))
