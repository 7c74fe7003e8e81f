#!/usr/bin/env python3
"""Measure what the native snapshotter costs against overlayfs, side by side in one run:

1. `runtime.sandbox.run` with an upper dir on the busybox layer: `true`, and a command that
   changes one file (median ms per run);
2. `pybuild build --no-cache` of 10 `RUN true` steps and of 10 one-file `RUN` steps on the
   busybox image, minus the same build without them (ms per step, as a user sees it);
3. the sandbox again on a bigger layer (--files N files of 10 KiB), where the copy dominates.

    sudo python3 bench/snapshot_bench.py [-n 20] [--files 10000]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # busybox_fixture, ...
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo ahead of tests/

from busybox_fixture import busybox_module, make_busybox_store
from run_bench import timed

from runtime.sandbox import run
from runtime.spec import SandboxSpec

REPO = Path(__file__).resolve().parents[1]


def median_ms(fn, n: int) -> float:
    return timed(fn, n)[0]


def sandbox_ms(layers: list[Path], script: str, kind: str, scratch: Path, n: int) -> float:
    os.environ["PYBUILD_SNAPSHOTTER"] = kind
    devnull = os.open(os.devnull, os.O_RDWR)

    def once():
        d = Path(tempfile.mkdtemp(dir=scratch))
        (d / "u").mkdir()
        (d / "w").mkdir()
        rc = run(SandboxSpec(lowerdirs=layers, argv=["sh", "-c", script], stdin=devnull,
                             upperdir=d / "u", workdir=d / "w"))
        assert rc == 0
        shutil.rmtree(d)
    try:
        return median_ms(once, n)
    finally:
        os.close(devnull)


def build_ms(root: Path, kind: str, dockerfile: str, ctx: Path, n: int) -> float:
    (ctx / "Dockerfile").write_text(dockerfile)
    env = {**os.environ, "PYBUILD_ROOT": str(root), "PYBUILD_SNAPSHOTTER": kind}

    def once():
        subprocess.run([sys.executable, "-m", "builder", "build", "-q", "--no-cache", str(ctx)],
                       env=env, cwd=REPO, check=True, capture_output=True)
    return median_ms(once, n)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20)
    ap.add_argument("--files", type=int, default=10000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir="/var/tmp") as d:
        d = Path(d)
        layer = d / "layer"
        layer.mkdir()
        busybox_module().make_rootfs(layer)
        print(f"1. sandbox.run with an upper dir, busybox layer ({args.n} runs, median ms)")
        for script in ("true", "echo changed > /etc/passwd"):
            ov = sandbox_ms([layer], script, "overlay", d, args.n)
            nat = sandbox_ms([layer], script, "native", d, args.n)
            print(f"   {script:32s} overlay {ov:6.1f}   native {nat:6.1f}   ({nat / ov:.2f}x)")

        root = d / "store"
        make_busybox_store(root)
        ctx = d / "ctx"
        ctx.mkdir()
        base = "FROM busybox\n"
        true10 = base + "".join(f"RUN true && echo {i} >/dev/null\n" for i in range(10))
        file10 = base + "".join(f"RUN echo {i} > /etc/motd\n" for i in range(10))
        m = max(3, args.n // 4)
        print(f"2. pybuild build --no-cache, busybox image ({m} builds, median; per step = "
              "(build - FROM-only build) / 10)")
        for kind in ("overlay", "native"):
            zero = build_ms(root, kind, base + "LABEL a=b\n", ctx, m)
            t = (build_ms(root, kind, true10, ctx, m) - zero) / 10
            f = (build_ms(root, kind, file10, ctx, m) - zero) / 10
            print(f"   {kind:8s} RUN true {t:6.1f} ms/step   RUN echo > /etc/motd {f:6.1f} ms/step")

        big = d / "big"
        for i in range(args.files):
            p = big / f"d{i % 100}" / f"f{i}"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(os.urandom(10240))
        mb = args.files * 10 / 1024
        k = max(3, args.n // 4)
        print(f"3. sandbox.run `true` on busybox + {args.files} files ({mb:.0f} MiB), {k} runs")
        ov = sandbox_ms([big, layer], "true", "overlay", d, k)
        nat = sandbox_ms([big, layer], "true", "native", d, k)
        print(f"   overlay {ov:6.1f} ms   native {nat:6.1f} ms   ({nat / ov:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
