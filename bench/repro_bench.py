#!/usr/bin/env python3
"""Reproducibility tools (issue 12): what `build --check-reproducible` costs next to a plain
cold build, and what `pybuild diff` of two large images costs in time and peak memory.

    python3 bench/repro_bench.py [--runs N] [--mb 100] [--big-mb 1024]

1. cold build vs cold build + --check-reproducible, each in a fresh copy of the busybox store
   (interleaved A B A B ...): the check should cost one more build, no more.
2. `pybuild diff` of two images whose one layer is a --mb MB file that differs (both tars are
   read whole): store vs store, and docker-archive (gzip) vs store; wall time and peak RSS
   (ru_maxrss of the diff process).
3. the same for a --big-mb layer (peak RSS must not grow with the layer).
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
PYBUILD = [sys.executable, "-m", "builder"]

CHECKED = """FROM busybox
COPY data /data
RUN mkdir -p /out && chmod 755 /out && for i in 1 2 3 4 5 6 7 8; do \\
      dd if=/data/blob of=/out/$i bs=1M count=4 2>/dev/null; chmod 644 /out/$i; done
RUN echo done > /out/done && chmod 644 /out/done
ENV A=1
CMD ["ls", "/out"]
"""


def run(cmd, root: Path, *, ok=(0,)) -> tuple[float, int, subprocess.CompletedProcess]:
    """(seconds, peak RSS in KiB of the child, result)."""
    env = {**os.environ, "PYBUILD_ROOT": str(root)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, check=False)
    dt = time.perf_counter() - t
    if r.returncode not in ok:
        sys.exit(f"bench: {' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    # ru_maxrss of children is the max over all children so far: measure with a fresh helper
    return dt, max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss), r


def peak_rss(cmd, root: Path, ok=(0, 1)) -> tuple[float, int, subprocess.CompletedProcess]:
    """Time and peak RSS of one command, measured in a child of its own (ru_maxrss of children
    never goes down)."""
    code = ("import os,resource,subprocess,sys,time,json;t=time.perf_counter();"
            "r=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
            "print(json.dumps([time.perf_counter()-t,resource.getrusage(resource.RUSAGE_CHILDREN)"
            ".ru_maxrss,r.returncode,r.stdout[-4000:],r.stderr[-2000:]]))")
    env = {**os.environ, "PYBUILD_ROOT": str(root)}
    out = subprocess.run([sys.executable, "-c", code, *cmd], env=env, cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    import json
    dt, rss, rc, stdout, stderr = json.loads(out)
    if rc not in ok:
        sys.exit(f"bench: {' '.join(map(str, cmd))} failed ({rc}):\n{stderr}")
    return dt, rss, subprocess.CompletedProcess(cmd, rc, stdout, stderr)


def fresh_root(template: Path, where: Path, n: list[int]) -> Path:
    from busybox_fixture import copy_store
    n[0] += 1
    return copy_store(template, where / f"root{n[0]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--big-mb", type=int, default=1024)
    args = ap.parse_args()
    from busybox_fixture import make_busybox_store

    with tempfile.TemporaryDirectory(prefix="repro-bench-") as tmp:
        tmp = Path(tmp)
        template = make_busybox_store(tmp / "template").root
        ctx = tmp / "ctx"
        (ctx / "data").mkdir(parents=True)
        (ctx / "data" / "blob").write_bytes(os.urandom(32 << 20))
        (ctx / "Dockerfile").write_text(CHECKED)
        n = [0]
        plain, checked, warm = [], [], []
        for _ in range(args.runs):  # interleaved
            r1 = fresh_root(template, tmp, n)
            plain.append(run([*PYBUILD, "build", "-q", str(ctx)], r1)[0])
            r2 = fresh_root(template, tmp, n)
            dt, _rss, r = run([*PYBUILD, "build", "-q", "--check-reproducible", str(ctx)], r2)
            assert "same digest" in r.stderr, r.stderr
            checked.append(dt)
            # the first build cached (its replay record skipped: the flag is not replayable)
            dt, _rss, r = run([*PYBUILD, "build", "-q", "--check-reproducible", str(ctx)], r2)
            assert "same digest" in r.stderr, r.stderr
            warm.append(dt)
            subprocess.run(["rm", "-rf", str(r1), str(r2)], check=True)
        mp, mc, mw = (statistics.median(x) for x in (plain, checked, warm))
        print(f"cold build (COPY 32 MB, 2 RUN, 32 MB written)   median {mp:.2f} s  {plain}")
        print(f"  cold + --check-reproducible                   median {mc:.2f} s  ({mc / mp:.2f}x)")
        print(f"  cached + --check-reproducible                 median {mw:.2f} s  ({mw / mp:.2f}x)")

        root = fresh_root(template, tmp, n)
        for mb in [m for m in (args.mb, args.big_mb) if m > 0]:
            for side in ("a", "b"):
                c = tmp / f"big-{side}"
                c.mkdir(exist_ok=True)
                with open(c / "big", "wb") as f:  # the same bytes but the last MiB
                    for i in range(mb - 1):
                        f.write(i.to_bytes(4, "little") * (1 << 18))
                    f.write(os.urandom(1 << 20))
                (c / "Dockerfile").write_text("FROM busybox\nCOPY big /big\n")
                run([*PYBUILD, "build", "-q", "-t", f"big-{side}:{mb}", str(c)], root)
                (c / "big").unlink()
            arch = tmp / f"big-a-{mb}.tar"
            run([*PYBUILD, "save", "-o", str(arch), f"big-a:{mb}"], root)
            rows = []
            for _ in range(max(1, args.runs // 2)):
                rows.append(("store vs store",) + peak_rss([*PYBUILD, "diff", f"big-a:{mb}",
                                                            f"big-b:{mb}"], root)[:2])
                rows.append(("archive (gzip) vs store",) + peak_rss(
                    [*PYBUILD, "diff", str(arch), f"big-b:{mb}"], root)[:2])
            for what in ("store vs store", "archive (gzip) vs store"):
                ts = [t for w, t, _ in rows if w == what]
                rs = [r for w, _, r in rows if w == what]
                print(f"diff of two {mb} MB layers, {what:24s} median {statistics.median(ts):.2f} s, "
                      f"peak RSS {max(rs) / 1024:.1f} MB")
            arch.unlink()
            run([*PYBUILD, "rmi", f"big-a:{mb}", f"big-b:{mb}"], root)
            run([*PYBUILD, "prune", "-f"], root)
        print(f"(machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; other helpers running)")


if __name__ == "__main__":
    main()
