"""Where the store lives and what its files are called, plus read-only looks at its indexes.

The one place for the store's paths and names, and for the digest syntax they are made of. Kept
free of heavy imports (os, cache.jsonread, cache.owner) so that a fully cached rebuild or a
`pybuild run` can look at the store without loading `cache.store`; every index write goes
through `Store` (and `cache.atomic`); `new_scratch` is the one maker of scratch dirs.
"""
from __future__ import annotations

import os

from cache import owner
from cache.jsonread import loads

TAGS = "tags.json"
IMAGES = "images.json"
LAYERS = "layers.json"
CACHEKEYS = "cachekeys.json"
SOURCES = "sources.json"    # registry repos known to hold each blob (cache.sources)
OCI_INDEX = "index.json"
OCI_LAYOUT = "oci-layout"
LOCK = "lock"            # flock'ed around every index update
BLOBS_DIR = os.path.join("blobs", "sha256")
LAYERS_DIR = "layers"
LAYERMETA_DIR = "layermeta"  # kept tars of delta bases, delta plans (cache.layerdelta)
TMP_DIR = "tmp"          # temporaries and scratch dirs, named by owner (cache.owner)
REPLAY_DIR = "replay"    # builder.replay's records
EXPLAIN_DIR = "explain"  # builder.explain's records: each step's key inputs per Dockerfile+tag
LEASES_DIR = "leases"    # what running processes hold (cache.leases)
CACHE_MOUNTS_DIR = "cache-mounts"  # RUN --mount=type=cache dirs
CONTAINERS_DIR = "containers"  # one dir per container (runtime.containers.state)
CONTAINERS_LOCK = os.path.join(CONTAINERS_DIR, "lock")  # held to create, name or remove one
VOLUMES_DIR = "volumes"  # <name>/volume.json and <name>/_data (runtime.containers.volumes)
STAT_CACHE = "context-stat-cache.m"  # marshal (builder.context)
DIR_CACHE = "context-dir-cache.m"  # marshal (builder.context: a directory at a time)


def default_root() -> str:
    """`$PYBUILD_ROOT`, else /var/lib/pybuild as root, else `$XDG_DATA_HOME/pybuild`."""
    env = os.environ.get("PYBUILD_ROOT")
    if env:
        return env
    if os.geteuid() == 0:
        return "/var/lib/pybuild"
    xdg = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(xdg, "pybuild")


def read_index(root: str, name: str) -> dict:
    """One JSON index as a dict ({} when absent); ValueError when it is corrupt."""
    try:
        with open(os.path.join(root, name), "rb") as f:
            value = loads(f.read())
    except FileNotFoundError:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{name}: not an object")  # noqa: TRY004 - corrupt data, not a caller bug
    return value


_HEX = frozenset("0123456789abcdef")


def is_hex(s: str) -> bool:
    """Non-empty and only lowercase hex digits (what a digest's hex part and an ID prefix are)."""
    return bool(s) and _HEX.issuperset(s)


def is_digest(d) -> bool:
    """`sha256:` and 64 lowercase hex digits: the only digests the store names files by."""
    return isinstance(d, str) and len(d) == 71 and d.startswith("sha256:") and _HEX.issuperset(d[7:])


def new_scratch(root) -> str:
    """A fresh empty dir under tmp/ (same filesystem as layers/, so a commit is a rename),
    named for this process (`scratch-<pid>.<start>-...`): prune removes it once the process is
    gone, never while it runs."""
    return owner.temp_dir(os.path.join(os.fspath(root), TMP_DIR), "scratch")


def blob_path(root: str, digest: str) -> str:
    return os.path.join(root, BLOBS_DIR, digest[7:])


def layer_path(root: str, diff_id: str) -> str:
    return os.path.join(root, LAYERS_DIR, diff_id[7:])


def has_blob(root: str, digest: str) -> bool:
    return digest.startswith("sha256:") and os.path.isfile(blob_path(root, digest))


def has_layer_dir(root: str, diff_id: str) -> bool:
    """The layer's dir is here, and its base's if it is a delta (cache.layerdelta)."""
    if not (diff_id.startswith("sha256:") and os.path.isdir(layer_path(root, diff_id))):
        return False
    base = delta_base(root, diff_id)
    return base is None or os.path.isdir(layer_path(root, base))


def layer_meta_path(root, diff_id: str) -> str:
    """`layermeta/<hex>`: a delta base's kept tar and index, a delta's base and plan."""
    return os.path.join(os.fspath(root), LAYERMETA_DIR, diff_id[7:])


def delta_base(root, diff_id: str) -> str | None:
    """The base of a delta layer (the target of its `base` symlink), None for a full one."""
    try:
        base = os.readlink(os.path.join(layer_meta_path(root, diff_id), "base"))
    except OSError:
        return None
    return base if is_digest(base) else None


def layer_dirs(root, diff_ids) -> list[str]:
    """The dirs of the layers `diff_ids` (bottom first, as a config lists them) in overlay's
    lowerdir order, top first: a delta layer's dir followed by its base's."""
    out = []
    for d in reversed(diff_ids):
        out.append(layer_path(root, d))
        base = delta_base(root, d)
        if base is not None:
            out.append(layer_path(root, base))
    return out
