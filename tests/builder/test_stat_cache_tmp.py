"""The build context's stat memo and directory memo are written through the store's tmp/, so
the temporary a killed build leaves there is one `pybuild prune` removes (not a stray file in
the store root)."""
from __future__ import annotations

import os
import time

from builder.context import BuildContext
from cache import layout, owner


def test_the_stat_cache_temporary_lives_in_the_stores_tmp(tmp_path, monkeypatch):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_text("a")
    old = time.time() - 10
    os.utime(ctx / "a.txt", (old, old))
    time.sleep(0.06)    # a file's ctime must age past the racy window before it is memoised
    root = tmp_path / "store"
    (root / layout.TMP_DIR).mkdir(parents=True)
    renamed = []
    real_rename = os.rename

    def rename(src, dst):   # where the temporary was when it became the cache file
        renamed.append((os.fspath(src), os.fspath(dst)))
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    c = BuildContext(ctx, None, stat_cache=root / layout.STAT_CACHE)
    c.digest(c.select(["."]))
    c.save_stat_cache()
    for name in (layout.STAT_CACHE, layout.DIR_CACHE):
        (src, dst), = [r for r in renamed if r[1] == str(root / name)]
        assert os.path.dirname(src) == str(root / layout.TMP_DIR)
        assert owner.of_name(os.path.basename(src)) == owner.token()
    assert sorted(os.listdir(root)) == sorted([layout.TMP_DIR, layout.STAT_CACHE,
                                               layout.DIR_CACHE])
