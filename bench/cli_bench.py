#!/usr/bin/env python3
"""Issue 13's scripting-output bench: `images`, `inspect IMAGE`, `history IMAGE` (and their
`--format` forms) with 100 images in the store, pybuild through the launcher install.sh puts
on PATH, docker's client against a private dockerd holding the same 100 images (loaded from
a `pybuild save`), rows interleaved.

    sudo /work/main/.venv/bin/python bench/cli_bench.py [-n 30] [--images 100] [--no-docker]

Target: each pybuild row ≤ 60 ms (median).
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
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from busybox_fixture import make_busybox_store  # noqa: E402
from registry_fixture import die_with_parent, stop  # noqa: E402

DOCKERD, DOCKER = "/usr/sbin/dockerd", "/usr/bin/docker"
LAUNCHER = REPO / ".venv" / "bin" / "pybuild-launcher"

ROWS = (("images", ["images"]), ("images --format", ["images", "--format", "{{.Repository}}:{{.Tag}}"]),
        ("inspect", ["inspect", "busybox:latest"]),
        ("inspect -f", ["inspect", "-f", "{{.Id}} {{index .RepoTags 0}}", "busybox:latest"]),
        ("history", ["history", "busybox:latest"]))


def fill(root: Path, n: int) -> list[str]:
    """busybox plus n-1 one-label images on it, tagged bench/img:K."""
    store = make_busybox_store(root)
    base = store.image("busybox:latest")
    names = []
    for k in range(n - 1):
        cfg = {**base.config, "config": {**base.config["config"],
                                         "Labels": {"bench.k": str(k)}}}
        name = f"bench/img:{k}"
        store.put_image(cfg, tags=[name])
        names.append(name)
    return names


def timed(cmd: list[str], env: dict) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - t) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=30)
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--no-docker", action="store_true")
    a = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="pbcli-", dir="/tmp"))
    daemon = None
    try:
        root = base / "root"
        names = fill(root, a.images)
        env = {**os.environ, "PYBUILD_ROOT": str(root)}
        pb = [str(LAUNCHER)] if LAUNCHER.exists() else [sys.executable, "-m", "builder"]
        tools = {"pybuild": pb}
        if not a.no_docker and os.path.exists(DOCKERD):
            sock = base / "d.sock"
            daemon = subprocess.Popen(
                [DOCKERD, "--data-root", str(base / "data"), "--exec-root", str(base / "exec"),
                 "--pidfile", str(base / "d.pid"), "-H", f"unix://{sock}", "--iptables=false",
                 "--bridge=none"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=die_with_parent)
            cli = [DOCKER, "-H", f"unix://{sock}"]
            for _ in range(300):
                if subprocess.run([*cli, "version"], capture_output=True).returncode == 0:
                    break
                time.sleep(0.2)
            tar = base / "all.tar"
            subprocess.run([*pb, "save", "-o", str(tar), "busybox:latest", *names], env=env,
                           check=True, cwd=REPO)
            subprocess.run([*cli, "load", "-i", str(tar)], check=True, capture_output=True)
            tools["docker"] = cli
        got: dict[tuple[str, str], list[float]] = {}
        for _ in range(a.n):
            for label, args in ROWS:
                for tool, cmd in tools.items():
                    got.setdefault((label, tool), []).append(timed([*cmd, *args], env))
        print(f"{a.images} images, {a.n} runs each, load {os.getloadavg()[0]:.2f}")
        print(f"{'command':<18}" + "".join(f"{t:>12}" for t in tools))
        for label, _ in ROWS:
            print(f"{label:<18}" + "".join(f"{statistics.median(got[(label, t)]):>10.1f}ms"
                                          for t in tools))
    finally:
        if daemon is not None:
            stop(daemon, 30)
            for d in ("data", "exec"):
                subprocess.run(["umount", "-R", "-l", str(base / d)], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
