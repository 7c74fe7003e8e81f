"""cache.imagelookup.open_image, `pybuild run`'s way to its image without cache.store: what it
finds is what Store.image + Store.layer_dir find, the image is held against prune as theirs is,
anything it cannot do alone is None (the caller then takes the Store path), and it loads none of
the modules the Store path costs."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cache import gc, layout
from cache import image as im
from cache.errors import StoreError
from cache.imagelookup import open_image
from cache.store import Store

REPO = Path(__file__).resolve().parents[2]


def _by_store(store: Store, ref: str):
    img = store.image(ref)
    return img.id, img.config, [str(d) for d in store.layer_dirs(img.diff_ids)]


def _two_layer_image(store: Store, tag: str) -> str:
    base = store.image("busybox")
    cfg = base.config
    for n in range(2):
        d = store.new_scratch() / "u"
        d.mkdir()
        (d / f"f{n}").write_text(f"layer {n} of {tag}")
        cfg = im.add_step(cfg, f"RUN {n}", diff_id=store.commit_layer(d))
    return store.put_image(cfg, tags=[tag])


def test_open_image_finds_what_the_store_finds(busybox_root):
    store = Store.open()
    bb = store.resolve("busybox")
    two = _two_layer_image(store, "two:1")
    manifest = store.manifest(bb)["digest"]
    pulled = "sha256:" + "5" * 64   # a manifest digest busybox has in a registry
    store.record_distribution(bb, f"registry.example.com/bb@{pulled}")
    for ref in ("busybox", "busybox:latest", "docker.io/library/busybox:latest", "library/busybox",
                bb, bb[7:], bb[7:19], bb[:14], f"busybox@{manifest}", f"busybox:latest@{bb}",
                f"registry.example.com/bb@{pulled}", "two:1", two[7:20]):
        got = open_image(busybox_root, ref)
        assert got == _by_store(store, ref), ref
    image_id, config, dirs = open_image(str(busybox_root), "two:1")
    assert len(dirs) == 3 and (Path(dirs[0]) / "f1").is_file() and (Path(dirs[1]) / "f0").is_file()
    assert (Path(dirs[2]) / "bin" / "busybox").is_file()  # top layer first, as overlay's lowerdir


def test_what_open_image_cannot_find_is_none_and_the_store_says_why(busybox_root, tmp_path):
    store = Store.open()
    base = store.image("busybox").config
    ids = [store.put_image(im.add_step(base, f"ENV N={n}", diff_id=None)) for n in range(17)]
    shared = next(c for c in "0123456789abcdef" if sum(i[7] == c for i in ids) > 1)  # 17 > 16
    for ref, error in (("nothere", "no such image: nothere"), ("Bad Name", "no such image"),
                       ("", "no such image: ''"), (shared, "ambiguous image ID prefix"),
                       ("busybox@sha256:" + "6" * 64, "no such image"),
                       ("sha256:" + "7" * 64, "no such image")):
        assert open_image(busybox_root, ref) is None, ref
        with pytest.raises(StoreError, match=error):
            store.image(ref)
    assert open_image(tmp_path / "no-store", "busybox") is None
    assert not (tmp_path / "no-store").exists()     # nothing made: Store.open makes the store


@pytest.mark.parametrize("damage", ["tmp", "config", "tags"])
def test_a_damaged_store_is_none(busybox_root, damage):
    """Whatever is out of the ordinary goes to the Store path (which repairs or names it)."""
    store = Store.open()
    bb = store.resolve("busybox")
    if damage == "tmp":
        shutil.rmtree(busybox_root / "tmp")
    elif damage == "config":
        store.blob_path(bb).write_bytes(b'{"rootfs": ')
    else:
        (busybox_root / layout.TAGS).write_text("[]")
    assert open_image(busybox_root, "busybox") is None


def test_a_received_layer_not_unpacked_yet_is_none_until_the_store_unpacks_it(busybox_root):
    store = Store.open()
    img = store.image("busybox")
    (diff_id,) = img.diff_ids
    blob = store.layer_blob(diff_id, "gzip")
    shutil.rmtree(store.layer_dir(diff_id))
    store.add_received_layer(diff_id, blob["digest"], blob["size"], "gzip")  # as a pull leaves it
    assert open_image(busybox_root, "busybox") is None
    assert (store.layer_dir(diff_id) / "bin" / "busybox").is_file()  # the Store path unpacks it
    assert open_image(busybox_root, "busybox") == _by_store(store, "busybox")


def test_the_image_open_image_found_is_held_against_prune_all(busybox_root):
    """An untagged image and its own layer, open in a live process: `prune -a` keeps both (a
    container runs on them); once that process is gone they go."""
    store = Store.open()
    image_id = _two_layer_image(store, "gone:1")
    store.untag("gone:1")       # untagged, and this process's own holds do not bind its prune
    top = Path(layout.layer_path(str(busybox_root), store.image(image_id).diff_ids[-1]))
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
            "from cache.imagelookup import open_image\n"
            f"print(open_image({str(busybox_root)!r}, {image_id!r})[2][0], flush=True)\nsys.stdin.read()\n")
    p = subprocess.Popen([sys.executable, "-S", "-c", code], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == str(top)
        rep = gc.prune(store, all_=True)
        assert image_id in store.images() and store.has_blob(image_id) and (top / "f1").is_file()
        assert rep.images == 0
    finally:
        p.stdin.close()
        assert p.wait(30) == 0
    rep = gc.prune(store, all_=True)
    assert rep.images == 1 and image_id not in store.images() and not top.exists()


def test_new_scratch_is_the_stores_and_prune_spares_it_while_we_run(busybox_root):
    store = Store.open()
    scratch = layout.new_scratch(str(busybox_root))
    assert os.path.isdir(scratch) and os.path.dirname(scratch) == str(store.tmp)
    assert os.path.basename(scratch).startswith(f"scratch-{os.getpid()}.")
    assert os.path.basename(str(store.new_scratch())).rsplit("-", 1)[0] == \
        os.path.basename(scratch).rsplit("-", 1)[0]    # the same owner-named kind of dir
    assert Path(scratch) not in gc.stale_scratch(store)


def test_open_image_and_new_scratch_load_no_heavy_module(busybox_root):
    heavy = ("re", "enum", "json", "pathlib", "threading", "contextlib", "functools",
             "collections", "cache.store", "dataclasses", "shutil")
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
            "from cache.imagelookup import open_image\nfrom cache.layout import new_scratch\n"
            f"got = open_image({str(busybox_root)!r}, 'busybox')\n"
            f"scratch = new_scratch({str(busybox_root)!r})\n"
            f"print(got[0], scratch, [m for m in {heavy!r} if m in sys.modules])\n")
    r = subprocess.run([sys.executable, "-S", "-c", code], cwd=REPO, capture_output=True,
                       text=True, check=False)
    assert r.returncode == 0, r.stderr
    image_id, scratch, loaded = r.stdout.split(" ", 2)
    assert image_id == Store.open().resolve("busybox") and os.path.isdir(scratch)
    assert loaded.strip() == "[]"
