#!/usr/bin/env python3
"""The edit-rebuild loop (issue 14): one file edited, then build, pybuild next to BuildKit.

    python3 bench/edit_bench.py [--sizes 1000,10000,100000] [--rounds 3] [--cold-rounds 1]
                                [--settle S] [--no-buildkit] [--json]

Dockerfile `FROM busybox` / `COPY . /app` / `RUN ls /app | wc -l`; contexts of N small files
(~200 bytes, 100 per directory) in a temp dir of the bench's own. For each size:
- cold: pybuild `build --no-cache` in a fresh store holding only busybox; BuildKit with its build
  cache pruned (`docker builder prune -af`) first, and `--no-cache`; `--cold-rounds` times each
  (interleaved; median and min-max), each pybuild round in a store of its own;
- one file edited: append a line to one file, build with each tool (interleaved), `--rounds`
  times; median and min-max.
Peak RSS: pybuild's process tree (wait4's ru_maxrss); BuildKit's side is dockerd's VmHWM (BuildKit
runs inside dockerd 20.10; reset through /proc/PID/clear_refs before each build) and the docker
client's (it sends the context). Per-step times come from `--progress plain` (the DONE lines), so
the time outside the steps (start-up, context walk, commit, image write) shows as `outside`.
BuildKit = the shared private dockerd of tests/dockerd_fixture.py, fed the same busybox through
`pybuild save | docker load`, builds with `DOCKER_BUILDKIT=1 docker build --network host`;
pybuild builds with `--network host` too (the same RUN for both), through builder.cli.exit_now
as the installed `pybuild` does, with bytecode caching on as a user's python has it.
Everything (dockerd, its roots, the contexts and stores) is removed at the end, also on ^C.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from busybox_fixture import copy_store, make_busybox_store  # noqa: E402
from dockerd_fixture import NO_DOCKER, private_dockerd  # noqa: E402

DOCKERFILE = "FROM busybox\nCOPY . /app\nRUN ls /app | wc -l\n"
# this checkout's code (cwd = REPO), ended as the installed `pybuild` ends (builder.cli.exit_now:
# no interpreter teardown, which frees a 100,000-file build's heap in ~0.25 s)
PYBUILD = [sys.executable, "-c", "from builder.cli import exit_now, main; exit_now(main())"]
PER_DIR, FILE_SIZE = 100, 200


def make_context(ctx: Path, n: int) -> None:
    """n files of ~200 bytes, 100 per directory, and the Dockerfile."""
    ctx.mkdir(parents=True)
    line = b"x" * 63 + b"\n"
    for i in range(n):
        d = ctx / f"d{i // PER_DIR:04d}"
        if i % PER_DIR == 0:
            d.mkdir()
        head = f"file {i}\n".encode()
        (d / f"f{i % PER_DIR:03d}.txt").write_bytes(head + (line * 4)[:FILE_SIZE - len(head)])
    (ctx / "Dockerfile").write_text(DOCKERFILE)


def edit(ctx: Path, n: int, round_no: int) -> None:
    """Append a line to one file (a different one each round)."""
    i = (round_no * 7919 + 13) % n
    with open(ctx / f"d{i // PER_DIR:04d}" / f"f{i % PER_DIR:03d}.txt", "a") as f:
        f.write(f"edit {round_no}\n")


STEP = re.compile(r"^#(\d+) (?:\[(?:\d+/\d+|internal)\] )?(.*)$")
DONE = re.compile(r"^#(\d+) (?:DONE|CACHED) ?([\d.]+)?s?$")
KINDS = (("load build context", "context"), ("COPY ", "COPY"), ("RUN ", "RUN"),
         ("exporting to image", "export"))


def step_times(plain: str) -> dict[str, float]:
    """{'context', 'COPY', 'RUN', 'export'} seconds from `--progress plain` output (BuildKit's
    and pybuild's print the same #N vertex lines and `#N DONE 0.1s`)."""
    names: dict[str, str] = {}
    out: dict[str, float] = {}
    for ln in plain.splitlines():
        m = DONE.match(ln)
        if m:
            if m.group(1) in names and m.group(2):
                kind = names[m.group(1)]
                out[kind] = out.get(kind, 0.0) + float(m.group(2))
            continue
        m = STEP.match(ln)
        if m and m.group(1) not in names:       # a vertex's first line names it
            kind = next((k for prefix, k in KINDS if m.group(2).startswith(prefix)), None)
            if kind:
                names[m.group(1)] = kind
    return out


def run_timed(cmd: list[str], env: dict, log: Path) -> tuple[float, int, str]:
    """(seconds, peak RSS in KiB of the process tree, output) of one command that must work."""
    with open(log, "w+") as out:
        t = time.perf_counter()
        p = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(p.pid, 0)
        dt = time.perf_counter() - t
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    if p.returncode != 0:
        raise SystemExit(f"edit_bench: {' '.join(cmd)} failed ({p.returncode}):\n{text[-2000:]}")
    return dt, usage.ru_maxrss, text


class Pybuild:
    name = "pybuild"

    def __init__(self, tmp: Path, template: Path, n: int):
        self.tmp, self.template, self.n, self.stores = tmp, template, n, []
        self.logs = tmp
        self.fresh()

    def fresh(self) -> None:
        """A store of its own holding only busybox (the old ones stay until the size is done:
        removing 100,000 files makes the next creates slow on this machine's ext4)."""
        self.root = copy_store(self.template, self.tmp / f"store-{self.n}-{len(self.stores)}")
        self.stores.append(self.root)
        self.env = {**os.environ, "PYBUILD_ROOT": str(self.root)}
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)     # a user's python caches bytecode

    def build(self, ctx: Path, cold: bool) -> dict:
        # the RUN's network as BuildKit's below (host: docker0 may be missing here); pybuild's
        # default, a bridge, costs its RUN ~0.1 s more (bench/container_bench.py measures it)
        cmd = [*PYBUILD, "build", "--network", "host", "--progress", "plain",
               *(["--no-cache"] if cold else []), "-t", "editbench", str(ctx)]
        dt, rss, text = run_timed(cmd, self.env, self.logs / "pybuild.log")
        return {"s": dt, "rss_kib": rss, "steps": step_times(text)}


class BuildKit:
    name = "buildkit"

    def __init__(self, tmp: Path, dockerd, busybox_tar: Path):
        self.cli, self.pid, self.logs = dockerd.cli, dockerd.proc.pid, tmp
        self.env = {**os.environ, "DOCKER_BUILDKIT": "1"}
        subprocess.run([*self.cli, "load", "-i", str(busybox_tar)], check=True,
                       stdout=subprocess.DEVNULL)

    def _hwm(self, reset: bool = False) -> int:
        """dockerd's peak RSS (VmHWM, KiB) since the last reset."""
        if reset:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            return 0
        for ln in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if ln.startswith("VmHWM:"):
                return int(ln.split()[1])
        return 0

    def build(self, ctx: Path, cold: bool) -> dict:
        if cold:
            subprocess.run([*self.cli, "builder", "prune", "-af"], check=True,
                           stdout=subprocess.DEVNULL)
        self._hwm(reset=True)
        cmd = [*self.cli, "build", "--network", "host", "--progress", "plain",
               *(["--no-cache"] if cold else []), "-t", "editbench", str(ctx)]
        dt, rss, text = run_timed(cmd, self.env, self.logs / "buildkit.log")
        return {"s": dt, "rss_kib": rss, "daemon_rss_kib": self._hwm(), "steps": step_times(text)}


def settle(seconds: float) -> None:
    """Before each build of either tool: what the last one left dirty is written out and the
    machine rests, so no build pays for the writeback (or dockerd's aftermath) of the build
    before it. Without it pybuild, which runs first in a round, always follows BuildKit's."""
    if seconds > 0:
        os.sync()
        time.sleep(seconds)


def measure(tmp: Path, n: int, rounds: int, tools: list, rest: float = 0,
            cold_rounds: int = 1) -> dict:
    ctx = tmp / f"ctx-{n}"
    make_context(ctx, n)
    res: dict = {"files": n, "cold": {t.name: [] for t in tools},
                 "edit": {t.name: [] for t in tools}}
    for r in range(cold_rounds):
        for t in tools:
            if r and isinstance(t, Pybuild):
                t.fresh()
            settle(rest)
            res["cold"][t.name].append(t.build(ctx, cold=True))
        print(f"# {n} files, cold {r + 1}: " + ", ".join(
            f"{t.name} {res['cold'][t.name][-1]['s']:.2f}s" for t in tools), file=sys.stderr,
            flush=True)
    for r in range(rounds):
        edit(ctx, n, r)
        for t in tools:
            settle(rest)
            res["edit"][t.name].append(t.build(ctx, cold=False))
        print(f"# {n} files, round {r + 1}: " + ", ".join(
            f"{t.name} {res['edit'][t.name][-1]['s']:.2f}s" for t in tools), file=sys.stderr,
            flush=True)
    shutil.rmtree(ctx, ignore_errors=True)
    return res


def _span(xs: list[float]) -> str:
    if not xs:
        return "-"
    if len(xs) == 1:
        return f"{xs[0]:.2f} s"
    return f"{statistics.median(xs):.2f} s ({min(xs):.2f}–{max(xs):.2f})"


def _ratio(a: list[float], b: list[float]) -> str:
    return f"{statistics.median(a) / statistics.median(b):.2f}×" if a and b else "-"


def _mb(kib: int) -> str:
    return f"{kib / 1024:.0f} MB"


def table(results: list[dict]) -> str:
    rows = ["| files | one file edited, pybuild | BuildKit | ratio | cold pybuild | BuildKit | ratio "
            "| peak RSS pybuild (edit / cold) | BuildKit dockerd + client (edit / cold) |",
            "|---:|---|---|---|---|---|---|---|---|"]
    for r in results:
        pe = [x["s"] for x in r["edit"]["pybuild"]]
        be = [x["s"] for x in r["edit"].get("buildkit", [])]
        pc = [x["s"] for x in r["cold"]["pybuild"]]
        bc = [x["s"] for x in r["cold"].get("buildkit", [])]
        prss = (f"{_mb(max(x['rss_kib'] for x in r['edit']['pybuild']))} / "
                f"{_mb(max(x['rss_kib'] for x in r['cold']['pybuild']))}")
        brss = "-"
        if bc:
            e, c = r["edit"]["buildkit"], r["cold"]["buildkit"]
            brss = (f"{_mb(max(x['daemon_rss_kib'] for x in e))} + "
                    f"{_mb(max(x['rss_kib'] for x in e))} / "
                    f"{_mb(max(x['daemon_rss_kib'] for x in c))} + "
                    f"{_mb(max(x['rss_kib'] for x in c))}")
        rows.append(f"| {r['files']:,} | {_span(pe)} | {_span(be)} | {_ratio(pe, be)} | "
                    f"{_span(pc)} | {_span(bc)} | {_ratio(pc, bc)} | {prss} | {brss} |")
    return "\n".join(rows)


def steps_table(results: list[dict]) -> str:
    """Medians of the per-step times; `outside` = total - the steps' DONE times."""
    rows = ["| files | build | tool | total | load build context | COPY | RUN | exporting to image "
            "| outside these |", "|---:|---|---|---|---|---|---|---|---|"]
    for r in results:
        for case in ("cold", "edit"):
            for tool in ("pybuild", "buildkit"):
                runs = r[case].get(tool)
                if not runs:
                    continue
                runs = runs if isinstance(runs, list) else [runs]

                def med(key, runs=runs):
                    return statistics.median(x["steps"].get(key, 0.0) for x in runs)
                total = statistics.median(x["s"] for x in runs)
                ctx, cp, run, exp = med("context"), med("COPY"), med("RUN"), med("export")

                def cell(key, v, runs=runs):    # "–": no such vertex (older pybuild)
                    return f"{v:.1f} s" if any(key in x["steps"] for x in runs) else "–"
                rows.append(f"| {r['files']:,} | {'cold' if case == 'cold' else 'one file edited'} "
                            f"| {tool} | {total:.2f} s | {cell('context', ctx)} | {cp:.1f} s | "
                            f"{run:.1f} s | {cell('export', exp)} | "
                            f"{total - ctx - cp - run - exp:.2f} s |")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000",
                    help="context sizes in files, comma-separated (default 1000,10000,100000)")
    ap.add_argument("--rounds", type=int, default=3, help="one-file-edited builds per size")
    ap.add_argument("--cold-rounds", type=int, default=1, metavar="K",
                    help="cold builds per size and tool (default 1)")
    ap.add_argument("--settle", type=float, default=0, metavar="S",
                    help="sync and rest S seconds before every build of either tool (0: none)")
    ap.add_argument("--no-buildkit", action="store_true", help="pybuild only")
    ap.add_argument("--json", action="store_true",
                    help="print the raw results as JSON on stdout (the tables go to stderr)")
    a = ap.parse_args()
    try:
        sizes = [int(s.replace("_", "")) for s in a.sizes.split(",") if s]
    except ValueError:
        ap.error(f"--sizes: not a comma-separated list of numbers: {a.sizes!r}")
    if os.geteuid() != 0:
        raise SystemExit("edit_bench: needs root (pybuild's RUN, dockerd)")
    want_bk = not a.no_buildkit
    if want_bk and NO_DOCKER:
        raise SystemExit(f"edit_bench: BuildKit {NO_DOCKER}; or pass --no-buildkit")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))     # unwind: stop dockerd, clean up
    signal.signal(signal.SIGINT, signal.default_int_handler)    # ^C, also when started with &
    load0, started = Path("/proc/loadavg").read_text().split()[:3], time.gmtime()
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.strip()
    tmp = Path(tempfile.mkdtemp(prefix="edit-bench-"))
    results = []
    try:
        template = tmp / "busybox-store"
        make_busybox_store(template)
        bk = None
        with contextlib.ExitStack() as stack:
            if want_bk:
                tar = tmp / "busybox.tar"
                subprocess.run([*PYBUILD, "save", "-o", str(tar), "busybox:latest"], cwd=REPO,
                               env={**os.environ, "PYBUILD_ROOT": str(template)}, check=True)
                bk = BuildKit(tmp, stack.enter_context(private_dockerd()), tar)
            for k, n in enumerate(sizes):
                tools = [Pybuild(tmp, template, n)] + ([bk] if bk else [])
                results.append(measure(tmp, n, a.rounds, tools, a.settle, a.cold_rounds))
                for store in tools[0].stores:
                    shutil.rmtree(store, ignore_errors=True)
                if bk and k + 1 < len(sizes):       # room for the next size (the last goes with dockerd)
                    subprocess.run([*bk.cli, "builder", "prune", "-af"], check=False,
                                   stdout=subprocess.DEVNULL)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load1 = Path("/proc/loadavg").read_text().split()[:3]
    if a.json:      # the raw figures on stdout, the tables on stderr
        print(json.dumps({"commit": commit, "load": [load0, load1], "rounds": a.rounds,
                          "cold_rounds": a.cold_rounds,
                          "results": results}, indent=1))
        sys.stdout.flush()
        sys.stdout = sys.stderr
    print(f"commit {commit}, {time.strftime('%Y-%m-%d %H:%M UTC', started)}, "
          f"{a.rounds} rounds, {a.cold_rounds} cold, settle {a.settle:g} s; load {' '.join(load0)} before, "
          f"{' '.join(load1)} after\n")
    print(table(results))
    print()
    print(steps_table(results))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
