#!/usr/bin/env python3
"""A CI machine with an empty store: the same build cold, and with `--cache-from` a registry
cache that another machine exported (issue 9).

    python3 bench/ci_cache_bench.py [--rounds 3] [--mb 40]

The Dockerfile does what CI builds do: work in RUN steps (here: `--mb` MB of numbers written
and compressed, and a short compile-like loop), a COPY of the context, a multi-stage COPY
--from. Machine A builds it once with `--cache-to type=registry,...,mode=max` to a loopback
docker-registry; then each round starts from an empty store holding only the busybox base
(what a fresh CI runner pulls anyway) and times a cold build and a `--cache-from` build.
Both must give the same image ID. Prints a markdown table of medians.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from busybox_fixture import copy_store, make_busybox_store  # noqa: E402 - after the path set-up
from registry_fixture import run_registry  # noqa: E402

LAUNCHER = REPO / ".venv" / "bin" / "pybuild-launcher"
PYBUILD = [str(LAUNCHER)] if LAUNCHER.exists() else [sys.executable, "-m", "builder"]

DOCKERFILE = """\
FROM busybox AS deps
RUN seq 1 {lines} > /deps.bin && gzip -1 /deps.bin
RUN i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; echo compiled > /build.log
FROM busybox
COPY --from=deps /deps.bin.gz /opt/deps.bin.gz
COPY src/ /src/
RUN find /src -type f | sort | xargs cat | md5sum > /src.md5
CMD ["cat", "/src.md5"]
"""


def build(root: Path, ctx: Path, *flags: str) -> tuple[float, str]:
    env = dict(os.environ, PYBUILD_ROOT=str(root))
    t = time.perf_counter()
    r = subprocess.run([*PYBUILD, "build", "-q", *flags, str(ctx)], env=env, cwd=REPO,
                       capture_output=True, text=True, check=False)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"bench: build {' '.join(flags)} failed:\n{r.stderr[-2000:]}")
    return dt, r.stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mb", type=int, default=40)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ci-cache-bench-", dir="/var/tmp"))
    env_conf = work / "registries.conf"
    env_conf.write_text("")
    os.environ["CONTAINERS_REGISTRIES_CONF"] = str(env_conf)
    os.environ["DOCKER_CONFIG"] = str(work / "docker")
    try:
        ctx = work / "ctx"
        (ctx / "src").mkdir(parents=True)
        for i in range(200):
            (ctx / "src" / f"m{i}.c").write_text(f"int f{i}(void) {{ return {i}; }}\n" * 20)
        (ctx / "Dockerfile").write_text(DOCKERFILE.format(lines=a.mb * 130_000))  # ~7.6 B a line
        template = work / "template"
        make_busybox_store(template)
        with run_registry(work / "registry") as reg:
            cache = f"{reg.host}/ci/app:buildcache"
            machine_a = copy_store(template, work / "a")
            _, image_a = build(machine_a, ctx, "--cache-to", f"type=registry,ref={cache},mode=max")
            cold, warm = [], []
            for i in range(a.rounds):
                root = copy_store(template, work / f"cold{i}")
                dt, img = build(root, ctx)
                cold.append(dt)
                assert img == image_a, (img, image_a)
                shutil.rmtree(root)
                root = copy_store(template, work / f"warm{i}")
                dt, img = build(root, ctx, "--cache-from", cache)
                warm.append(dt)
                assert img == image_a, (img, image_a)
                shutil.rmtree(root)
        print(f"Dockerfile: 2 stages, {a.mb} MB written + gzip'd in RUN, a 200k-iteration shell "
              "loop, COPY of 200 files; empty store with the busybox base; "
              f"{a.rounds} rounds, medians\n")
        print("| build on an empty store | median s | min–max s |")
        print("|---|---|---|")
        for name, xs in (("cold (no cache)", cold), ("--cache-from registry (mode=max)", warm)):
            print(f"| {name} | {statistics.median(xs):.2f} | {min(xs):.2f}–{max(xs):.2f} |")
        print(f"\nsame image ID both ways: {image_a}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
