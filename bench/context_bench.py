"""Context bench: select+digest of a 20,000-file / 500 MB context, cold, cached, after a touch,
after a one-file edit, and copy() of it into a fresh directory.

    python3 bench/context_bench.py [--files 20000] [--mb 500] [--dir /var/tmp/ctxbench]

The context is generated once (deterministic bytes) and reused; the stat memo lives next to it.
"Cold" drops the memo (the page cache stays warm: it measures hashing, not the disk).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from builder.context import BuildContext
from builder.copying import copy


def generate(root: Path, files: int, total_mb: int) -> None:
    marker = root / ".generated"
    want = f"{files} {total_mb}"
    if marker.exists() and marker.read_text() == want:
        return
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    size = total_mb * 1024 * 1024 // files
    block = os.urandom(1 << 20)
    for i in range(files):
        d = root / f"d{i % 50:02d}" / f"s{(i // 50) % 20:02d}"
        d.mkdir(parents=True, exist_ok=True)
        off = (i * 7919) % ((1 << 20) - size) if size < (1 << 20) else 0
        data = (str(i).encode() + block[off:off + size])[:size]
        (d / f"f{i:05d}.dat").write_bytes(data)
    marker.write_text(want)
    old = time.time() - 60
    for p in root.rglob("*"):
        os.utime(p, (old, old))


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--mb", type=int, default=500)
    ap.add_argument("--dir", default="/var/tmp/pybuild-ctxbench")
    a = ap.parse_args()
    base = Path(a.dir)
    ctx_dir = base / "ctx"
    memo = base / "stat-cache.json"
    t, _ = timed(lambda: generate(ctx_dir, a.files, a.mb))
    print(f"context: {a.files} files, {a.mb} MB at {ctx_dir} (generate/verify {t:.2f}s)")
    time.sleep(0.1)

    def run():
        c = BuildContext(ctx_dir, None, stat_cache=memo)
        sel = c.select(["."])
        return c.digest(sel)

    memo.unlink(missing_ok=True)
    t_cold, d0 = timed(run)
    t_warm, d1 = timed(run)
    victim = next(ctx_dir.rglob("*.dat"))
    os.utime(victim)
    time.sleep(0.06)
    t_touch, d2 = timed(run)
    data = victim.read_bytes()
    victim.write_bytes(b"X" + data[1:])
    t_edit, d3 = timed(run)
    victim.write_bytes(data)
    assert d0 == d1 == d2 and d3 != d0, "digest must ignore touch and see edits"
    print(f"select+digest cold (no memo):    {t_cold:7.3f} s")
    print(f"select+digest memo, no change:   {t_warm:7.3f} s")
    print(f"select+digest after touch:       {t_touch:7.3f} s")
    print(f"select+digest after 1-byte edit: {t_edit:7.3f} s")
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        c = BuildContext(ctx_dir, None)
        sel = c.select(["."])
        t_copy, _ = timed(lambda: copy(sel, Path(tmp), "/app/"))
        print(f"copy() into a fresh dir:         {t_copy:7.3f} s")


if __name__ == "__main__":
    main()
