"""An edited COPY made as a delta over an earlier layer of the same step (issue 14).

`COPY <dir> <dest>` from the build context is the step a developer's edit invalidates. Its cold
layer is kept as a base (its tar and the manifest of what it was made from, `cache.layerdelta`)
under a key of everything the step's key has but the sources' digests; a later build of the
step whose sources changed finds the base by that key, compares the manifests and writes only
the entries that differ, in an overlay upper dir over the base's dir (`copying.copy_changes`).
The store splices that dir's tar into the base's kept tar, so the layer's diff_id, bytes and
every attribute are a cold build's; a RUN after it mounts [delta, base].

A cold copy instead (and a new base) when: --no-cache, no base, more than a fifth of the
entries changed, or the change needs what a delta cannot say (a deletion of a path a lower
layer also has, a file that became a directory, a hardlinked file: NotDelta).
"""
from __future__ import annotations

import os

from cache.layerdelta import NotDelta
from cache.layers import settled_ns

ENV = "PYBUILD_COPY_DELTA"     # "off": every missed COPY is a full copy
_MIN_CHANGES = 64              # up to this many changed entries always go as a delta


def enabled() -> bool:
    return os.environ.get(ENV, "on") != "off"


def base_key(step_key_of, parent_key: str | None, inputs: dict, epoch) -> str:
    """The key a base is kept and found by: the step's parent and inputs, the sources' digests
    left out (`step_key_of` is cache.keys.step_key)."""
    same = {k: v for k, v in inputs.items() if k != "sources"}
    return step_key_of("COPY-DELTA", parent_key, {**same, "epoch": epoch, "delta": 1})


def changes(old: dict, new: dict, epoch) -> tuple[list[str], list[str]] | None:
    """(changed or new, deleted) relative paths between two manifests
    (`SourceTree.digest(manifest=...)`: {rel: (key line, mtime ns)}); an mtime counts as the
    layer keeps it (`settled_ns`). None when a cold copy is cheaper."""
    changed = []
    added = 0
    for rel, v in new.items():
        o = old.get(rel)
        if o is None:
            added += 1
            changed.append(rel)
        elif o[0] != v[0] or (
                o[1] != v[1] and settled_ns(o[1], epoch) != settled_ns(v[1], epoch)):
            changed.append(rel)
    deleted = [rel for rel in old if rel not in new] if len(old) > len(new) - added else []
    if len(changed) + len(deleted) > max(_MIN_CHANGES, len(new) // 5):
        return None
    return changed, deleted


def lower_has(lowers, root: str):
    """`copy_changes`'s test: does a layer dir in `lowers` have the merged path `path`?"""
    def has(path: str) -> bool:
        rel = os.path.relpath(path, root)
        return any(os.path.lexists(os.path.join(d, rel)) for d in lowers)
    return has


__all__ = ["NotDelta", "base_key", "changes", "enabled", "lower_has"]
