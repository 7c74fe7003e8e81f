#!/usr/bin/env python3
"""The fault harness at full size: mutated Dockerfiles, builds killed at random moments, builds
racing rmi/prune, malformed archives for `pybuild load` (tests/fault_harness.py; the suite runs
the same checks small in tests/grammar/test_fuzz_corpus.py and tests/e2e/test_faults.py).

    sudo python3 bench/faults.py --fuzz 100000 --kills 100 --races 25 --archives 500 [--seed N]

Each part runs only when its count is given (all four: --all). Prints every broken promise with
the seed and case that reproduce it, then a summary per part; exits 1 if any promise broke.
Kills, races and archives need root (overlay mounts, as `pybuild build` does).
"""
from __future__ import annotations

import argparse
import collections
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # busybox_fixture, ...
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo ahead of tests/

import fault_harness as fh
from busybox_fixture import copy_store, make_busybox_store

REPO = Path(__file__).resolve().parents[1]


def _kind(failure: str) -> str:
    """A failure line without its case numbers and inputs: what to count."""
    head = re.sub(r"seed=\S+ ?(case=\d+:? ?)?", "", failure.split(" (input ")[0])
    head = re.sub(r"/\S*|-[a-z0-9_]{8}\b", "X", head)
    return re.sub(r"\d+", "N", head)[:160]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fuzz", type=int, default=0, help="mutated Dockerfiles (in-process)")
    ap.add_argument("--kills", type=int, default=0, help="builds killed with SIGKILL")
    ap.add_argument("--races", type=int, default=0, help="rounds of each racing loop")
    ap.add_argument("--archives", type=int, default=0, help="malformed archives loaded")
    ap.add_argument("--all", action="store_true", help="100000 / 100 / 25 / 500")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--files", type=int, default=3000, help="files in the crash build's context")
    ap.add_argument("-v", "--verbose", action="store_true", help="print progress")
    args = ap.parse_args(argv)
    if args.all:
        args.fuzz, args.kills, args.races, args.archives = 100_000, 100, 25, 500
    if not (args.fuzz or args.kills or args.races or args.archives):
        ap.error("nothing to do: give --fuzz/--kills/--races/--archives N or --all")
    log = print if args.verbose else (lambda s: None)
    results: dict[str, tuple[int, list[str], float]] = {}

    if args.fuzz:
        t = time.monotonic()
        results["fuzz"] = (args.fuzz, fh.fuzz(args.fuzz, args.seed), time.monotonic() - t)
    if args.kills or args.races or args.archives:
        work = Path(tempfile.mkdtemp(prefix="pybuild-faults-", dir="/var/tmp"))
        try:
            template = work / "template"
            make_busybox_store(template)
            if args.kills:
                t = time.monotonic()
                root, ref = copy_store(template, work / "kills"), copy_store(template, work / "ref")
                ctx = fh.crash_context(work / "crash-ctx", files=args.files)
                results["kills"] = (args.kills, fh.kills(root, ref, ctx, args.kills, args.seed, log),
                                    time.monotonic() - t)
            if args.races:
                t = time.monotonic()
                root = copy_store(template, work / "races")
                results["races"] = (args.races, fh.races(root, work / "race-ctx", args.races,
                                                         args.seed, log), time.monotonic() - t)
            if args.archives:
                t = time.monotonic()
                root = copy_store(template, work / "archives")
                results["archives"] = (args.archives, fh.archives(root, work / "arch", args.archives,
                                                                  args.seed, log), time.monotonic() - t)
        finally:
            fh.unmount_under(work)
            shutil.rmtree(work, ignore_errors=True)

    broken = 0
    for _n, failures, _secs in results.values():
        for f in failures:
            print(f)
        broken += len(failures)
    print()
    for part, (n, failures, secs) in results.items():
        print(f"{part:9s} {n:7d} cases  {len(failures):5d} broken promises  {secs:7.1f} s")
        for kind, count in collections.Counter(map(_kind, failures)).most_common(8):
            print(f"          {count:5d} x {kind}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
