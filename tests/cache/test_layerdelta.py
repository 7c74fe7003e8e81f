"""cache.layerdelta's splice plan and splice: a delta's entries put into its base's tar in the
layer's order (parents first, names compared bytewise per component), a whiteout taking its
base entry's whole subtree, a non-directory hiding a base directory's subtree, a directory
keeping its base children; and the splice of real layer dirs equals the tar of the flattened
tree (the bytes a cold build writes)."""
from __future__ import annotations

import io
import os
import shutil

import pytest

from cache import layerdelta
from cache.layerdelta import NotDelta, delta_entries, plan
from cache.layers import TarIndex, write_tar


def base_of(rels: list[bytes]) -> tuple[dict, bytes]:
    """A base index whose entries are the bytes b"[rel]", and its 'tar'."""
    offs, data = [], b""
    for r in rels:
        offs.append(len(data))
        data += b"[" + r + b"]"
    return {"rels": rels, "offs": offs, "end": len(data), "size": len(data)}, data


def delta_of(entries: list[tuple[bytes, str]]) -> tuple[list, bytes]:
    ix = TarIndex()
    data = b""
    for rel, _kind in entries:
        ix.rels.append(rel)
        ix.offs.append(len(data))
        data += b"{" + rel + b"}"
    ix.end = len(data)
    return delta_entries(ix, [k for _r, k in entries]), data


def spliced(base_rels, delta) -> bytes:
    base, bdata = base_of(base_rels)
    entries, ddata = delta_of(delta)
    return b"".join((bdata if src == 0 else ddata)[a:b] for src, a, b in plan(base, entries))


BASE = [b"a", b"a/x", b"a/y", b"b", b"b/c", b"b/c/d", b"b.txt", b"e"]


@pytest.mark.parametrize(("delta", "want"), [
    ([], "[a][a/x][a/y][b][b/c][b/c/d][b.txt][e]"),
    ([(b"a", "d"), (b"a/x", "f")], "{a}{a/x}[a/y][b][b/c][b/c/d][b.txt][e]"),
    ([(b"a", "d"), (b"a/w", "f")], "{a}{a/w}[a/x][a/y][b][b/c][b/c/d][b.txt][e]"),
    ([(b"a", "d"), (b"a/z", "f")], "{a}[a/x][a/y]{a/z}[b][b/c][b/c/d][b.txt][e]"),
    # "b/..." sorts before "b.txt" by component ("b" < "b.txt"), not bytewise ("/" > ".")
    ([(b"b", "d"), (b"b/c", "d"), (b"b/c/n", "f")], "[a][a/x][a/y]{b}{b/c}[b/c/d]{b/c/n}[b.txt][e]"),
    ([(b"a", "d"), (b"a/y", "w")], "{a}[a/x][b][b/c][b/c/d][b.txt][e]"),
    ([(b"b", "w")], "[a][a/x][a/y][b.txt][e]"),
    ([(b"b", "f")], "[a][a/x][a/y]{b}[b.txt][e]"),
    ([(b"f", "d"), (b"f/g", "f")], "[a][a/x][a/y][b][b/c][b/c/d][b.txt][e]{f}{f/g}"),
    ([(b"0", "f")], "{0}[a][a/x][a/y][b][b/c][b/c/d][b.txt][e]"),
])
def test_plan_puts_each_entry_in_the_layer_order(delta, want):
    assert spliced(BASE, delta).decode() == want


def test_a_whiteout_is_sorted_by_its_name_not_its_tar_name():
    # in the delta's tar a whiteout of "a/y" sorts as "a/.wh.y", before "a/x"
    got = spliced(BASE, [(b"a", "d"), (b"a/y", "w"), (b"a/x", "f")])
    assert got.decode() == "{a}{a/x}[b][b/c][b/c/d][b.txt][e]"


def test_deleting_what_the_base_lacks_is_not_a_delta():
    with pytest.raises(NotDelta):
        spliced(BASE, [(b"a", "d"), (b"a/q", "w")])


def test_splice_of_layer_dirs_is_the_tar_of_the_flattened_tree(tmp_path):
    """A real base dir and a delta dir (what overlay would leave in an upper dir: changed
    files, copied-up parents with their times, a 0/0 whiteout): the splice's diff_id and size
    are those of write_tar over the tree they make together."""
    base = tmp_path / "base"
    for d in ("app", "app/d0", "app/d1", "app/d1/sub"):
        (base / d).mkdir(parents=True)
    for i in range(20):
        (base / f"app/d{i % 2}/f{i:02d}").write_text(f"file {i}\n" * (i + 1))
    (base / "app/d1/sub/deep").write_text("deep\n")
    os.symlink("f00", base / "app/d0/link")
    root = tmp_path / "store"
    (root / "tmp").mkdir(parents=True)
    index = TarIndex()
    kept = tmp_path / "base.tar"
    with open(kept, "wb") as f:
        res = write_tar(base, f, epoch=0, settle=True, index=index)
    assert not index.special
    layerdelta.keep_base(root, root / "tmp", res.diff_id, str(kept), index, res.size, "k", {})
    doc = layerdelta.read_index(root, res.diff_id)
    assert doc is not None and doc["key"] == "k"

    # the delta: d0/f00 edited, d1/new added, d1/sub removed (one whiteout), d0 and d1 copied up
    delta = tmp_path / "delta"
    for d in ("app", "app/d0", "app/d1"):
        (delta / d).mkdir(parents=True)
        shutil.copystat(base / d, delta / d)
    (delta / "app/d0/f00").write_text("edited\n")
    (delta / "app/d1/new").write_text("new\n")
    os.mknod(delta / "app/d1/sub", 0o600 | 0o020000, os.makedev(0, 0))
    dindex = TarIndex()
    buf = io.BytesIO()
    write_tar(delta, buf, epoch=0, settle=True, hash_tar=False, index=dindex)
    kinds = ["w" if r.endswith(b"sub") else "d" if (delta / os.fsdecode(r)).is_dir() else "f"
             for r in dindex.rels]
    segs = plan(doc, delta_entries(dindex, kinds))
    got = layerdelta.splice(root, res.diff_id, doc, buf.getbuffer(), segs)

    flat = tmp_path / "flat"
    shutil.copytree(base, flat, symlinks=True)
    shutil.rmtree(flat / "app/d1/sub")
    shutil.copy2(delta / "app/d0/f00", flat / "app/d0/f00")
    shutil.copy2(delta / "app/d1/new", flat / "app/d1/new")
    for d in ("app", "app/d0", "app/d1"):
        shutil.copystat(delta / d, flat / d)
    want = write_tar(flat, None, epoch=0, settle=True)
    assert got == (want.diff_id, want.size)


def test_a_damaged_kept_tar_is_not_spliced(tmp_path):
    base = tmp_path / "base"
    (base / "app").mkdir(parents=True)
    (base / "app/f").write_text("x" * 100)
    root = tmp_path / "store"
    (root / "tmp").mkdir(parents=True)
    index = TarIndex()
    with open(tmp_path / "base.tar", "wb") as f:
        res = write_tar(base, f, epoch=0, index=index)
    layerdelta.keep_base(root, root / "tmp", res.diff_id, str(tmp_path / "base.tar"), index,
                         res.size, "k", {})
    doc = layerdelta.read_index(root, res.diff_id)
    tar = os.path.join(layerdelta.meta_path(root, res.diff_id), "tar")
    assert layerdelta.splice(root, res.diff_id, doc, b"", [(0, 0, doc["end"])], check=True) == \
        (res.diff_id, res.size)
    st = os.stat(tar)
    with open(tar, "r+b") as f:
        f.seek(600)
        f.write(b"y")           # one byte of the file's data
    with pytest.raises(NotDelta):   # its mtime moved: not the file written with the diff_id
        layerdelta.splice(root, res.diff_id, doc, b"", [(0, 0, doc["end"])])
    os.utime(tar, ns=(st.st_atime_ns, st.st_mtime_ns))
    layerdelta.splice(root, res.diff_id, doc, b"", [(0, 0, doc["end"])])  # trusted by identity
    with pytest.raises(NotDelta):   # hashed again: damaged
        layerdelta.splice(root, res.diff_id, doc, b"", [(0, 0, doc["end"])], check=True)
    os.truncate(tar, 1024)
    with pytest.raises(NotDelta):
        layerdelta.splice(root, res.diff_id, doc, b"", [(0, 0, doc["end"])])
