"""Layers made as deltas (issue 14): an edited COPY's layer stored as the entries it changed
over an earlier full layer of the same step, its base, so that an edit costs what it changes.

A base is a full built layer whose tar is kept, `layermeta/<hex>/tar`, with where each of its
entries starts and the builder's manifest of the sources it was made from (`index`, a
cache.sealed file), under the key the builder finds it by (`LayerStore.find_base`).

A delta layer's dir `layers/<hex>/` is an overlay upper dir made over its base's dir: mounted
as [delta, base] (`cache.layout.layer_dirs`) it shows what the cold build's layer would show.
`layermeta/<hex>/base` is a symlink whose target is the base's diff_id, so a lowerdir list is
made with one readlink per layer and no index read. Its tar is the base's kept tar with the
delta's own entries spliced in (`splice`): the bytes a cold build writes, hence its diff_id.
`layermeta/<hex>/splice` keeps that plan, to stream the tar again (save, push) from the base's
tar and the delta dir's own (deterministic) tar. A delta is never the base of another: the next
edit is a delta over the same base, so a layer is at most two dirs deep.
"""
from __future__ import annotations

import hashlib
import os
import shutil

from cache import atomic, layout, sealed, tarfmt
from cache.errors import StoreError

VERSION = 1
_CHUNK = 1 << 20


class NotDelta(Exception):
    """This change cannot be made as a delta (a whiteout or opaque dir it would need, a
    damaged kept tar): the builder makes the layer in full."""


meta_path = layout.layer_meta_path


def read_index(root, diff_id: str) -> dict | None:
    """A base's index ({"rels", "offs", "end", "size", "tar": stat identity, "key",
    "manifest"}), or None when it has none, or one of another version or shape."""
    doc = sealed.read(os.path.join(meta_path(root, diff_id), "index"))
    if not isinstance(doc, dict) or doc.get("v") != VERSION:
        return None
    if not all(k in doc for k in ("rels", "offs", "end", "size", "tar", "manifest")):
        return None
    from array import array
    try:    # kept as one NUL-joined bytes and one array of offsets: a tenth of the objects
        doc["rels"] = doc["rels"].split(b"\0") if doc["rels"] else []
        offs = array("Q")
        offs.frombytes(doc["offs"])
    except (AttributeError, TypeError, ValueError):
        return None
    if len(offs) != len(doc["rels"]):
        return None
    doc["offs"] = offs
    return doc


def _tar_identity(path: str) -> list[int]:
    st = os.stat(path)
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def keep_base(root, tmp_dir, diff_id: str, tar_path: str, index, size: int, key: str,
              manifest) -> None:
    """Keep the just-written tar of the full layer `diff_id` (moved from `tar_path`) as a base.
    The meta dir is made whole in tmp/ and renamed in: a crash leaves garbage, never half."""
    dest = meta_path(root, diff_id)
    from cache import owner
    work = owner.temp_dir(tmp_dir, "meta")
    try:
        os.rename(tar_path, os.path.join(work, "tar"))
        from array import array
        doc = {"v": VERSION, "key": key, "rels": b"\0".join(index.rels),
               "offs": array("Q", index.offs).tobytes(),
               "end": index.end, "size": size, "tar": _tar_identity(os.path.join(work, "tar")),
               "manifest": manifest}
        with open(os.path.join(work, "index"), "wb") as f:
            f.write(sealed.dumps(doc))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.rmtree(dest, ignore_errors=True)  # a stale one (the layer was made again)
        os.rename(work, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write_delta_meta(root, tmp_dir, diff_id: str, base: str, segs: list) -> None:
    """The meta of a delta layer: its base (a symlink) and its splice plan."""
    dest = meta_path(root, diff_id)
    from cache import owner
    work = owner.temp_dir(tmp_dir, "meta")
    try:
        with open(os.path.join(work, "splice"), "wb") as f:
            f.write(sealed.dumps({"v": VERSION, "base": base, "segs": segs}))
            f.flush()
            os.fsync(f.fileno())
        os.symlink(base, os.path.join(work, "base"))
        atomic.fsync_dir(work)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.rmtree(dest, ignore_errors=True)  # a stale one of a layer made again
        os.rename(work, dest)
        atomic.fsync_dir(os.path.dirname(dest))  # on disk before the layer dir is moved in
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _key(rel: bytes) -> list[bytes]:
    return rel.split(b"/")


def delta_entries(index, kinds: list[str]) -> list[tuple[bytes, int, int, str]]:
    """A delta tar's entries [(rel, start, end, kind)] in the layer's order (by name: its tar
    sorts a whiteout by its `.wh.` name), from its `TarIndex` and each entry's kind (`plan`)."""
    offs = index.offs
    spans = [(rel, offs[k], offs[k + 1] if k + 1 < len(offs) else index.end, kinds[k])
             for k, rel in enumerate(index.rels)]
    spans.sort(key=lambda e: _key(e[0]))
    return spans


def plan(base: dict, entries: list[tuple[bytes, int, int, str]]) -> list:
    """The splice plan: [(0, start, end) of the base's tar | (1, start, end) of the delta's
    tar], in the order of the layer's tar, END excluded. `entries` (`delta_entries`): kind "w"
    is a whiteout (its base's entry and subtree go), "d" a dir (its base's children stay), "f"
    any other entry (it hides its base's entry and subtree)."""
    from bisect import bisect_left

    rels, offs, n = base["rels"], base["offs"], len(base["rels"])

    def start(i: int) -> int:
        return offs[i] if i < n else base["end"]

    def subtree_end(i: int) -> int:
        prefix = rels[i] + b"/"
        j = i + 1
        while j < n and rels[j].startswith(prefix):
            j += 1
        return j

    segs: list = []
    pos = 0
    for rel, a, b, kind in entries:
        i = bisect_left(rels, _key(rel), lo=pos, key=_key)
        if i > pos:
            segs.append((0, start(pos), start(i)))
        pos = i
        present = i < n and rels[i] == rel
        if kind == "w":
            if not present:
                raise NotDelta(f"{os.fsdecode(rel)}: deleted, but not in the base")
            pos = subtree_end(i)
            continue
        segs.append((1, a, b))
        if present:
            pos = i + 1 if kind == "d" else subtree_end(i)
    if pos < n:
        segs.append((0, start(pos), base["end"]))
    return _merge_adjacent(segs)


def _merge_adjacent(segs: list) -> list:
    out: list = []
    for s in segs:
        if out and out[-1][0] == s[0] and out[-1][2] == s[1]:
            out[-1] = (s[0], out[-1][1], s[2])
        else:
            out.append(s)
    return out


def splice(root, base_id: str, base: dict, delta_tar: bytes, segs: list, *,
           check: bool = False) -> tuple[str, int]:
    """(diff_id, size) of the tar the plan makes. The base's kept tar must have the stat
    identity it had when it was written with the base's diff_id (as a layer dir's
    fingerprint vouches for its bytes); `check` also hashes it all again. NotDelta if it is
    gone, changed or (checked) damaged. The tar is mapped, not read: hashing 100 MB is then
    its only cost (~60 ms); each window hashed is let go of (MADV_DONTNEED), so the mapping
    adds 16 MiB to the process's RSS, not the tar's size."""
    import mmap

    path = os.path.join(meta_path(root, base_id), "tar")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        raise NotDelta("the base's tar is gone") from None
    try:
        st = os.fstat(fd)
        if [st.st_ino, st.st_size, st.st_mtime_ns] != base["tar"] or st.st_size != base["size"]:
            raise NotDelta("the base's tar is not the file it was")
        m = mmap.mmap(fd, 0, prot=mmap.PROT_READ, flags=mmap.MAP_SHARED)
    finally:
        os.close(fd)
    m.madvise(mmap.MADV_SEQUENTIAL)
    h = hashlib.sha256()
    size = 0
    view = memoryview(m)
    try:
        if check and "sha256:" + _hash(m, view, 0, len(view)).hexdigest() != base_id:
            raise NotDelta("the base's kept tar does not hash to its diff_id")
        for src, a, b in segs:
            if src == 0:
                if b > len(view):
                    raise NotDelta("the base's tar is shorter than its index")
                _hash(m, view, a, b, h)
            else:
                h.update(delta_tar[a:b])
            size += b - a
    finally:
        view.release()
        m.close()
    h.update(tarfmt.END)
    return "sha256:" + h.hexdigest(), size + len(tarfmt.END)


def _hash(m, view, a: int, b: int, h=None):
    """`h` (a new sha256 if None) updated with bytes [a, b) of the mapping `m` (`view`)."""
    import mmap

    h = hashlib.sha256() if h is None else h
    step = _CHUNK * 16
    for k in range(a, b, step):
        end = min(b, k + step)
        h.update(view[k:end])
        start = k - k % mmap.PAGESIZE
        m.madvise(mmap.MADV_DONTNEED, start, end - start)
    return h


def read_splice(root, diff_id: str) -> dict:
    doc = sealed.read(os.path.join(meta_path(root, diff_id), "splice"))
    if not isinstance(doc, dict) or doc.get("v") != VERSION or not layout.is_digest(doc.get("base")):
        raise StoreError(f"layer {diff_id}: its delta record is damaged; remove the image and "
                         "build it again")
    return doc


def stream(root, diff_id: str, f, delta_tar: bytes, out) -> None:
    """Write a delta layer's tar to `out` (the caller hashes it) from its base's kept tar (the
    open file `f`) and the delta dir's own tar."""
    from cache.compress import copy_exactly  # save and push only: not a build's import

    for src, a, b in read_splice(root, diff_id)["segs"]:
        if src == 1:
            out.write(delta_tar[a:b])
            continue
        f.seek(a)
        copy_exactly(f, out, b - a, f"layer {diff_id}: its base's tar is shorter than it was")
    out.write(tarfmt.END)


def drop_base(root, diff_id: str) -> None:
    """No longer a base: its kept tar and index go (a delta over it streams from its dir)."""
    for name in ("tar", "index"):
        try:
            os.unlink(os.path.join(meta_path(root, diff_id), name))
        except FileNotFoundError:
            pass


def remove(root, diff_ids) -> None:
    for d in diff_ids:
        shutil.rmtree(meta_path(root, d), ignore_errors=True)


def meta_ids(root) -> list[str]:
    """Every layermeta dir, as diff_ids (for gc)."""
    try:
        with os.scandir(os.path.join(os.fspath(root), layout.LAYERMETA_DIR)) as it:
            return ["sha256:" + e.name for e in it if layout.is_digest("sha256:" + e.name)]
    except FileNotFoundError:
        return []
