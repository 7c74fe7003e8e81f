#!/usr/bin/env python3
"""What committing a built layer costs: `Store.commit_layer` of a fresh upper dir of N small
files (default 10,000 in 100 dirs), this checkout next to another (`--also NAME=DIR`, e.g. a
`git archive` of the base commit), each run in its own process, the variants interleaved
(A B A B ...), medians reported. Issue 12 added `settle_times` (the dir gets its tar's mtimes)
to the commit; this is how its cost was measured.

    python3 bench/commit_bench.py [--files 10000] [--rounds 7] [--also base=/tmp/base]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
from cache.store import Store
work, files = sys.argv[2], int(sys.argv[3])
store = Store.open(os.path.join(work, "root"))
up = store.new_scratch() / "upper"
up.mkdir()
per = max(1, files // 100)
for i in range(files):
    d = up / f"d{i // per:03d}"
    d.mkdir(exist_ok=True)
    (d / f"f{i:05d}.py").write_bytes(b"x = %d\n" % i)
t = time.perf_counter()
store.commit_layer(up, epoch=0)
print(json.dumps({"ms": (time.perf_counter() - t) * 1000}))
"""


def one(code_dir: Path, files: int) -> float:
    with tempfile.TemporaryDirectory(prefix="commit-bench-") as d:
        r = subprocess.run([sys.executable, "-c", CHILD, str(code_dir), d, str(files)],
                           capture_output=True, text=True, check=True)
        return json.loads(r.stdout)["ms"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--also", action="append", default=[], metavar="NAME=DIR")
    a = ap.parse_args()
    variants = [("this", REPO)] + [(n, Path(p)) for n, _, p in (x.partition("=") for x in a.also)]
    got: dict[str, list[float]] = {n: [] for n, _ in variants}
    for _ in range(a.rounds):
        for name, code in variants:
            got[name].append(one(code, a.files))
    print(f"commit_layer of {a.files} files, {a.rounds} rounds interleaved (ms)")
    print("| variant | median | min | max |\n|---|---|---|---|")
    for name, ms in got.items():
        print(f"| {name} | {statistics.median(ms):.1f} | {min(ms):.1f} | {max(ms):.1f} |")


if __name__ == "__main__":
    main()
