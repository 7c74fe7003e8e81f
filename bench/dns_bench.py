#!/usr/bin/env python3
"""What the embedded DNS server costs: `run --rm --network NET busybox true` on a user network,
this tree against another checkout (--base, e.g. a worktree of the commit before it),
interleaved A B A B; the idle supervisor's RSS of a `run -d` on that network, both trees; and
the time of 100 `nslookup` of a peer inside one container (this tree only: the base has no
server).

    sudo /work/main/.venv/bin/python bench/dns_bench.py --base /tmp/dns-base [-n 15]

Everything it makes (containers, the network, the store root) goes at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))     # busybox_fixture
sys.path.insert(0, str(REPO))

from busybox_fixture import make_busybox_store  # noqa: E402


def pb(tree: Path, env, *args, check=True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "builder", *args], cwd=tree, env=env,
                          capture_output=True, text=True, check=check, timeout=300)


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", type=Path, required=True, help="the other checkout")
    ap.add_argument("-n", type=int, default=15)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dnsbench-", dir="/tmp"))
    env = {**os.environ, "PYBUILD_ROOT": str(tmp / "root")}
    trees = {"base": a.base, "this": REPO}
    try:
        make_busybox_store(tmp / "root")
        pb(REPO, env, "network", "create", "dnsbench")
        times: dict[str, list[float]] = {k: [] for k in trees}
        for _ in range(a.n):
            for k, tree in trees.items():
                t = time.perf_counter()
                pb(tree, env, "run", "--rm", "--network", "dnsbench", "busybox", "true")
                times[k].append((time.perf_counter() - t) * 1000)
        for k, v in times.items():
            print(f"run --rm --network dnsbench busybox true  {k:5s} median {statistics.median(v):6.1f} ms"
                  f"  (min {min(v):.1f}, n={len(v)})")
        for k, tree in trees.items():
            cid = pb(tree, env, "run", "-d", "--network", "dnsbench", "busybox", "sleep",
                     "60").stdout.strip()
            time.sleep(1)
            st = json.loads((tmp / "root" / "containers" / cid / "state.json").read_text())
            sup = int(st["supervisor"].partition(".")[0])
            print(f"idle supervisor on a user network       {k:5s} {rss_kb(sup) / 1024:6.1f} MB RSS")
            pb(REPO, env, "rm", "-f", cid)
        web = pb(REPO, env, "run", "-d", "--name", "bweb", "--network", "dnsbench", "busybox",
                 "sleep", "60").stdout.strip()
        r = pb(REPO, env, "run", "--rm", "--network", "dnsbench", "busybox", "sh", "-c",
               "read s _ </proc/uptime; i=0; while [ $i -lt 100 ]; do nslookup bweb >/dev/null;"
               " i=$((i+1)); done; read e _ </proc/uptime; echo $s $e")
        s, e = (float(x) for x in r.stdout.split()[-2:])
        print(f"100 x nslookup of a peer (A and AAAA)   this  {(e - s) * 10:6.2f} ms each "
              f"(busybox nslookup's own start included)")
        pb(REPO, env, "rm", "-f", web)
    finally:
        subprocess.run([sys.executable, "-m", "builder", "rm", "-f",
                        *pb(REPO, env, "ps", "-aq", check=False).stdout.split()],
                       cwd=REPO, env=env, capture_output=True, check=False)
        time.sleep(1.5)
        pb(REPO, env, "network", "rm", "dnsbench", check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
