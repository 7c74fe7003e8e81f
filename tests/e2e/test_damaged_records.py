"""The build's own caches in the store (the replay and explain records, the context's stat
and directory memos) damaged on disk - truncated, of another shape, a length asking for
gigabytes: the next build runs in full and gives the image a clean store gives, with no
traceback."""
import marshal
import os
import time

import pytest

from cache import layout

DAMAGE = {
    "truncated": lambda raw: raw[: len(raw) // 2],
    "list": lambda raw: marshal.dumps([1, 2, 3]),
    "wrong shapes": lambda raw: marshal.dumps({"v": 2, "files": [], "inputs": 5, "stages": 7,
                                              "image": 3, "keys": [], "files_": {}}),
    "wrong entries": lambda raw: marshal.dumps({"v": 2, "files": {"/x": 5}}),
    "huge length": lambda raw: b"(\xff\xff\xff\x7f",
}


def image_id(out: str) -> str:
    return out.strip().splitlines()[-1]


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_build_records_mean_a_full_build(pybuild, busybox_root, tmp_path, damage):
    ctx = tmp_path / "ctx"
    (ctx / "src").mkdir(parents=True)
    for i in range(20):
        (ctx / "src" / f"f{i}").write_text(f"{i}\n")
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY src /src\nRUN cat /src/f3 > /three\n")
    time.sleep(0.06)        # past the racy window: the stat and directory memos hold them
    first = pybuild("build", "-q", "-t", "rec", str(ctx))
    assert first.returncode == 0, first.stderr
    root = busybox_root
    paths = [root / layout.STAT_CACHE, root / layout.DIR_CACHE]
    for d in (layout.REPLAY_DIR, layout.EXPLAIN_DIR):
        paths += [root / d / n for n in os.listdir(root / d)]
    assert len(paths) >= 4 and all(p.is_file() for p in paths)
    for p in paths:
        p.write_bytes(DAMAGE[damage](p.read_bytes()))
    (ctx / "src" / "f3").write_text("three\n")          # a real change, seen through it all
    again = pybuild("build", "-q", "-t", "rec", str(ctx))
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr and "internal error" not in again.stderr
    cold = pybuild("build", "-q", "--no-cache", "-t", "cold", str(ctx))
    assert image_id(again.stdout) == image_id(cold.stdout)
    r = pybuild("run", "--rm", "--network", "none", "rec", "cat", "/three")
    assert r.stdout == "three\n"
    replay = pybuild("build", "-q", "-t", "rec", str(ctx))   # and the caches work again
    assert image_id(replay.stdout) == image_id(cold.stdout)
