"""Cache keys: sha256 over canonical JSON, so the same inputs give the same key on any machine."""
from __future__ import annotations

import hashlib
import json


def canonical_json(value) -> bytes:
    """Sorted keys, no whitespace, UTF-8: one byte string per value, whatever the dict order."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def digest_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# Bumped whenever pybuild makes a different layer from the same inputs, so a store's older
# cache entries stop matching instead of mixing two behaviours in one build (2: RUN layers keep
# runc's /dev, /proc, /sys mount points; renamed-in dirs are no longer marked opaque; 3: a
# layer dir has its tar's mtimes, RUN sees SOURCE_DATE_EPOCH, layer steps key the epoch).
KEY_VERSION = 3


def step_key(kind: str, parent_key: str | None, inputs: dict) -> str:
    """Key of one build step: its kind, the key of the step below it and every input that can
    change its output (the builder decides what goes into `inputs`; never mtimes)."""
    return digest_bytes(canonical_json({"v": KEY_VERSION, "kind": kind, "parent": parent_key,
                                        "inputs": inputs}))
