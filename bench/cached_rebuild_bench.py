#!/usr/bin/env python3
"""A fully cached rebuild (the replayed build) of build_bench's 10-step multi-stage Dockerfile,
this checkout next to others (`--also NAME=DIR`, e.g. a `git archive` of the base commit), each
with a busybox store root of its own, the variants interleaved (A B A B ...), medians reported.
Issue 12 checks that explaining cache misses and the git epoch add nothing measurable here.

    python3 bench/cached_rebuild_bench.py [--rounds 21] [--also base=/tmp/base] [--git]

`--git`: the context is a git work tree (its HEAD commit time is read on every replay).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))


def main() -> None:
    from build_bench import MULTI
    from busybox_fixture import copy_store, make_busybox_store

    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--also", action="append", default=[], metavar="NAME=DIR")
    ap.add_argument("--git", action="store_true")
    a = ap.parse_args()
    variants = [("this", REPO)] + [(n, Path(p)) for n, _, p in (x.partition("=") for x in a.also)]
    with tempfile.TemporaryDirectory(prefix="cached-bench-") as d:
        base = make_busybox_store(Path(d) / "busybox").root
        ctx = Path(d) / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(MULTI)
        (ctx / "f").write_text("x\n")
        if a.git:
            env = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b",
                   "GIT_COMMITTER_EMAIL": "b@b", "PATH": "/usr/bin:/bin"}
            for cmd in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "x"]):
                subprocess.run(["git", "-C", str(ctx), *cmd], check=True, env=env)
        roots = {}
        for name, code in variants:
            roots[name] = copy_store(base, Path(d) / f"root-{name}")
            cmd = [sys.executable, "-m", "builder", "build", "-q", "-t", "app", str(ctx)]
            env = {**os.environ, "PYBUILD_ROOT": str(roots[name])}
            env.pop("SOURCE_DATE_EPOCH", None)
            for _ in range(2):  # the full build, then the one that writes the replay record
                subprocess.run(cmd, cwd=code, env=env, check=True, capture_output=True)
        got: dict[str, list[float]] = {n: [] for n, _ in variants}
        for _ in range(a.rounds):
            for name, code in variants:
                env = {**os.environ, "PYBUILD_ROOT": str(roots[name])}
                env.pop("SOURCE_DATE_EPOCH", None)
                t = time.perf_counter()
                subprocess.run([sys.executable, "-m", "builder", "build", "-q", "-t", "app",
                                str(ctx)], cwd=code, env=env, check=True, capture_output=True)
                got[name].append((time.perf_counter() - t) * 1000)
    print(f"fully cached rebuild{' (git context)' if a.git else ''}, {a.rounds} rounds "
          "interleaved (ms, wall clock incl. interpreter start)")
    print("| variant | median | min | max |\n|---|---|---|---|")
    for name, ms in got.items():
        print(f"| {name} | {statistics.median(ms):.1f} | {min(ms):.1f} | {max(ms):.1f} |")


if __name__ == "__main__":
    main()
