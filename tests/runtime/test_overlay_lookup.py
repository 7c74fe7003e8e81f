"""cache.overlayfmt.lookup / dir_layers against real overlayfs: for every path of a stack of
layer dirs (whiteouts and opaque dirs on middle components, a file hiding a dir, an opaque
layer root, a user's `user.overlay.opaque`), lookup says what the mounted view shows."""
from __future__ import annotations

import os
import stat

from rootfs_helpers import requires_root

from cache.overlayfmt import dir_layers, lookup, make_whiteout, set_opaque
from runtime.overlay import mounted

pytestmark = requires_root


def _tree(d, spec):
    d.mkdir()
    for name, kind in spec:
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if kind == "dir":
            p.mkdir(exist_ok=True)
        elif kind == "wh":
            make_whiteout(p)
        elif kind == "opq":
            p.mkdir(exist_ok=True)
            set_opaque(p)
        elif kind == "useropq":
            p.mkdir(exist_ok=True)
            os.setxattr(p, "user.overlay.opaque", b"y")
        else:
            p.write_text(kind)
    return d


def test_lookup_is_what_overlay_shows(tmp_path):
    low = _tree(tmp_path / "low", [("a/b/c", "low"), ("a/b/d", "low"), ("e/f", "low"),
                                    ("g/h/i", "low"), ("k/l", "low"), ("u/v", "low"),
                                    ("top", "low")])
    mid = _tree(tmp_path / "mid", [("a/b", "wh"), ("e", "opq"), ("e/x", "mid"), ("g/h", "mid"),
                                    ("k/m", "mid"), ("u", "useropq"), ("u/w", "mid")])
    set_opaque(mid)                      # overlay ignores an opaque marker on a layer's root
    top = _tree(tmp_path / "top", [("a/b", "dir"), ("a/b/n", "top"), ("g", "dir"),
                                    ("k", "opq"), ("k/z", "top")])
    layers = [top, mid, low]
    paths = ["a", "a/b", "a/b/c", "a/b/d", "a/b/n", "e", "e/f", "e/x", "g", "g/h", "g/h/i",
             "k", "k/l", "k/m", "k/z", "u", "u/v", "u/w", "top", "nope", "nope/x"]
    with mounted(layers) as m:
        for p in paths:
            try:
                want = os.lstat(m / p)
            except (FileNotFoundError, NotADirectoryError):
                want = None
            got = lookup(layers, p)
            assert (got is None) == (want is None), p
            if got is not None:
                assert stat.S_IFMT(got.st_mode) == stat.S_IFMT(want.st_mode), p
                if stat.S_ISREG(got.st_mode):
                    assert got.st_size == want.st_size, p
    assert lookup([os.fsencode(d) for d in layers], b"a/b/c") is None     # bytes work too
    assert dir_layers(layers, "e") == [os.fspath(mid)]
    assert dir_layers(layers, "u") == [os.fspath(mid), os.fspath(low)]
    assert dir_layers(layers, "top") == [] and dir_layers(layers, "") == [os.fspath(d) for d in layers]
