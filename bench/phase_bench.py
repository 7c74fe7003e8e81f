#!/usr/bin/env python3
"""Where an edit-rebuild's time goes outside COPY's own copy, per phase and per entry (issue 14):
the context walk and hash (cold: no stat cache; edit: one file changed since the last digest),
the commit of the layer dir (`LayerStore.commit`: tar + diff_id + settle + fingerprint, move,
index), the replay record (save + the replay's check) and the explain record (save + load).
Each phase runs in a child process of its own over a context of N small files (~200 bytes,
100 per dir), this checkout next to another (`--also base=/work/main`), variants interleaved,
min and median reported in ms, and µs per entry; each phase also as this process's CPU time
(user + sys), which a loaded machine disturbs far less than the wall clock. Both checkouts
should have their bytecode compiled (`python -m compileall -q .`): with PYTHONDONTWRITEBYTECODE
set, a checkout without __pycache__ compiles its modules inside the phases that import them.

    python3 bench/phase_bench.py [--files 1000,10000,100000] [--rounds 3] [--also base=DIR]
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
import json, os, shutil, sys, time
sys.path.insert(0, sys.argv[1])
work, ctx, n = sys.argv[2], sys.argv[3], int(sys.argv[4])
out = {}
def timed(name, fn):
    t, c = time.perf_counter(), time.process_time()
    r = fn()
    out[name] = (time.perf_counter() - t) * 1000
    out[name + " (cpu)"] = (time.process_time() - c) * 1000
    return r
from builder.context import BuildContext
from builder import replay, explain
from cache.store import Store
sc = os.path.join(work, "statcache.json")
rec = replay.Recorder()
def digest(listing=None):
    c = BuildContext(ctx, stat_cache=sc)
    c.observe = rec.observe
    return c.digest(c.select(["."]), listing)
timed("walk+hash cold", digest)
edited = os.path.join(ctx, "d0000", "f000.txt")
with open(edited, "a") as f:
    f.write("x")
time.sleep(0.06)  # past the racy window
rec = replay.Recorder()
listing = {}
timed("walk+hash edit", lambda: digest(listing))
store = Store.open(os.path.join(work, "root"))
up = store.new_scratch() / "upper"
shutil.copytree(ctx, up / "app", symlinks=True)
timed("commit", lambda: store.layer_store.commit(up, epoch=0))
# the replay record of what the digest observed
opts = replay.parse_argv(["--root", os.path.join(work, "root"), "build", ctx])
p = replay.Pending(opts)
class Tags:
    def tags(self): return {}
class Progress:
    vertices = []
timed("replay save", lambda: p.save("sha256:" + "0" * 64, rec, Tags(), Progress()))
out["replay record KB"] = os.path.getsize(p.path) / 1024
def check():  # what Pending.replay does after its index checks: load, lstat every file
    import json as j
    data = open(p.path, "rb").read()
    if p.path.endswith(".m"):  # a sealed marshal file (cache.sealed), or a plain one before it
        from cache import sealed
        r = sealed.loads(data) if data[:4] == sealed.MAGIC else __import__("marshal").loads(data)
    else:
        r = j.loads(data)
    for rel, sig in r["files"].items():
        st = os.lstat(os.path.join(p.context, rel) if rel else p.context)
        if replay._sig(st) != sig[:8]:
            raise SystemExit("a context file moved under the bench")
timed("replay load+check", check)
ex = explain.Explainer(os.path.join(work, "root"), os.path.join(ctx, "Dockerfile"), [], None)
ex.layer_step("0", "[2/3] COPY . /app", 2, "COPY . /app", "k", "p", {"srcs": ["."]}, listing, [])
timed("explain save", ex.save)
ex2 = explain.Explainer(os.path.join(work, "root"), os.path.join(ctx, "Dockerfile"), [], None)
timed("explain load", ex2.previous)
print(json.dumps(out))
"""


def make_context(d: Path, n: int) -> None:
    for i in range(n):
        sub = d / f"d{i // 100:04d}"
        if i % 100 == 0:
            sub.mkdir(parents=True)
        (sub / f"f{i % 100:03d}.txt").write_bytes((b"file %d " % i).ljust(199, b"x") + b"\n")
    (d / "Dockerfile").write_text("FROM busybox\nCOPY . /app\nRUN ls /app | wc -l\n")


def one(code: Path, ctx_src: Path, n: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="phase-bench-") as w:
        ctx = Path(w) / "ctx"
        subprocess.run(["cp", "-a", str(ctx_src), str(ctx)], check=True)
        r = subprocess.run([sys.executable, "-c", CHILD, str(code), w, str(ctx), str(n)],
                           capture_output=True, text=True, cwd=code)
        if r.returncode:
            raise SystemExit(r.stderr)
        return json.loads(r.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", default="1000,10000,100000")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--also", action="append", default=[], metavar="NAME=DIR")
    a = ap.parse_args()
    variants = [(n, Path(p)) for n, _, p in (x.partition("=") for x in a.also)] + [("this", REPO)]
    with open("/proc/loadavg") as f:
        print(f"load before: {f.read().split()[:3]}")
    with tempfile.TemporaryDirectory(prefix="phase-ctx-") as cd:
        for n in (int(x) for x in a.files.split(",")):
            src = Path(cd) / f"ctx{n}"
            make_context(src, n)
            got: dict[str, list[dict]] = {name: [] for name, _ in variants}
            for _ in range(a.rounds):
                for name, code in variants:
                    got[name].append(one(code, src, n))
            phases = list(got[variants[0][0]][0])
            print(f"\n{n} files, {a.rounds} rounds interleaved, ms min / median "
                  "(µs per entry, of the min: on a shared machine the least disturbed run)")
            print("| phase | " + " | ".join(name for name, _ in variants) + " |")
            print("|---|" + "---|" * len(variants))
            for ph in phases:
                cells = []
                for name, _ in variants:
                    vals = [r[ph] for r in got[name]]
                    lo, med = min(vals), statistics.median(vals)
                    cells.append(f"{med:.0f}" if ph.endswith("KB")
                                 else f"{lo:.0f} / {med:.0f} ({lo * 1000 / n:.1f})")
                print(f"| {ph} | " + " | ".join(cells) + " |")
    with open("/proc/loadavg") as f:
        print(f"\nload after: {f.read().split()[:3]}")


if __name__ == "__main__":
    main()
