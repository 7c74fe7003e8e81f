"""`--cache-to` / `--cache-from`: buildx's CSV values, parsed in one place, and the cache
repository or dir each names.

    --cache-to   type=registry,ref=R[,mode=min|max]   type=local,dest=DIR[,mode=min|max]
    --cache-from type=registry,ref=R                  type=local,src=DIR
    --cache-from R  (no `=`: buildx's short form of type=registry,ref=R; the same for --cache-to)

Also buildx's `tag=` (local: the tag inside the dir, default latest), `ignore-error=true` (an
export failure is a warning), and `image-manifest`/`oci-mediatypes`, which pybuild always does
(true; false is refused). mode defaults to min, as in BuildKit.
"""
from __future__ import annotations

from dataclasses import dataclass

from builder.errors import BuildError

TYPES = ("registry", "local")
_BOOL = {"true": True, "1": True, "false": False, "0": False}


@dataclass(frozen=True)
class CacheSpec:
    """One --cache-to or --cache-from, parsed."""

    flag: str  # "--cache-to" or "--cache-from"
    type: str  # "registry" | "local"
    ref: str | None = None  # registry: the reference as given
    path: str | None = None  # local: dest or src
    tag: str = "latest"  # the tag the cache lives under (registry: ref's tag)
    mode: str = "min"
    ignore_error: bool = False

    def describe(self) -> str:
        return f"{self.type}:{self.ref if self.type == 'registry' else self.path}"


def parse(value: str, flag: str) -> CacheSpec:
    """One --cache-to / --cache-from value; BuildError (one line) for anything wrong."""
    from cache.errors import StoreError
    from cache.refs import parse as parse_ref

    exporting = flag == "--cache-to"
    usage = ("expected type=registry,ref=REF or type=local,dest=DIR" if exporting
             else "expected type=registry,ref=REF or type=local,src=DIR")

    def fail(why: str) -> BuildError:
        return BuildError(f"{flag} {value!r}: {why}")

    if not value.strip():
        raise fail(usage)
    if "=" not in value:
        fields = {"type": "registry", "ref": value}
    else:
        fields = {}
        for item in value.split(","):
            k, eq, v = item.partition("=")
            k = k.strip().lower()
            if not eq or not k:
                raise fail(f"{item!r} is not KEY=VALUE ({usage})")
            if k in fields:
                raise fail(f"{k} given twice")
            fields[k] = v.strip()
    kind = fields.pop("type", None)
    if kind is None:
        raise fail(f"no type ({usage})")
    if kind not in TYPES:
        raise fail(f"type={kind} is not supported (use type=registry or type=local)")
    allowed = {"registry": {"ref"}, "local": {"dest" if exporting else "src", "tag"}}[kind]
    allowed |= {"mode", "ignore-error", "image-manifest", "oci-mediatypes", "compression"} \
        if exporting else set()
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise fail(f"unknown key {unknown[0]} for type={kind} (known: {', '.join(sorted(allowed))})")
    for k in ("ignore-error", "image-manifest", "oci-mediatypes"):
        if k in fields and fields[k].lower() not in _BOOL:
            raise fail(f"{k}={fields[k]}: expected true or false")
    for k in ("image-manifest", "oci-mediatypes"):
        if k in fields and not _BOOL[fields[k].lower()]:
            raise fail(f"{k}=false is not supported (pybuild writes an OCI image manifest)")
    if fields.get("compression", "gzip") != "gzip":
        raise fail(f"compression={fields['compression']} is not supported (the cache is gzip)")
    mode = fields.get("mode", "min")
    if mode not in ("min", "max"):
        raise fail(f"mode={mode}: expected min or max")
    ignore_error = _BOOL[fields.get("ignore-error", "false").lower()]
    if kind == "registry":
        ref = fields.get("ref")
        if not ref:
            raise fail("type=registry needs ref=REF")
        try:
            _repo, tag, digest = parse_ref(ref)
        except StoreError as e:
            raise fail(str(e)) from None
        if digest is not None and (exporting or tag is not None):
            raise fail("a cache is named by a tag, not a digest")
        return CacheSpec(flag, kind, ref=ref, tag=tag or digest, mode=mode, ignore_error=ignore_error)
    key = "dest" if exporting else "src"
    path = fields.get(key)
    if not path:
        raise fail(f"type=local needs {key}=DIR")
    tag = fields.get("tag", "latest")
    if not tag or any(c in tag for c in "/@ ") or len(tag) > 128:
        raise fail(f"tag={tag!r}: expected a tag such as latest")
    return CacheSpec(flag, kind, path=path, tag=tag, mode=mode, ignore_error=ignore_error)


def build_options(cache_to: list[str], cache_from: list[str]) -> dict[str, list[CacheSpec]]:
    """BuildOptions' cache_to and cache_from from the flags' values."""
    return {"cache_to": [parse(v, "--cache-to") for v in cache_to],
            "cache_from": [parse(v, "--cache-from") for v in cache_from]}


def open_target(spec: CacheSpec, *, tls_verify: bool = True):
    """The repository or dir `spec` names: an object with get_manifest, fetch_blob (import)
    and blob_size, push_blob, put_manifest (export), as cache.registry.client.Repository.
    A registry cache is read from and written to the registry itself, never a mirror."""
    if spec.type == "local":
        from cache.registry.layoutdir import LayoutDir

        return LayoutDir(spec.path, create=spec.flag == "--cache-to")
    from cache.refs import parse as parse_ref
    from cache.registry import config
    from cache.registry.client import Repository

    repo, _tag, _digest = parse_ref(spec.ref)
    return Repository(config.load().push_endpoint(repo), push=spec.flag == "--cache-to",
                      tls_verify=tls_verify)
