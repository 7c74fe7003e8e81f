"""builder.codeid: pybuild's code identity survives a dangling `*.py` link in a package dir
(an editor's or a half-removed module), which counts as no file."""
from __future__ import annotations

import os

from builder import codeid


def test_a_dangling_py_link_counts_as_absent(tmp_path):
    (tmp_path / "mod.py").write_text("x = 1\n")
    os.symlink("gone.py", tmp_path / "stale.py")    # not a dot name: the editor skip misses it
    out: list = []
    codeid._scan(str(tmp_path), "pkg", out)
    assert [e[0] for e in out] == ["pkg/mod.py"]
