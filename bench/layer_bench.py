#!/usr/bin/env python3
"""Layer writing throughput and peak RSS: pybuild's deterministic writer (tar + sha256 diff_id +
compression + sha256 digest, one pass) next to `tar | gzip -6` and `tar | zstd -3 -T0` on the same
generated tree of mixed files (text-like, binaries from /usr, random bytes; small to large).

    python3 bench/layer_bench.py [--size-mb 1024] [--dir DIR] [--keep] [--only zstd,none] [--runs N]

Each variant runs in its own process (so ru_maxrss is its own), page cache warm, output to
/dev/null; with --runs N each is run N times, interleaved with its peer, and the best time is
kept (other load on the machine only ever slows a run down). A second peer row does the same
work as ours with the CLIs (`tee` into `openssl sha256` for the diff_id, `openssl sha256` of the
blob). "blob of a committed layer" is what `pybuild save`/push does for a built layer: the diff_id
is known from commit, so the tar is not hashed again, the dir's stat fingerprint is checked
before and after instead (Store.layer_blob). The last row is write_tar alone (tar + diff_id, no
blob: what committing a layer costs).
Prints one table; MB = 10^6 bytes of tree content.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def generate(root: Path, size: int, seed: int = 1) -> tuple[int, int]:
    """Deterministic mixed tree of about `size` bytes; returns (files, bytes)."""
    rng = random.Random(seed)
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10)))
             for _ in range(3000)]
    binaries = []
    for d in ("/usr/bin", "/usr/lib/x86_64-linux-gnu", "/usr/lib"):
        if os.path.isdir(d):
            for n in sorted(os.listdir(d)):
                p = os.path.join(d, n)
                if os.path.isfile(p) and not os.path.islink(p) and 10_000 < os.path.getsize(p) < 50_000_000:
                    binaries.append(p)
    binaries = binaries[:400]

    def text(n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            out += b" ".join(rng.choice(words) for _ in range(12)) + b"\n"
        return bytes(out[:n])

    def binary(n: int) -> bytes:
        out = bytearray()
        while len(out) < n and binaries:
            with open(rng.choice(binaries), "rb") as f:
                out += f.read(n - len(out))
        return bytes(out[:n]) if out else rng.randbytes(n)

    made = files = 0
    kinds = (text, binary, rng.randbytes)
    while made < size:
        r = rng.random()
        n = rng.randint(100, 16_000) if r < 0.7 else rng.randint(64_000, 1_000_000) if r < 0.97 \
            else rng.randint(5_000_000, 40_000_000)
        n = min(n, size - made) or 1
        kind = kinds[0] if r < 0.3 else kinds[1] if r < 0.75 else kinds[2]
        d = root / f"d{files % 97:02d}" / f"s{files % 13}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{files:06d}").write_bytes(kind(n))
        made += n
        files += 1
    return files, made


OURS = """
import sys, time, resource
sys.path.insert(0, {repo!r})
from cache.compress import HashingWriter, compressor
from cache.layers import fingerprint, write_tar
t = time.perf_counter()
with open('/dev/null', 'wb') as null:
    h = HashingWriter(null)
    if {kind!r} == "none":  # the tar alone: diff_id, no blob
        res = write_tar({tree!r}, null)
    elif {kind!r}.endswith("-saved"):  # Store.layer_blob of a committed layer: diff_id known
        fp = fingerprint({tree!r})
        c = compressor({kind!r}[:-6], h, threaded=True)
        res = write_tar({tree!r}, c, hash_tar=False)
        c.close()
        assert fingerprint({tree!r}) == fp
    else:
        c = compressor({kind!r}, h, threaded=True)
        res = write_tar({tree!r}, c)
        c.close()
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, res.diff_id, h.digest)
"""


def _timed(argv, **kw) -> tuple[float, int, str]:
    """Wall time, peak RSS (KiB; the largest of the process and the children it waited for,
    from wait4 for this child only) and stdout."""
    t = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, **kw)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode:
        raise SystemExit(f"{argv} failed")
    return time.perf_counter() - t, ru.ru_maxrss, out


def run_ours(tree: Path, kind: str) -> tuple[float, int, str]:
    secs, rss, out = _timed([sys.executable, "-c", OURS.format(repo=str(REPO), kind=kind, tree=str(tree))])
    return secs, rss, out.split()[-1]


def run_shell(tree: Path, compress: str, *, hashed: bool = False) -> tuple[float, int]:
    cmd = f"tar -cf - -C {tree} . | {compress} > /dev/null"
    if hashed:  # the same work as ours: sha256 of the tar and of the compressed stream
        cmd = (f"tar -cf - -C {tree} . | tee >(openssl sha256 > /dev/null) | {compress} "
               "| openssl sha256 > /dev/null")
    secs, rss, _ = _timed(["bash", "-c", cmd])
    return secs, rss


def best(results: list[tuple]) -> tuple:
    """The fastest of (secs, rss, ...) results, with the largest rss seen."""
    top = min(results, key=lambda r: r[0])
    return (top[0], max(r[1] for r in results), *top[2:])


def _loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=1024, help="tree size in MiB (default 1024)")
    ap.add_argument("--dir", help="where to generate the tree (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the generated tree")
    ap.add_argument("--only", default="gzip,zstd,none",
                    help="comma-separated variants to run: gzip, zstd, none (default: all)")
    ap.add_argument("--runs", type=int, default=1, help="runs per variant; the best is kept")
    ap.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.generate_only:  # in its own process, so the measuring parent stays small
        t = time.perf_counter()
        files, size = generate(Path(args.dir) / "tree", args.size_mb << 20)
        print(f"generated {files} files, {size / 1e6:.0f} MB in {time.perf_counter() - t:.1f}s")
        return 0
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="layer-bench-"))
    tree = base / "tree"
    try:
        if not tree.exists():
            subprocess.run([sys.executable, __file__, "--generate-only", "--dir", str(base),
                            "--size-mb", str(args.size_mb)], check=True)
        size = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())
        files = sum(1 for p in tree.rglob("*") if p.is_file())
        subprocess.run(f"tar -cf - -C {tree} . > /dev/null", shell=True, check=True)  # warm cache
        only = set(args.only.split(","))
        rows = []
        for kind, shell in (("gzip", "gzip -6"), ("zstd", "zstd -3 -T0 -q")):
            if kind not in only:
                continue
            if shutil.which(shell.split()[0]) is None:
                print(f"skipping {shell}: not installed (apt-get install {shell.split()[0]})")
                continue
            timings = {"shell": [], "hashed": [], "ours": [], "saved": []}
            digests = set()
            for _ in range(args.runs):  # interleaved, so a busy moment hits both
                timings["shell"].append(run_shell(tree, shell))
                if kind == "zstd":
                    timings["hashed"].append(run_shell(tree, shell, hashed=True))
                secs, rss, digest = run_ours(tree, kind)
                timings["ours"].append((secs, rss))
                digests.add(digest)
                secs, rss, digest = run_ours(tree, kind + "-saved")
                timings["saved"].append((secs, rss))
                digests.add(digest)  # the same blob either way
            if args.runs == 1:
                digests.add(run_ours(tree, kind)[2])
            s_secs, s_rss = best(timings["shell"])
            h = best(timings["hashed"]) if timings["hashed"] else None
            o_secs, o_rss = best(timings["ours"])
            saved = best(timings["saved"])
            rows.append((kind, shell, s_secs, s_rss, h, o_secs, o_rss, saved, len(digests) == 1))
        print(f"tree: {files} files, {size / 1e6:.0f} MB; {os.cpu_count()} CPUs; "
              f"best of {args.runs}; load before: {_loadavg()}")
        print(f"{'variant':<44}{'MB/s':>8}{'peak RSS':>11}{'vs shell':>10}")
        for kind, shell, s_secs, s_rss, h, o_secs, o_rss, saved, same in rows:
            print(f"{'tar | ' + shell:<44}{size / 1e6 / s_secs:>8.1f}{s_rss / 1024:>9.0f}MB{'':>10}")
            if h:
                print(f"{'  same, + openssl sha256 of tar and of blob':<44}{size / 1e6 / h[0]:>8.1f}"
                      f"{h[1] / 1024:>9.0f}MB{s_secs / h[0]:>9.2f}x")
            print(f"{'pybuild write_tar + ' + kind:<44}{size / 1e6 / o_secs:>8.1f}{o_rss / 1024:>9.0f}MB"
                  f"{s_secs / o_secs:>9.2f}x" + ("" if same else "  (digest differed between runs!)"))
            if saved:
                print(f"{'  blob of a committed layer (save/push)':<44}{size / 1e6 / saved[0]:>8.1f}"
                      f"{saved[1] / 1024:>9.0f}MB{s_secs / saved[0]:>9.2f}x")
        if "none" in only:
            n_secs, n_rss, _ = best([run_ours(tree, "none") for _ in range(args.runs)])
            print(f"{'pybuild write_tar alone (tar + diff_id)':<44}{size / 1e6 / n_secs:>8.1f}"
                  f"{n_rss / 1024:>9.0f}MB")
        print(f"load after: {_loadavg()}")
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
