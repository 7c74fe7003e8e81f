#!/usr/bin/env python3
"""Build benchmarks, pybuild next to BuildKit (`DOCKER_BUILDKIT=1 docker build`) on this machine.

    python3 bench/build_bench.py [--runs N] [--no-docker] [--files 20000 --mb 500]

Cases (issue 4): a fully cached rebuild of a 10-step multi-stage Dockerfile; a cold build of
10 `RUN true` steps (per-step overhead); COPY of a 20,000-file / 500 MB context cold and after
touching one file. BuildKit runs in a private dockerd (data under a temp dir, no iptables, RUN
with --network host) fed the same busybox image through `pybuild save | docker load`.
Prints a table of medians and ratios (pybuild / BuildKit; < 1 means pybuild is faster).
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
# pybuild as a user runs it: the launcher ./install.sh puts on PATH (no runpy, no pip wrapper)
LAUNCHER = REPO / ".venv" / "bin" / "pybuild-launcher"
PYBUILD = [str(LAUNCHER)] if LAUNCHER.exists() else [sys.executable, "-m", "builder"]
DOCKER = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else shutil.which("docker")

MULTI = """\
FROM busybox AS a
RUN echo a > /a
RUN echo a2 >> /a
FROM busybox AS b
RUN echo b > /b
COPY f /f
FROM busybox
COPY --from=a /a /a
COPY --from=b /b /b
RUN cat /a /b > /ab
ENV X=1
CMD ["cat", "/ab"]
"""
TEN_RUNS = "FROM busybox\n" + "".join(f"RUN true # {i}\n" for i in range(10))
COPY_CTX = "FROM busybox\nCOPY . /ctx\n"


def timed(cmd: list[str], env=None) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                       check=False)
    if r.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    return time.perf_counter() - t


class Pybuild:
    name = "pybuild"

    def __init__(self, root: Path):
        self.root = root
        self.env = {**os.environ, "PYBUILD_ROOT": str(root)}
        subprocess.run([sys.executable, str(REPO / "fixtures/busybox.py"), "--root", str(root)],
                       check=True, stdout=subprocess.DEVNULL)

    def build(self, ctx: Path, *extra: str) -> float:
        return timed([*PYBUILD, "build", "--progress", "plain", *extra,
                      "-t", "bench", str(ctx)], env=self.env)

    def reset(self) -> None:
        subprocess.run([*PYBUILD, "prune", "-a", "-f"], env=self.env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


class BuildKit:
    name = "buildkit"

    def __init__(self, tmp: Path, pyb: Pybuild):
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.sock = f"unix://{tmp}/docker.sock"
        self.log = open(tmp / "dockerd.log", "w")  # noqa: SIM115 - lives as long as dockerd
        self.proc = subprocess.Popen(
            ["dockerd", "--data-root", str(tmp / "data"), "--exec-root", str(tmp / "exec"),
             "--pidfile", str(tmp / "pid"), "-H", self.sock, "--iptables=false", "--bridge=none"],
            stdout=subprocess.DEVNULL, stderr=self.log)
        for _ in range(100):
            if subprocess.run([DOCKER, "-H", self.sock, "info"], capture_output=True,
                              check=False).returncode == 0:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError("dockerd did not start: see " + str(tmp / "dockerd.log"))
        arch = tmp / "busybox.tar"
        subprocess.run([*PYBUILD, "save", "-o", str(arch), "busybox:latest"],
                       env=pyb.env, check=True)
        subprocess.run([DOCKER, "-H", self.sock, "load", "-i", str(arch)], check=True,
                       stdout=subprocess.DEVNULL)
        self.env = {**os.environ, "DOCKER_BUILDKIT": "1"}

    def build(self, ctx: Path, *extra: str) -> float:
        extra = tuple("--no-cache" if e == "--no-cache" else e for e in extra)
        return timed([DOCKER, "-H", self.sock, "build", "--network", "host", "--progress", "plain",
                      *extra, "-t", "bench", str(ctx)], env=self.env)

    def reset(self) -> None:
        subprocess.run([DOCKER, "-H", self.sock, "builder", "prune", "-a", "-f"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


def make_copy_context(root: Path, files: int, total_mb: int) -> Path:
    ctx = root / "copyctx"
    ctx.mkdir()
    size = total_mb * 1024 * 1024 // files
    block = os.urandom(1 << 20)
    for i in range(files):
        d = ctx / f"d{i // 500:03d}"
        d.mkdir(exist_ok=True)
        off = (i * 7919) % ((1 << 20) - min(size, 1 << 19))
        data = (block[off:off + size] * (size // max(1, len(block[off:off + size])) + 1))[:size]
        (d / f"f{i:05d}.bin").write_bytes(data)
    (ctx / "Dockerfile").write_text(COPY_CTX)
    return ctx


def run_cases(tool, tmp: Path, runs: int, copy_ctx: Path | None) -> dict[str, float]:
    res: dict[str, float] = {}
    multi = tmp / f"multi-{tool.name}"
    multi.mkdir()
    (multi / "Dockerfile").write_text(MULTI)
    (multi / "f").write_text("f")
    tool.build(multi)
    res["cached rebuild, 10-step multi-stage"] = statistics.median(tool.build(multi) for _ in range(runs))
    ten = tmp / f"ten-{tool.name}"
    ten.mkdir()
    (ten / "Dockerfile").write_text(TEN_RUNS)
    res["cold build, 10x RUN true"] = statistics.median(
        tool.build(ten, "--no-cache") for _ in range(runs))
    if copy_ctx is not None:
        tool.reset()
        res["COPY 20k files cold"] = tool.build(copy_ctx)
        victim = next((copy_ctx / "d000").iterdir())
        os.utime(victim, None)
        res["COPY 20k files after touch"] = tool.build(copy_ctx)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-docker", action="store_true")
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--mb", type=int, default=500)
    ap.add_argument("--no-copy", action="store_true", help="skip the big COPY context case")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pybuild-bench-") as t:
        tmp = Path(t)
        copy_ctx = None if a.no_copy else make_copy_context(tmp, a.files, a.mb)
        pyb = Pybuild(tmp / "store")
        results = {"pybuild": run_cases(pyb, tmp, a.runs, copy_ctx)}
        print("pybuild:", {k: round(v, 3) for k, v in results["pybuild"].items()}, flush=True)
        if not a.no_docker and DOCKER and shutil.which("dockerd"):
            bk = BuildKit(tmp / "docker", pyb)
            try:
                results["buildkit"] = run_cases(bk, tmp, a.runs, copy_ctx)
            finally:
                bk.close()
    print(f"{'case':40} {'pybuild':>10} {'buildkit':>10} {'ratio':>7}")
    for case, v in results["pybuild"].items():
        b = results.get("buildkit", {}).get(case)
        ratio = f"{v / b:7.2f}" if b else "      -"
        print(f"{case:40} {v:9.3f}s {(f'{b:9.3f}s' if b else '         -'):>10} {ratio}")
    per_step = results["pybuild"]["cold build, 10x RUN true"] / 10
    print(f"pybuild per-step overhead (cold, incl. start-up/10): {per_step * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
