"""Go's path.Clean on `/` paths has two homes only because cache/ and runtime/ may not import
grammar/ (tests/test_imports.py): grammar.gopath.clean (Go's path package in full, for Dockerfile
values) and cache.fspath.clean / clean_abs (paths inside a root, for cache and runtime). They
must agree on every rooted path."""
from __future__ import annotations

import random

from cache import fspath
from grammar import gopath
from runtime.containers import config

# Go's path.Clean test table (src/path/path_test.go), rooted entries, plus a few of our own
ROOTED = ["/", "/abc", "/abc/def", "/a/b/c", "//abc", "///abc", "//abc//", "/abc/", "/abc//def//ghi",
          "/./", "/abc/./def", "/./abc/def", "/..", "/../abc", "/abc/def/ghi/../jkl",
          "/abc/def/../ghi/../jkl", "/abc/def/..", "/abc/def/../..", "/abc/def/../../..",
          "/abc/def/../../../ghi/jkl/../../../mno", "/abc/./../def", "/abc//./../def",
          "/abc/../../././../def", "/a/../../b/./c/", "/.../..../", "/a b/ c /"]


def test_the_two_cleans_agree_on_rooted_paths():
    rng = random.Random(8)
    fuzz = ["/" + "/".join(rng.choice(["a", "b", "..", ".", "", "c."]) for _ in range(rng.randint(0, 7)))
            for _ in range(2000)]
    for p in ROOTED + fuzz:
        assert fspath.clean_abs(p) == gopath.clean(p), p
        assert fspath.clean(p) == [c for c in gopath.clean(p).split("/") if c], p


def test_run_w_is_cleaned_as_go_does():
    assert config.workdir("//srv/./app/../data/", {}) == "/srv/data"
    assert config.workdir(None, {"WorkingDir": "/.."}) == "/"
