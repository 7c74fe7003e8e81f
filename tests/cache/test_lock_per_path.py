"""cache.atomic.Lock is one object per lock file per process: two users of one file in one
process (a Store and the replay recorder on `<root>/lock`) nest instead of deadlocking on flock."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_two_locks_on_one_file_nest_in_one_process(tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink("real", tmp_path / "alias")   # the same file by another name is the same lock
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r})\nfrom cache import atomic\n"
            f"a = atomic.Lock({str(tmp_path / 'real' / 'lock')!r})\n"
            f"b = atomic.Lock({str(tmp_path / 'alias' / 'lock')!r})\n"
            "with a.held(), b.held():\n    print('nested', flush=True)\n"
            "print(a is b)\n")
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=20, check=False)
    except subprocess.TimeoutExpired:
        raise AssertionError("a second Lock on the same file deadlocked its own process") from None
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["nested", "True"]
