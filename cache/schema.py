"""Shape checks for the JSON documents of images: docker-archive manifest.json, OCI index and
manifest, descriptors, image config. Whatever reads one of these from outside (an archive, a
registry) checks it here first, so code after it may index into the document without guarding
every field, and a malformed document is one clear StoreError naming the file and the field:
`index.json: manifests[0].digest: expected a string, got nothing`.

Only what pybuild reads is checked; unknown fields pass, as the specs ask.
"""
from __future__ import annotations

from cache.errors import StoreError
from cache.image import MT_DOCKER_LIST, MT_OCI_INDEX
from cache.store import check_digest

_TYPES = {"an object": dict, "a list": list, "a string": str, "an integer": int}


def _kind(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    return {str: "a string", list: "a list", dict: "an object"}.get(type(v), type(v).__name__)


class _At:
    """Where in which file: `str()` is `file: path.to[3].field`."""

    def __init__(self, where: str, path: str = ""):
        self.where, self.path = where, path

    def __getitem__(self, key) -> _At:
        if isinstance(key, int):
            return _At(self.where, f"{self.path}[{key}]")
        return _At(self.where, f"{self.path}.{key}" if self.path else key)

    def fail(self, message: str) -> StoreError:
        return StoreError(f"{self.where}: {self.path + ': ' if self.path else ''}{message}")

    def want(self, v, want: str):
        t = _TYPES[want]
        if not isinstance(v, t) or (t is int and isinstance(v, bool)):
            raise self.fail(f"expected {want}, got {_kind(v)}")
        return v


def _field(doc: dict, key: str, want: str, at: _At, *, required: bool = False, default=None):
    v = doc.get(key)
    if v is None:
        if required:
            raise at[key].fail(f"expected {want}, got {'null' if key in doc else 'nothing'}")
        return default
    return at[key].want(v, want)


def _strings(v, at: _At) -> list[str]:
    for i, s in enumerate(at.want(v, "a list")):
        at[i].want(s, "a string")
    return v


def _string_map(v, at: _At) -> dict[str, str]:
    for k, s in at.want(v, "an object").items():
        at[k].want(s, "a string")
    return v


def _digest(v, at: _At) -> str:
    at.want(v, "a string")
    try:
        return check_digest(v)
    except StoreError as e:
        raise at.fail(str(e)) from None


def descriptor(d, at: _At) -> dict:
    at.want(d, "an object")
    if "digest" not in d:
        raise at["digest"].fail("expected a string, got nothing")
    _digest(d["digest"], at["digest"])
    _field(d, "mediaType", "a string", at)
    size = _field(d, "size", "an integer", at)
    if size is not None and size < 0:
        raise at["size"].fail(f"expected a size, got {size}")
    if d.get("annotations") is not None:
        _string_map(d["annotations"], at["annotations"])
    p = _field(d, "platform", "an object", at)
    if p is not None:
        for k in ("os", "architecture", "variant"):
            _field(p, k, "a string", at["platform"])
    return d


def docker_manifest(doc, where: str = "manifest.json") -> list[dict]:
    """manifest.json of a docker-archive: a non-empty list of {Config, Layers, RepoTags}."""
    at = _At(where)
    at.want(doc, "a list")
    if not doc:
        raise at.fail("lists no images")
    for i, entry in enumerate(doc):
        e = at[i]
        e.want(entry, "an object")
        _field(entry, "Config", "a string", e, required=True)
        _strings(_field(entry, "Layers", "a list", e, default=[]), e["Layers"])
        _strings(_field(entry, "RepoTags", "a list", e, default=[]), e["RepoTags"])
    return doc


def index(doc, where: str) -> list[dict]:
    """An OCI image index (or docker manifest list): its descriptors."""
    at = _At(where)
    at.want(doc, "an object")
    children = _field(doc, "manifests", "a list", at, required=True)
    for i, d in enumerate(children):
        descriptor(d, at["manifests"][i])
    return children


def is_index(doc: dict, media_type: str | None) -> bool:
    """Is this (checked as an object) document an index, by its descriptor or itself?"""
    return media_type in (MT_OCI_INDEX, MT_DOCKER_LIST) or doc.get("mediaType") in (
        MT_OCI_INDEX, MT_DOCKER_LIST) or "manifests" in doc


def manifest(doc, where: str) -> dict:
    """An OCI or docker v2 image manifest: config and layer descriptors checked."""
    at = _At(where)
    at.want(doc, "an object")
    if doc.get("config") is None:
        raise at["config"].fail("expected an object, got nothing")
    descriptor(doc["config"], at["config"])
    for i, d in enumerate(_field(doc, "layers", "a list", at, default=[])):
        descriptor(d, at["layers"][i])
    return doc


def config(doc, where: str) -> list[str]:
    """An image config; returns its rootfs.diff_ids. The container config fields that builds
    and `run` read (Env, Cmd, Entrypoint, ...) and the history are checked too, so an image
    loaded once cannot break a later command."""
    at = _At(where)
    at.want(doc, "an object")
    for k in ("architecture", "os", "variant", "created"):
        _field(doc, k, "a string", at)
    rootfs = _field(doc, "rootfs", "an object", at, required=True)
    ids = _field(rootfs, "diff_ids", "a list", at["rootfs"], required=True)
    for i, d in enumerate(ids):
        _digest(d, at["rootfs"]["diff_ids"][i])
    for i, h in enumerate(_field(doc, "history", "a list", at, default=[])):
        at["history"][i].want(h, "an object")
        for k in ("created", "created_by", "comment", "author"):
            _field(h, k, "a string", at["history"][i])
    c = _field(doc, "config", "an object", at, default={})
    cat = at["config"]
    for k in ("Env", "Cmd", "Entrypoint", "Shell", "OnBuild"):
        if c.get(k) is not None:
            _strings(c[k], cat[k])
    for k in ("User", "WorkingDir", "StopSignal"):
        _field(c, k, "a string", cat)
    if c.get("Labels") is not None:
        _string_map(c["Labels"], cat["Labels"])
    for k in ("ExposedPorts", "Volumes", "Healthcheck"):
        _field(c, k, "an object", cat)
    return ids
