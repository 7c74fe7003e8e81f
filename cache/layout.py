"""Where the store lives and how its index files are named, plus read-only looks at them.

Kept free of heavy imports (only os and json) so that a fully cached rebuild can check the
store without loading `cache.store`; every write still goes through `Store`.
"""
from __future__ import annotations

import json
import os

TAGS = "tags.json"
IMAGES = "images.json"
LAYERS = "layers.json"
CACHEKEYS = "cachekeys.json"


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
            value = json.load(f)
    except FileNotFoundError:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{name}: not an object")  # noqa: TRY004 - corrupt data, not a caller bug
    return value


def has_blob(root: str, digest: str) -> bool:
    return digest.startswith("sha256:") and os.path.isfile(os.path.join(root, "blobs", "sha256", digest[7:]))


def has_layer_dir(root: str, diff_id: str) -> bool:
    return diff_id.startswith("sha256:") and os.path.isdir(os.path.join(root, "layers", diff_id[7:]))
