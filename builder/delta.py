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
layer also has, a file that became a directory, a hardlinked file: cache.layerdelta.NotDelta).
"""
from __future__ import annotations

import os

ENV = "PYBUILD_COPY_DELTA"     # "off": every missed COPY is a full copy
_MIN_CHANGES = 64              # up to this many changed entries always go as a delta


def enabled() -> bool:
    return os.environ.get(ENV, "on") != "off"


def base_key(parent_key: str | None, parent_layers: list[str], inputs: dict, epoch) -> str:
    """The key a base is kept and found by: the step's parent key and inputs, the sources'
    digests left out, and the parent's layers (a RUN run again under the same key, the build
    cache pruned, may have made other ones, which a base made over the old ones ignores)."""
    from cache.keys import step_key

    same = {k: v for k, v in inputs.items() if k != "sources"}
    return step_key("COPY-DELTA", parent_key,
                    {**same, "lowers": list(parent_layers), "epoch": epoch, "delta": 1})


def changes(old, new: set, epoch) -> tuple[list[str], list[str]] | None:
    """(changed or new, deleted) relative paths between two manifests
    (`SourceTree.digest(manifest=...)`: per entry "rel\0...key line...\n" + mtime seconds); an
    mtime counts as the layer keeps it (clamped to the epoch). None when a cold copy is
    cheaper."""
    if not isinstance(old, (set, frozenset)):
        return None
    gone, came = old - new, new - old       # set differences: C loops, not Python ones
    if len(gone) + len(came) > 2 * max(_MIN_CHANGES, len(new) // 5):
        return None

    def split(lines) -> dict[str, tuple[str, int]]:
        out = {}
        for s in lines:
            line, _, secs = s.rpartition("\n")
            m = int(secs)
            out[line.partition("\0")[0]] = (line, m if epoch is None or m < epoch else epoch)
        return out

    was, now = split(gone), split(came)
    changed = [rel for rel, v in now.items() if was.get(rel) != v]
    deleted = [rel for rel in was if rel not in now]
    if len(changed) + len(deleted) > max(_MIN_CHANGES, len(new) // 5):
        return None
    return changed, deleted


def lower_has(lowers, root: str):
    """`copy_changes`'s test: may a layer dir in `lowers` have the merged path `path`? Each dir
    is walked a component at a time without following a link: a link on the way (which the
    merged view resolves through other layers) counts as yes, the cold copy's answer."""
    import stat

    def has(path: str) -> bool:
        parts = os.path.relpath(path, root).split("/")
        for d in lowers:
            cur = os.fspath(d)
            for i, name in enumerate(parts):
                cur = os.path.join(cur, name)
                try:
                    st = os.lstat(cur)
                except (FileNotFoundError, NotADirectoryError):
                    break
                if i == len(parts) - 1 or stat.S_ISLNK(st.st_mode):
                    return True
                if not stat.S_ISDIR(st.st_mode):
                    break
        return False
    return has

