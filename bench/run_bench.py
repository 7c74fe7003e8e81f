#!/usr/bin/env python3
"""Measure the sandbox's per-run overhead: `runtime.sandbox.run(spec)` of /bin/true on a busybox
layer, against `unshare -mpfiun true` (namespaces only) and a plain fork+exec of true, all from
this Python process; then `pybuild run busybox true` as a user would time it.

    sudo python3 bench/run_bench.py [-n 50]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # busybox_fixture, ...
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo ahead of tests/

from busybox_fixture import busybox_module

from runtime.sandbox import run
from runtime.spec import SandboxSpec

REPO = Path(__file__).resolve().parents[1]


def timed(fn, n: int) -> tuple[float, float, float]:
    fn()   # warm up
    xs = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        xs.append((time.perf_counter() - t) * 1000)
    xs.sort()
    return statistics.median(xs), xs[len(xs) // 10], xs[-1 - len(xs) // 10]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=50)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        layer = Path(d) / "layer"
        layer.mkdir()
        busybox_module().make_rootfs(layer)
        up = Path(d) / "up"
        devnull = os.open(os.devnull, os.O_RDWR)
        spec = SandboxSpec(lowerdirs=[layer], argv=["/bin/true"], stdin=devnull)
        net = SandboxSpec(lowerdirs=[layer], argv=["/bin/true"], stdin=devnull, network="none")
        unconfined = SandboxSpec(lowerdirs=[layer], argv=["/bin/true"], stdin=devnull,
                                 network="none", security_opt=["seccomp=unconfined"])

        def with_upper():
            up.mkdir()
            (Path(d) / "work").mkdir()
            run(SandboxSpec(lowerdirs=[layer], argv=["/bin/true"], stdin=devnull, upperdir=up,
                            workdir=Path(d) / "work"))
            os.rmdir(up)
            subprocess.run(["rm", "-rf", str(Path(d) / "work")], check=True)

        rows = [
            ("fork+exec true (subprocess)", lambda: subprocess.run(["true"], check=True)),
            ("unshare -mpfiun true", lambda: subprocess.run(["unshare", "-mpfiun", "true"], check=True)),
            ("sandbox.run(/bin/true), network host", lambda: run(spec)),
            ("sandbox.run(/bin/true), network none", lambda: run(net)),
            ("  the same, seccomp=unconfined (no filter)", lambda: run(unconfined)),
            ("sandbox.run with a given upper dir", with_upper),
        ]
        if os.environ.get("PYBUILD_ROOT"):
            rows.append(("`pybuild run busybox true` (CLI process)",
                         lambda: subprocess.run([sys.executable, "-m", "builder", "run", "busybox", "true"],
                                                check=True, cwd=REPO)))
        base = None
        print(f"{'what':45} {'median':>8} {'p10':>8} {'p90':>8}  ratio")
        for name, fn in rows:
            med, p10, p90 = timed(fn, args.n)
            if name.startswith("unshare"):
                base = med
            ratio = f"{med / base:5.1f}x" if base else ""
            print(f"{name:45} {med:7.1f}ms {p10:7.1f}ms {p90:7.1f}ms  {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
