#!/usr/bin/env python3
"""Registry pull/push benchmark (issue 9): skopeo, and pybuild when its CLI has `pull`.

    python3 bench/registry_bench.py [--mb 300] [--layers 10] [--rounds 3] [--no-pybuild]
                                    [--also before=DIR ...]

Makes a deterministic image of `--layers` layers totalling `--mb` MB (per layer: 2/3 random
bytes, 1/3 word text, so gzip has work and the result is ~75% of the raw size), seeds it into a
fresh loopback docker-registry with skopeo (which gzips the layers), then times, per tool:
  pull  REF -> an empty local destination (skopeo: `dir:`; pybuild: an empty $PYBUILD_ROOT),
  push  local copy -> a registry of its own per round (fresh storage on a new port, so nothing
        can be skipped or cross-repo mounted: every byte is uploaded).
The tools take turns within each round (a busy neighbour on the machine then hits all alike);
medians of `--rounds` rounds; peak RSS is the child's own ru_maxrss (os.wait4). `--also
NAME=DIR` times another checkout (say a `git archive` of the commit before a change) in the
same run. Prints a markdown table with each median as a multiple of skopeo's. The tools do not
do the same work on pull: skopeo checks each blob's digest and stores it; pybuild also
decompresses every layer to check its diff_id (layers are unpacked later, on first use).
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

WORDS = [
    "layer", "registry", "blob", "manifest", "digest", "chunk", "upload", "range", "token",
    "mirror", "index", "config", "the", "of", "and", "to", "in", "is", "that", "for", "it", "as",
    "with", "was", "on", "be", "by", "this", "are", "from", "or", "have", "an"
]


def run_measured(cmd: list[str], env: dict | None = None, cwd: Path = REPO) -> tuple[float, int]:
    """(wall seconds, peak RSS in KiB of that child alone); exits with its stderr on failure.
    The disk is synced first (untimed), so no tool pays for the writeback of another's files."""
    os.sync()
    t = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
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


def pybuild_cmd(tree: Path) -> list[str]:
    """pybuild as a user runs it, the code of checkout `tree` (run with cwd `tree`)."""
    launcher = tree / ".venv" / "bin" / "pybuild-launcher"
    return [str(launcher)] if launcher.exists() else [sys.executable, "-m", "builder"]


def pybuild_available(tree: Path = REPO) -> str | None:
    """None when checkout `tree`'s CLI has `pull` and `push`; else why that side is skipped."""
    for cmd in ("pull", "push"):
        r = subprocess.run([*pybuild_cmd(tree), cmd, "--help"], cwd=tree, capture_output=True,
                           text=True, check=False)
        if r.returncode != 0:
            last = (r.stderr or r.stdout).strip().splitlines()[-1:] or [""]
            return f"`pybuild {cmd} --help` failed: {last[0][:200]}"
    return None


def pybuild_pull(ref: str, root: Path, tree: Path = REPO) -> tuple[float, int]:
    """`pybuild pull REF` into the store at `root` (the caller gives an empty one)."""
    return run_measured([*pybuild_cmd(tree), "pull", ref], env=pybuild_env(root), cwd=tree)


def pybuild_push(src_ref: str, ref: str, root: Path, tree: Path = REPO) -> tuple[float, int]:
    """`pybuild push REF` of the image `src_ref` (already in the store at `root`), tagged REF
    first (untimed)."""
    subprocess.run([*pybuild_cmd(tree), "tag", src_ref, ref], env=pybuild_env(root), cwd=tree,
                   check=True, capture_output=True)
    return run_measured([*pybuild_cmd(tree), "push", ref], env=pybuild_env(root), cwd=tree)


class Tool:
    """One side of the table: pull(ref, dest) -> (s, KiB) fills the empty `dest` (a dir or a
    store root); push(local, src_ref, dest_ref) -> (s, KiB) pushes what the first pull left."""

    def __init__(self, name: str, pull: Callable, push: Callable):
        self.name, self.pull, self.push = name, pull, push


SKOPEO = Tool("skopeo", skopeo_pull,
              lambda local, src_ref, ref: skopeo_push(local, ref))


def pybuild_tool(name: str, tree: Path) -> Tool:
    return Tool(name, lambda ref, dest: pybuild_pull(ref, dest, tree),
                lambda local, src_ref, ref: pybuild_push(src_ref, ref, local, tree))


def bench_tools(tools: list[Tool], ref: str, work: Path, rounds: int) -> dict:
    """{tool: {"pull": [(s, KiB)], "push": [...]}}, the tools taking turns in every round (so a
    noisy neighbour on the machine hits them alike)."""
    out = {t.name: {"pull": [], "push": []} for t in tools}
    local: dict[str, Path] = {}
    for i in range(rounds):
        for tool in tools:
            dest = work / f"{tool.name}-pull-{i}"
            out[tool.name]["pull"].append(tool.pull(ref, dest))
            if tool.name not in local:
                local[tool.name] = dest
            else:
                shutil.rmtree(dest, ignore_errors=True)
    for i in range(rounds):
        for tool in tools:
            with run_registry(work / f"{tool.name}-reg-{i}") as reg:
                out[tool.name]["push"].append(
                    tool.push(local[tool.name], ref, f"{reg.host}/bench/pushed:latest"))
            shutil.rmtree(work / f"{tool.name}-reg-{i}", ignore_errors=True)
    for d in local.values():
        shutil.rmtree(d, ignore_errors=True)
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
    ap.add_argument("--also", action="append", default=[], metavar="NAME=DIR",
                    help="time another checkout of pybuild beside this one (e.g. before=DIR of a "
                         "`git archive` of an older commit); repeatable")
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
                for spec in args.also:
                    name, _, tree = spec.partition("=")
                    why = pybuild_available(Path(tree))
                    if why:
                        sys.exit(f"bench: --also {spec}: {why}")
                    tools.append(pybuild_tool(f"pybuild {name}", Path(tree).resolve()))
                tools.append(pybuild_tool("pybuild", REPO))
            results = bench_tools(tools, ref, work, args.rounds)
        print("| tool | op | median s | min–max s | × skopeo | MB/s (gzip bytes) | peak RSS MB |\n"
              "|---|---|---|---|---|---|---|")
        base = {op: statistics.median(s for s, _ in runs) for op, runs in results["skopeo"].items()}
        for op in ("pull", "push"):
            for name, ops in results.items():
                secs = [s for s, _ in ops[op]]
                med = statistics.median(secs)
                rss = max(r for _, r in ops[op])
                print(f"| {name} | {op} | {med:.2f} | {min(secs):.2f}–{max(secs):.2f} | "
                      f"{med / base[op]:.2f} | {gz / 1e6 / med:.0f} | {rss / 1024:.0f} |")
        print(f"\n{args.rounds} rounds, the tools taking turns in each; pull = registry -> empty local "
              "destination (skopeo dir:, pybuild an empty $PYBUILD_ROOT; pybuild also checks every "
              "layer's diff_id, skopeo does not), push = local -> a fresh registry.")
        if note is not None:
            print(f"pybuild side not run: {note}")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
