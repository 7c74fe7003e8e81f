"""Pull: a reference in a registry (through its mirrors) -> an image in the store.

The manifest is resolved first (an index picks the wanted platform), then the config, then every
layer the store lacks, a few at a time. Each blob streams into the store's tmp/ while it is
hashed (client.fetch_blob resumes a dropped connection with a Range request) and, on a thread of
its own, decompressed and hashed again for the config's diff_id, so both checks are done when
the last byte is (no second pass over the file). Only when everything checked out are the blobs
moved in and the indexes written, under the store lock: a failed pull leaves the store as it
was, and two processes pulling the same image store each blob once (blobs are named by digest).
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field

from cache import image as im
from cache import platform as plat
from cache import refs, schema
from cache.compress import MT_DOCKER_GZIP, MT_DOCKER_TAR, MT_GZIP, MT_TAR, MT_ZSTD
from cache.errors import StoreError
from cache.registry import layerfetch
from cache.registry.errors import NotFound, RegistryError

JOBS = 3  # parallel blob downloads (docker's max-concurrent-downloads)
_MAX_CONFIG = 8 << 20
_LAYER_TYPES = {MT_GZIP: "gzip", MT_DOCKER_GZIP: "gzip", MT_ZSTD: "zstd", MT_TAR: "none",
                MT_DOCKER_TAR: "none"}
_INDEX_TYPES = (im.MT_OCI_INDEX, im.MT_DOCKER_LIST)
_ATTESTATION = "vnd.docker.reference.type"


@dataclass
class Pulled:
    image_id: str
    name: str | None          # the tag it now has (full name), None for a digest-only pull
    repo: str                 # full repository name, e.g. docker.io/library/busybox
    digest: str               # the manifest digest (what `name@digest` pins)
    downloaded: int = 0       # layers fetched (0: everything was here)
    layers: list[str] = field(default_factory=list)


def _silent(event: dict) -> None:
    pass


def short(digest: str) -> str:
    """docker's 12-hex id of a layer in progress lines."""
    return digest.removeprefix("sha256:")[:12]


def byte_progress(progress, status: str, sid: str, size: int | None):
    """A progress(bytes so far) callback sending `status` events at most every 1 MiB."""
    last = [0]

    def moved(n: int) -> None:
        if n - last[0] >= (1 << 20) or n == size:
            last[0] = n
            progress({"status": status, "id": sid, "progressDetail": {"current": n, "total": size}})
    return moved


def parallel(fn, items, jobs: int, name: str) -> None:
    """fn(item) for each item, `jobs` at a time (inline for one); the first failure is raised
    once all have ended, the ones not started are cancelled."""
    if len(items) <= 1:
        for it in items:
            fn(it)
        return
    from concurrent.futures import ThreadPoolExecutor  # with logging: ~9 ms, not for one item

    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix=name) as pool:
        futures = [pool.submit(fn, it) for it in items]
        first = None
        for f in futures:
            try:
                f.result()
            except BaseException as e:  # noqa: BLE001 - the first failure is raised below
                first = first or e
                for g in futures:
                    g.cancel()
    if first is not None:
        raise first


def open_repository(repo_full: str, *, conf=None, tls_verify: bool = True, push: bool = False):
    """The Repository objects to try for `repo_full`: mirrors first for a pull."""
    from cache.registry import config as rconf
    from cache.registry.client import Repository
    conf = conf or rconf.load()
    if push:
        return [Repository(conf.push_endpoint(repo_full), push=True, tls_verify=tls_verify)]
    return [Repository(ep, tls_verify=tls_verify) for ep in conf.pull_endpoints(repo_full)]


def _pick(children: list[dict], want: dict, where: str) -> dict:
    images = [c for c in children
              if (c.get("annotations") or {}).get(_ATTESTATION) != "attestation-manifest"
              and (c.get("platform") or {}).get("os") != "unknown"]
    for c in images:
        if not c.get("platform") or plat.matches(c["platform"], want):
            return c
    have = ", ".join(sorted({plat.to_string(c["platform"]) for c in images if c.get("platform")}))
    raise RegistryError(f"{where}: no matching manifest for {plat.to_string(want)} in the "
                        f"manifest list entries (it has {have or 'none'})")


def resolve(ref: str, *, platform: str | None = None, conf=None, tls_verify: bool = True):
    """(repository, repo_full, tag, top digest, image manifest (raw, media type, digest)) for
    `ref`, trying each endpoint (mirrors first) until one has it."""
    repo_full, tag, digest = refs.parse(ref)
    want = plat.parse(platform) if platform else plat.host()
    errors: list[RegistryError] = []
    for repo in open_repository(repo_full, conf=conf, tls_verify=tls_verify):
        try:
            top = repo.get_manifest(digest or tag)
        except NotFound as e:
            errors.append(e)
            continue
        except RegistryError as e:  # a mirror that is down: the next endpoint may answer
            errors.append(e)
            continue
        man = top
        for _ in range(4):
            doc = _json(man.raw, f"{repo.name}: manifest {man.digest}")
            if not schema.is_index(doc, man.media_type):
                break
            child = _pick(schema.index(doc, f"manifest {man.digest}"), want, f"{repo.name}:{tag or digest}")
            man = repo.get_manifest(child["digest"])
        else:
            raise RegistryError(f"{repo.name}: manifest indexes nested too deeply")
        return repo, repo_full, tag, top.digest, man
    # the registry itself (last endpoint) decides what the user is told
    raise errors[-1] if errors else RegistryError(f"{repo_full}: no registry to pull from")


def current_digest(ref: str, *, conf=None, tls_verify: bool = True) -> str | None:
    """The digest the registry's tag names now, asked with HEAD through the endpoints (mirrors
    first); None when no endpoint says (then a GET decides)."""
    repo_full, tag, _digest = refs.parse(ref)
    for repo in open_repository(repo_full, conf=conf, tls_verify=tls_verify):
        try:
            head = repo.head_manifest(tag)
        except RegistryError:
            continue
        if head is not None and head[0]:
            return head[0]
    return None


def _json(raw: bytes, where: str):
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise RegistryError(f"{where}: invalid JSON ({e})") from None


def pull(store, ref: str, *, platform: str | None = None, conf=None, tls_verify: bool = True,
         progress=None, jobs: int = JOBS, resolved=None) -> Pulled:
    """Pull `ref` into the store and tag it (unless it is a digest-only reference);
    `resolved` is what `resolve` already said of it."""
    progress = progress or _silent
    repo, repo_full, tag, top_digest, man = resolved or resolve(
        ref, platform=platform, conf=conf, tls_verify=tls_verify)
    where = f"{repo.name}@{man.digest}"
    doc = schema.manifest(_json(man.raw, where), where)
    if man.media_type in _INDEX_TYPES:
        raise RegistryError(f"{where}: an index where an image manifest was expected")
    cdesc = doc["config"]
    layers = doc.get("layers") or []
    for d in [cdesc, *layers]:  # the spec requires sizes: they bound what a registry may send
        if not isinstance(d.get("size"), int) or isinstance(d["size"], bool) or d["size"] < 0:
            raise RegistryError(f"{where}: descriptor {d['digest']} has no valid size")
    if cdesc["size"] > _MAX_CONFIG:
        raise RegistryError(f"{where}: image config of {cdesc['size']} bytes is too large")
    raw_config = _fetch_small(repo, cdesc["digest"], cdesc["size"])
    config = _json(raw_config, f"{repo.name}: config {cdesc['digest']}")
    diff_ids = schema.config(config, f"{repo.name}: config {cdesc['digest']}")
    if len(layers) != len(diff_ids):
        raise RegistryError(f"{where}: {len(layers)} layers but its config lists {len(diff_ids)}")
    got = im.platform_of(config)
    if platform:
        want = plat.parse(platform)
        if not plat.matches(got, want):
            raise RegistryError(f"{ref}: image is for {plat.to_string(got)}, not {plat.to_string(want)}")
    elif not plat.matches(got, plat.host()):
        progress({"status": f"WARNING: The requested image's platform ({plat.to_string(got)}) "
                            f"does not match the detected host platform "
                            f"({plat.to_string(plat.host())}) and no specific platform was requested"})
    for desc in layers:
        if desc.get("mediaType", MT_GZIP) not in _LAYER_TYPES:
            raise RegistryError(f"{where}: layer {desc['digest']} has media type "
                                f"{desc.get('mediaType')!r}, which is not an image layer")
    progress({"status": f"Pulling from {repo_full.partition('/')[2]}", "id": tag or top_digest})
    todo = []
    missing = set(store.layer_store.missing(diff_ids))
    for desc, diff_id in zip(layers, diff_ids, strict=True):
        if diff_id in missing:
            todo.append((desc, diff_id))
            missing.discard(diff_id)  # a layer listed twice is fetched once
        else:
            progress({"status": "Already exists", "id": short(desc["digest"])})
    staged = _download(store, repo, todo, progress, jobs)
    try:
        with store.locked():
            for digest, (tmp, _kind, _size) in staged.items():
                if not store.has_blob(digest):
                    store.add_blob_file(tmp, digest, synced=True)  # layerfetch fsynced it
            for desc, diff_id in todo:
                _t, kind, tar_size = staged[desc["digest"]]
                store.add_received_layer(diff_id, desc["digest"], desc["size"], kind, tar_size)
            image_id = store.put_config_bytes(raw_config)
            if not store.has_blob(man.digest):
                store.put_blob(man.raw)
            name = f"{repo_full}:{tag}" if tag else None
            if name:
                store.tag(name, image_id)
            store.record_distribution(image_id, f"{repo_full}@{top_digest}",
                                      {"digest": man.digest, "mediaType": man.media_type})
            store.sources.add([cdesc["digest"], *(d["digest"] for d in layers)],
                              f"{repo.endpoint.host}/{repo.endpoint.path}")
            store.write_index()
    finally:
        for tmp, _k, _s in staged.values():
            tmp.unlink(missing_ok=True)
    return Pulled(image_id, name, repo_full, top_digest, len(todo), list(diff_ids))


def _fetch_small(repo, digest: str, size: int) -> bytes:
    """A small blob in memory: fetch_blob checks its size and digest as it streams."""
    import io
    buf = io.BytesIO()
    repo.fetch_blob(digest, buf, size=size)
    return buf.getvalue()


def _download(store, repo, todo, progress, jobs: int) -> dict:
    """Fetch each layer blob of `todo` into tmp/, verified; {digest: (tmp, kind, tar size)}.
    On any failure every temporary is removed and the first error raised."""
    staged: dict[str, tuple] = {}
    lock = threading.Lock()

    def one(item) -> None:
        desc, diff_id = item
        digest, size = desc["digest"], desc.get("size")
        sid = short(digest)
        moved = byte_progress(progress, "Downloading", sid, size)
        got = layerfetch.stage(store, repo, desc, diff_id, progress=moved,
                               verifying=lambda: progress({"status": "Verifying Checksum", "id": sid}))
        with lock:
            staged[digest] = (got.tmp, got.compression, got.tar_size)
        progress({"status": "Download complete", "id": sid})

    for desc, _d in todo:
        progress({"status": "Waiting", "id": short(desc["digest"])})
    try:
        parallel(one, todo, jobs, "pull")
    except BaseException:
        for tmp, _k, _s in staged.values():
            tmp.unlink(missing_ok=True)
        raise
    for desc, _d in todo:
        progress({"status": "Pull complete", "id": short(desc["digest"])})
    return staged


def ensure(store, ref: str, *, always: bool = False, platform: str | None = None, conf=None,
           tls_verify: bool = True, progress=None):
    """The image `ref` names, pulled when the store lacks it (or, with `always`, when the
    registry's tag now names another manifest). A digest reference found here is never
    checked again. Returns (image, Pulled | None)."""
    try:
        img = store.image(ref)
    except StoreError:
        img = None
    repo_full, tag, digest = refs.parse(ref)
    if img is not None and (not always or digest is not None):
        return img, None
    resolved = None
    if img is not None:
        have = store.repo_digest(img.id, repo_full)
        if have is not None and have == current_digest(ref, conf=conf, tls_verify=tls_verify):
            return img, None  # asked with HEAD: docker.io does not count it as a pull
        resolved = resolve(ref, platform=platform, conf=conf, tls_verify=tls_verify)
        if have == resolved[3]:
            return img, None
    pulled = pull(store, ref, platform=platform, conf=conf, tls_verify=tls_verify,
                  progress=progress, resolved=resolved)
    return store.image(pulled.image_id), pulled
