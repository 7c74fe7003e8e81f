"""Builds racing `pybuild prune -a`: a build that exits 0 has tagged a whole image.

Before the image was pinned to its build, `prune -a` could drop the build's image (untagged for
the moment between put_image and the tag) and the build still wrote the tag: exit 0, and a tag
naming a config blob that is gone. Sized for the suite (a few seconds); bench/ or a longer
PYBUILD_RACE_SECONDS runs it longer.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SECONDS = float(os.environ.get("PYBUILD_RACE_SECONDS", "4"))


def _cli(*args: str, timeout: float = 120):
    return subprocess.run([sys.executable, "-m", "builder", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout, check=False)


def test_builds_racing_prune_all_tag_only_whole_images(busybox_root, tmp_path):
    stop = time.monotonic() + SECONDS
    built: list[str] = []
    failed: list[str] = []
    prunes = [0]
    errors: list[str] = []      # an assert or exception in a thread would end only that thread:
    raised: list[BaseException] = []    # both are collected and checked here

    def pruner():
        while time.monotonic() < stop:
            r = _cli("prune", "-a", "-f")
            if r.returncode != 0:
                errors.append(f"prune -a exit {r.returncode}: {r.stderr.strip()[-300:]}")
            prunes[0] += 1

    def hot_pruner():
        """prune -a in a loop in this process too: the store lock is nearly always taken by a
        prune, so one runs in every build's window (the CLI alone falls in it rarely)."""
        from cache.gc import prune
        from cache.store import Store

        store = Store.open(busybox_root)
        while time.monotonic() < stop:
            prune(store, all_=True)
            prunes[0] += 1

    def builder(n: int):
        ctx = tmp_path / f"ctx{n}"
        ctx.mkdir()
        i = 0
        while time.monotonic() < stop:
            i += 1
            tag = f"race:{n}-{i}"
            # a new config every time and no layer of its own: the build is short, its window
            # between storing the image and tagging it is what prune must not fall into
            (ctx / "Dockerfile").write_text(f"FROM busybox\nENV RUN={n}-{i}\nLABEL n={n}-{i}\n")
            r = _cli("build", "--no-cache", "-q", "-t", tag, str(ctx))
            (built if r.returncode == 0 else failed).append(tag if r.returncode == 0 else r.stderr)

    def caught(fn, *args):
        def run():
            try:
                fn(*args)
            except BaseException as e:  # noqa: BLE001 - re-raised in the test's own thread
                raised.append(e)
        return threading.Thread(target=run)

    threads = [caught(pruner), caught(hot_pruner)] + [caught(builder, n) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if raised:
        raise raised[0]
    assert not errors, errors[:3]
    assert prunes[0] >= 4 and built, (prunes, failed)
    # a build racing prune succeeds (docker's and BuildKit's do): nothing it used may vanish
    assert not failed, failed[:3]
    r = _cli("inspect", *built)
    assert r.returncode == 0, r.stderr
    r = _cli("save", "-o", str(tmp_path / "all.tar"), *built)
    assert r.returncode == 0, r.stderr
