#!/usr/bin/env python3
"""Registry pull/push benchmark (issue 9): skopeo, and pybuild when its CLI has `pull`.

    python3 bench/registry_bench.py [--mb 300] [--layers 10] [--rounds 3] [--no-pybuild]

Makes a deterministic image of `--layers` layers totalling `--mb` MB (per layer: 2/3 random
bytes, 1/3 word text, so gzip has work and the result is ~75% of the raw size), seeds it into a
fresh loopback docker-registry with skopeo (which gzips the layers), then times, per tool:
  pull  REF -> an empty local destination (skopeo: `dir:`; pybuild: an empty $PYBUILD_ROOT),
  push  local copy -> a registry of its own per round (fresh storage on a new port, so nothing
        can be skipped or cross-repo mounted: every byte is uploaded).
Medians of `--rounds` rounds; peak RSS is the child's own ru_maxrss (os.wait4).
Prints a markdown table. The two tools do not do the same work on pull: skopeo stores the
compressed blobs as they come; pybuild also unpacks them into its store (say so next to figures).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from registry_fixture import run_registry  # noqa: E402 - after the path set-up

LAUNCHER = REPO / ".venv" / "bin" / "pybuild-launcher"
# pybuild as a user runs it, this checkout's code (cwd REPO)
PYBUILD = [str(LAUNCHER)] if LAUNCHER.exists() else [sys.executable, "-m", "builder"]
WORDS = [
    "layer", "registry", "blob", "manifest", "digest", "chunk", "upload", "range", "token",
    "mirror", "index", "config", "the", "of", "and", "to", "in", "is", "that", "for", "it", "as",
    "with", "was", "on", "be", "by", "this", "are", "from", "or", "have", "an"
]


def run_measured(cmd: list[str], env: dict | None = None) -> tuple[float, int]:
    """(wall seconds, peak RSS in KiB of that child alone); exits with its stderr on failure."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    dt = time.perf_counter() - t
    p.stderr.close()
    if p.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} failed ({p.returncode}):\n{err.decode()[-2000:]}")
    return dt, ru.ru_maxrss


# -- the image ---------------------------------------------------------------------------------

def _text(rng: random.Random, size: int) -> bytes:
    out, n = [], 0
    while n < size:
        line = " ".join(rng.choices(WORDS, k=rng.randint(4, 14))) + f" {rng.getrandbits(32)}\n"
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]


def make_image(layout: Path, total_mb: int, layers: int, tag: str = "latest") -> int:
    """An OCI layout at `layout` (uncompressed layers); returns the raw layer bytes."""
    rng = random.Random(9)
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    per_layer = total_mb * 1_000_000 // layers
    corpus = _text(rng, 4 << 20)        # sliced at random offsets: text gzip cannot dedupe
    file_size = 1 << 20
    descs, diff_ids, raw = [], [], 0
    for li in range(layers):
        tmp = layout / f"layer{li}.tar"
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
            n = 0
            for fi in range(max(1, per_layer // file_size)):
                if fi % 3 == 2:
                    off = rng.randrange(len(corpus) - file_size)
                    data, name = corpus[off:off + file_size], f"data/l{li}/f{fi}.txt"
                else:
                    data, name = rng.randbytes(file_size), f"data/l{li}/f{fi}.bin"
                ti = tarfile.TarInfo(name)
                ti.size, ti.mtime, ti.mode = len(data), 1700000000, 0o644
                tf.addfile(ti, io.BytesIO(data))
                n += len(data)
        h = hashlib.sha256()
        with open(tmp, "rb") as f:
            while b := f.read(1 << 20):
                h.update(b)
        digest, size = "sha256:" + h.hexdigest(), tmp.stat().st_size
        tmp.rename(blobs / digest[7:])
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest,
                      "size": size})
        diff_ids.append(digest)
        raw += size

    def blob(obj) -> dict:
        data = json.dumps(obj, sort_keys=True).encode()
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        (blobs / d[7:]).write_bytes(data)
        return {"digest": d, "size": len(data)}

    config = blob({"architecture": "amd64", "os": "linux", "created": "2023-11-14T22:13:20Z",
                   "config": {"Cmd": ["/bin/sh"]},
                   "rootfs": {"type": "layers", "diff_ids": diff_ids}})
    manifest = blob({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                     "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
                     "layers": descs})
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_text(json.dumps({
        "schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest,
            "annotations": {"org.opencontainers.image.ref.name": tag}}]}))
    return raw


# -- the tools: each op returns (seconds, peak RSS KiB) -----------------------------------------

def skopeo_pull(ref: str, dest: Path) -> tuple[float, int]:
    return run_measured(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                         f"docker://{ref}", f"dir:{dest}"])


def skopeo_push(src: Path, ref: str) -> tuple[float, int]:
    return run_measured(["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                         f"dir:{src}", f"docker://{ref}"])


def pybuild_env(root: Path) -> dict:
    return dict(os.environ, PYBUILD_ROOT=str(root))


def pybuild_available() -> str | None:
    """None when this checkout's CLI has `pull` and `push`; else why the pybuild side is skipped."""
    for cmd in ("pull", "push"):
        r = subprocess.run([*PYBUILD, cmd, "--help"], cwd=REPO, capture_output=True, text=True,
                           check=False)
        if r.returncode != 0:
            last = (r.stderr or r.stdout).strip().splitlines()[-1:] or [""]
            return f"`pybuild {cmd} --help` failed: {last[0][:200]}"
    return None


def pybuild_pull(ref: str, root: Path) -> tuple[float, int]:
    """`pybuild pull REF` into the store at `root` (the caller gives an empty one)."""
    return run_measured([*PYBUILD, "pull", ref], env=pybuild_env(root))


def pybuild_push(src_ref: str, ref: str, root: Path) -> tuple[float, int]:
    """`pybuild push REF` of the image `src_ref` (already in the store at `root`), tagged REF
    first (untimed)."""
    subprocess.run([*PYBUILD, "tag", src_ref, ref], env=pybuild_env(root), cwd=REPO, check=True,
                   capture_output=True)
    return run_measured([*PYBUILD, "push", ref], env=pybuild_env(root))


class Tool:
    """One side of the table: pull(ref, dest) -> (s, KiB) fills the empty `dest` (a dir or a
    store root); push(local, src_ref, dest_ref) -> (s, KiB) pushes what the first pull left."""

    def __init__(self, name: str, pull: Callable, push: Callable):
        self.name, self.pull, self.push = name, pull, push


SKOPEO = Tool("skopeo", skopeo_pull,
              lambda local, src_ref, ref: skopeo_push(local, ref))
PYBUILD_TOOL = Tool("pybuild", pybuild_pull,
                    lambda local, src_ref, ref: pybuild_push(src_ref, ref, local))


def bench_tool(tool: Tool, ref: str, work: Path, rounds: int) -> dict[str, list[tuple[float, int]]]:
    out: dict[str, list[tuple[float, int]]] = {"pull": [], "push": []}
    local = None
    for i in range(rounds):
        dest = work / f"{tool.name}-pull-{i}"
        out["pull"].append(tool.pull(ref, dest))
        if local is None:
            local = dest
        else:
            shutil.rmtree(dest, ignore_errors=True)
    for i in range(rounds):
        with run_registry(work / f"{tool.name}-reg-{i}") as reg:
            host = reg.host
            out["push"].append(tool.push(local, ref, f"{host}/bench/pushed:latest"))
        shutil.rmtree(work / f"{tool.name}-reg-{i}", ignore_errors=True)
    shutil.rmtree(local, ignore_errors=True)
    return out


def stored_bytes(storage: Path) -> int:
    """Bytes of the blobs a registry stores (distribution's filesystem layout under `storage`:
    docker/registry/v2/blobs/sha256/<2>/<hex>/data)."""
    blobs = storage / "docker" / "registry" / "v2" / "blobs"
    total = sum(f.stat().st_size for f in blobs.rglob("data") if f.is_file())
    if not total:
        sys.exit(f"bench: no blobs under {blobs}: has the registry's storage layout moved?")
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=300, help="raw image size, MB (default 300)")
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-pybuild", action="store_true")
    ap.add_argument("--work", default=None, help="scratch dir (default: a temp dir, removed)")
    args = ap.parse_args()
    for exe in ("skopeo", "docker-registry"):
        if not shutil.which(exe):
            sys.exit(f"bench: needs {exe} (apt-get install {exe})")
    work = Path(args.work or tempfile.mkdtemp(prefix="regbench-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        raw = make_image(work / "src-oci", args.mb, args.layers)
        gen = time.perf_counter() - t
        with run_registry(work / "src-reg") as reg:
            host = reg.host
            ref = f"{host}/bench/src:latest"
            seed_s, _ = run_measured(["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                                      f"oci:{work / 'src-oci'}:latest", f"docker://{ref}"])
            shutil.rmtree(work / "src-oci")
            gz = stored_bytes(reg.storage)
            print(f"image: {args.layers} layers, {raw / 1e6:.0f} MB raw, {gz / 1e6:.0f} MB gzip in "
                  f"the registry (generated in {gen:.1f} s, seeded by skopeo in {seed_s:.1f} s)\n")
            tools = [SKOPEO]
            note = "skipped (--no-pybuild)" if args.no_pybuild else pybuild_available()
            if note is None:
                tools.append(PYBUILD_TOOL)
            results = {tool.name: bench_tool(tool, ref, work, args.rounds) for tool in tools}
        print("| tool | op | median s | min–max s | MB/s (gzip bytes) | peak RSS MB |\n"
              "|---|---|---|---|---|---|")
        for name, ops in results.items():
            for op, runs in ops.items():
                secs = [s for s, _ in runs]
                med = statistics.median(secs)
                rss = max(r for _, r in runs)
                print(f"| {name} | {op} | {med:.2f} | {min(secs):.2f}–{max(secs):.2f} | "
                      f"{gz / 1e6 / med:.0f} | {rss / 1024:.0f} |")
        print(f"\n{args.rounds} rounds each; pull = registry -> empty local destination (skopeo "
              "dir:, pybuild empty $PYBUILD_ROOT: also unpacks), push = local -> a fresh registry.")
        if note is not None:
            print(f"pybuild side not run: {note}")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
