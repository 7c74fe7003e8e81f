#!/usr/bin/env python3
"""A/B of `pybuild run --rm --network none busybox true` between checkouts, interleaved (A B A B
...) so that the load other processes put on the machine hits every variant alike.

    sudo /work/main/.venv/bin/python bench/run_ab.py -n 40 A=/tmp/old-checkout B=.
    (an old checkout: mkdir /tmp/old && git archive 600ceb6 | tar -x -C /tmp/old)

Each checkout runs through the launcher install.sh would write for it (builder/launcher.py's,
with its import index, where the checkout has one; the plain `python -I -S` one before), on one
busybox store. Per variant: the wall-clock median and p10, the CPU time (user + sys of the
whole process tree, from wait4) median and mean, and the syscalls of one run (`strace -c -f`).
CPU time and syscalls change far less with the machine's load than wall time: read those first
on a busy machine.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))     # busybox_fixture
sys.path.insert(0, str(REPO))

from busybox_fixture import make_busybox_store  # noqa: E402

ARGV = ["run", "--rm", "--network", "none", "busybox", "true"]


def launcher(checkout: Path, where: Path) -> Path:
    """The launcher install.sh writes for `checkout` (older checkouts: the plain one)."""
    script = where / "pybuild"
    if (checkout / "builder" / "launcher.py").exists():
        subprocess.run([sys.executable, "-m", "builder.launcher", str(script)], cwd=checkout,
                       check=True, stdout=subprocess.DEVNULL)
    else:
        site = sysconfig.get_paths()["purelib"]
        script.write_text(f"#!{sys.executable} -IS\nimport sys\n"
                          f"sys.path[:0] = [{str(checkout)!r}, {site!r}]\n"
                          "from builder.cli import exit_now, main\nexit_now(main())\n")
        script.chmod(0o755)
    return script


def syscalls(argv: list[str], env: dict) -> int | None:
    if not shutil.which("strace"):
        return None
    r = subprocess.run(["strace", "-c", "-f", "-o", "/dev/stdout", *argv], env=env,
                       capture_output=True, text=True, check=False)
    total = [ln for ln in r.stdout.splitlines() if ln.rstrip().endswith("total")]
    return int(total[-1].split()[3]) if total else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=40, help="rounds (default 40), after 2 warm-up rounds")
    ap.add_argument("variants", nargs="+", metavar="NAME=CHECKOUT")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (namespaces, overlayfs)")
    base = Path(tempfile.mkdtemp(prefix="run-ab-"))
    try:
        make_busybox_store(base / "root")
        env = dict(os.environ, PYBUILD_ROOT=str(base / "root"))
        variants = []
        for v in args.variants:
            name, _, path = v.partition("=")
            (base / name).mkdir()
            variants.append((name, [str(launcher(Path(path).resolve(), base / name)), *ARGV]))
        times: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in variants}
        for rnd in range(args.n + 2):
            for name, argv in variants:
                t = time.perf_counter()
                p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
                _, status, ru = os.wait4(p.pid, 0)
                wall = (time.perf_counter() - t) * 1000
                if status != 0:
                    raise SystemExit(f"{name}: exit status {status}")
                if rnd >= 2:
                    times[name].append((wall, (ru.ru_utime + ru.ru_stime) * 1000))
        load = os.getloadavg()
        print(f"{args.n} rounds, 1-min load at the end {load[0]:.2f}\n")
        print("| variant | wall median ms | p10 | CPU median ms | CPU mean | syscalls |")
        print("|---|---|---|---|---|---|")
        for name, argv in variants:
            w = sorted(x for x, _ in times[name])
            c = [x for _, x in times[name]]
            print(f"| {name} | {statistics.median(w):.1f} | {w[len(w) // 10]:.1f} | "
                  f"{statistics.median(c):.1f} | {statistics.mean(c):.1f} | "
                  f"{syscalls(argv, env) or '-'} |")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
