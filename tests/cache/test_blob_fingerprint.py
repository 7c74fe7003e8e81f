"""Making the blob of a built layer: its diff_id is known from commit, so the tar is not hashed
again when the layer dir still has the stat fingerprint it had at commit - and any change to the
dir is still caught."""
from __future__ import annotations

import json
import os
import random
import subprocess
import time

import pytest

from cache.errors import StoreError
from cache.layers import fingerprint
from cache.store import Store


def _tree(d):
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "a").write_bytes(random.Random(1).randbytes(300_000))
    (d / "b").write_text("hello\n")
    os.link(d / "b", d / "hard")
    os.symlink("sub/a", d / "link")
    return d


def _layers(store: Store) -> dict:
    return json.loads((store.root / "layers.json").read_text())


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_blob_without_second_hash_is_byte_identical(tmp_path, compression):
    fast, slow = Store.open(tmp_path / "s1"), Store.open(tmp_path / "s2")
    d1 = fast.commit_layer(_tree(tmp_path / "u1"))
    # the same tree again, in a store that never recorded a fingerprint: hashed the old way
    subprocess.run(["cp", "-a", str(fast.layer_path(d1)), str(tmp_path / "u2")], check=True)
    d2 = slow.commit_layer(tmp_path / "u2")
    assert d1 == d2
    # what commit recorded still describes the dir it moved in: the blob is made without a re-hash
    assert fingerprint(fast.layer_path(d1)) == _layers(fast)[d1]["fingerprint"]
    with slow.indexes.update("layers.json") as idx:
        del idx[d2]["fingerprint"]
    a, b = fast.layer_blob(d1, compression), slow.layer_blob(d2, compression)
    assert a == b
    assert fast.blob_path(a["digest"]).read_bytes() == slow.blob_path(b["digest"]).read_bytes()


def test_a_changed_layer_dir_is_refused_and_no_blob_recorded(tmp_path):
    store = Store.open(tmp_path / "s")
    diff_id = store.commit_layer(_tree(tmp_path / "u"))
    f = store.layer_path(diff_id) / "b"
    f.write_text("HELLO\n")  # same size: its mtime moved (a file's ctime is not in the print)
    with pytest.raises(StoreError, match="changed on disk"):
        store.layer_blob(diff_id, "gzip")
    assert _layers(store)[diff_id]["blobs"] == {}


def test_a_touch_alone_still_gives_the_blob(tmp_path):
    """Mtimes are clamped to SOURCE_DATE_EPOCH (0): a touched layer file makes the same tar, so
    the fallback hash agrees and the blob is made."""
    ref = Store.open(tmp_path / "ref")
    want = ref.layer_blob(ref.commit_layer(_tree(tmp_path / "u0")), "gzip")
    store = Store.open(tmp_path / "s")
    diff_id = store.commit_layer(_tree(tmp_path / "u"))
    time.sleep(0.01)
    os.utime(store.layer_path(diff_id) / "sub" / "a")
    assert store.layer_blob(diff_id, "gzip")["digest"] == want["digest"]
