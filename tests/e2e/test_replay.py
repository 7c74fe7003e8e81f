"""A fully cached rebuild replays its record (builder.replay) - and never when it would be wrong.

Each case builds once (full, writes the record), once more (a replay), then changes one thing
a build depends on and checks the third build sees it exactly as a full build would.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

MULTI = """\
FROM busybox AS a
RUN echo a > /a
FROM busybox
COPY --from=a /a /a
COPY src/ /src/
ARG V=1
RUN echo $V > /v
CMD ["cat", "/a"]
"""


@pytest.fixture
def ctx(tmp_path):
    c = tmp_path / "ctx"
    (c / "src" / "sub").mkdir(parents=True)
    (c / "src" / "f").write_text("one\n")
    (c / "src" / "sub" / "g").write_text("g\n")
    (c / "Dockerfile").write_text(MULTI)
    return c


def image_id(pybuild, ctx, *args, ok=True):
    r = pybuild("build", "--progress", "plain", "-t", "app", *args, str(ctx))
    if ok:
        assert r.returncode == 0, r.stderr
    return r


def built(pybuild, ctx, *args) -> tuple[str, str]:
    """(image ID, progress output) of a build."""
    r = image_id(pybuild, ctx, *args)
    return r.stderr.split(" writing image ")[1].split()[0], r.stderr  # in `exporting to image`


def steps(out: str) -> list[str]:
    """`#N name` lines and their outcomes, without numbers or timings."""
    names = {}
    result = []
    for line in out.splitlines():
        if not line.startswith("#"):
            continue
        num, _, rest = line.partition(" ")
        if num not in names:
            names[num] = rest
        elif (rest == "CACHED" or rest.startswith("DONE")) and not names[num].startswith(
                ("[internal]", "exporting")):
            result.append(f"{names[num]} -> {rest.split()[0]}")
    return sorted(result)


def _cached_only(out: str) -> bool:
    """Every step but FROM reported CACHED, and there were such steps (MULTI has four; the
    [internal] loads and the export are DONE)."""
    done = [s for s in steps(out) if "FROM" not in s]
    return len(done) == 4 and all(s.endswith("CACHED") for s in done)


def test_second_build_replays_with_the_same_output_and_id(busybox_root, pybuild, ctx):
    first, out1 = built(pybuild, ctx)
    second, out2 = built(pybuild, ctx)
    assert second == first
    assert (busybox_root / "replay").is_dir()
    want = [s.replace("-> DONE", "-> CACHED") if "FROM" not in s else s for s in steps(out1)]
    assert steps(out2) == want
    assert _cached_only(out2)
    assert "naming to docker.io/library/app done" in out2


def test_replay_loads_neither_front_end_nor_solver(busybox_root, ctx):
    """What makes it fast: no lark, no AST, no planner, no argparse on a replay."""
    code = ("import sys; from builder.cli import main; rc = main(['build', '--progress', 'plain',"
            f" '-t', 'app', {str(ctx)!r}]);"
            "print(rc, sorted(m for m in ('lark', 'grammar.ast', 'builder.solve', 'argparse',"
            " 'hashlib') if m in sys.modules))")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=False) for _ in range(2)]
    assert runs[0].stdout.split()[0] == "0", runs[0].stderr
    assert "grammar.ast" in runs[0].stdout  # the first build is a full one
    assert runs[1].stdout.strip() == "0 []", runs[1].stderr


def test_content_change_with_same_size_and_mtime_is_seen(busybox_root, pybuild, ctx):
    first, _ = built(pybuild, ctx)
    built(pybuild, ctx)
    f = ctx / "src" / "f"
    st = f.stat()
    f.write_text("two\n")  # same size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the old mtime: only ctime tells
    changed, out = built(pybuild, ctx)
    assert changed != first
    assert "COPY src/ /src/\n" in out and "#" in out
    with_two, _ = built(pybuild, ctx)
    assert with_two == changed


def test_touch_keeps_the_image(busybox_root, pybuild, ctx):
    first, _ = built(pybuild, ctx)
    built(pybuild, ctx)
    time.sleep(0.01)
    os.utime(ctx / "src" / "f")
    again, out = built(pybuild, ctx)
    assert again == first
    assert _cached_only(out)


@pytest.mark.parametrize("change", ["add", "delete", "rename", "nested-add", "symlink-swap"])
def test_tree_changes_are_seen(busybox_root, pybuild, ctx, change):
    first, _ = built(pybuild, ctx)
    built(pybuild, ctx)
    src = ctx / "src"
    if change == "add":
        (src / "new").write_text("x")
    elif change == "delete":
        (src / "f").unlink()
    elif change == "rename":
        (src / "f").rename(src / "h")
    elif change == "nested-add":
        (src / "sub" / "deeper").mkdir()
    else:
        (ctx / "other").mkdir()
        (ctx / "other" / "x").write_text("x")
        os.rename(src, ctx / "old-src")
        os.symlink("other", src)
    changed, _ = built(pybuild, ctx)
    assert changed != first


def test_dockerfile_and_dockerignore_and_args(busybox_root, pybuild, ctx):
    first, _ = built(pybuild, ctx)
    built(pybuild, ctx)
    assert built(pybuild, ctx, "--build-arg", "V=2")[0] != first
    assert built(pybuild, ctx)[0] == first
    (ctx / ".dockerignore").write_text("src/sub\n")
    ignored, _ = built(pybuild, ctx)
    assert ignored != first
    (ctx / ".dockerignore").unlink()
    assert built(pybuild, ctx)[0] == first
    (ctx / "Dockerfile").write_text(MULTI.replace("cat", "head"))
    assert built(pybuild, ctx)[0] != first


def test_source_date_epoch_is_an_input(busybox_root, pybuild, ctx, monkeypatch):
    first, _ = built(pybuild, ctx)
    built(pybuild, ctx)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert built(pybuild, ctx)[0] != first


def test_base_image_retagged(busybox_root, pybuild, ctx, tmp_path):
    first, _ = built(pybuild, ctx)
    built(pybuild, ctx)
    other = tmp_path / "other"
    other.mkdir()
    (other / "Dockerfile").write_text("FROM busybox\nRUN echo new > /new\n")
    r = pybuild("build", "--progress", "plain", "-t", "busybox", str(other))
    assert r.returncode == 0, r.stderr
    assert built(pybuild, ctx)[0] != first


def test_removed_image_and_pruned_cache_rebuild(busybox_root, pybuild, ctx):
    first, _ = built(pybuild, ctx)
    built(pybuild, ctx)
    assert pybuild("rmi", "app").returncode == 0
    again, _ = built(pybuild, ctx)
    assert again == first
    assert pybuild("images", "-q").stdout.strip()  # the image is back in the list
    cache = busybox_root / "cachekeys.json"
    cache.write_text("{}")  # every cache entry gone: the steps must run again
    rebuilt, out = built(pybuild, ctx)
    assert rebuilt == first  # reproducible
    assert "RUN echo 1 > /v" in out and any(s.endswith("DONE") for s in steps(out) if "RUN" in s)


def test_new_tag_quiet_iidfile_and_json(busybox_root, pybuild, ctx, tmp_path):
    first, _ = built(pybuild, ctx)
    built(pybuild, ctx)
    iid = tmp_path / "iid"
    r = pybuild("build", "-q", "--iidfile", str(iid), "-t", "app", str(ctx))
    assert r.returncode == 0 and r.stdout.strip() == first and iid.read_text() == first
    r = pybuild("build", "--progress", "json", "-t", "app", str(ctx))
    events = [json.loads(x) for x in r.stderr.splitlines() if x.startswith("{")]
    assert {e["status"] for e in events} == {"started", "progress", "cached", "done"}
    full = pybuild("build", "--no-cache", "--progress", "tty", "-t", "app", str(ctx)).stderr
    replayed = pybuild("build", "--progress", "tty", "-t", "app", str(ctx)).stderr
    # tty into a pipe: plain lines, as docker's CLI gives; the replay's say the same
    assert "\x1b[" not in replayed and replayed.startswith("#1 [internal] load build definition")
    assert steps(replayed) == [s.replace("-> DONE", "-> CACHED") for s in steps(full)], replayed
    r = pybuild("build", "--progress", "plain", "-t", "app", "-t", "app:v2", str(ctx))
    assert r.returncode == 0
    assert first in pybuild("inspect", "app:v2").stdout


def test_touch_replays_and_setcap_or_chmod_do_not(busybox_root, ctx, pybuild):
    """A touch keeps the replay (bytes re-hashed); a chmod or a new file capability is a change."""
    code = ("import sys; from builder.cli import main; rc = main(['build', '--progress', 'plain',"
            f" '-t', 'app', {str(ctx)!r}]); print(rc, 'grammar.ast' in sys.modules)")

    def run():
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
        assert r.stdout.split()[0] == "0", r.stderr
        return r.stdout.split()[1] == "False", r.stderr.split(" writing image ")[1].split()[0]

    _, first = run()
    assert run() == (True, first)
    time.sleep(0.01)
    os.utime(ctx / "src" / "f")
    assert run() == (True, first)  # replayed after a touch
    os.chmod(ctx / "src" / "f", 0o600)
    replayed, chmodded = run()
    assert not replayed and chmodded != first
    os.setxattr(ctx / "src" / "f", "security.capability",
                bytes.fromhex("0100000200200000000000000000000000000000"))
    replayed, capped = run()
    assert not replayed and capped != chmodded


@pytest.mark.parametrize("new_file", ["grammar/zz_new.py", "cache/zz_newpkg/__init__.py"])
def test_a_new_module_invalidates_records_and_parse_cache(busybox_root, ctx, tmp_path,
                                                          monkeypatch, new_file):
    """pybuild's code identity is found by listing its packages: a module that did not exist
    when a record or a parsed Dockerfile was kept (in a package or a new subpackage) makes
    both miss, without anyone adding it to a list."""
    code_copy = tmp_path / "code"
    for pkg in ("builder", "grammar", "cache", "runtime"):
        shutil.copytree(REPO / pkg, code_copy / pkg,
                        ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # a parse cache of its own
    code = ("import sys; from builder.cli import main; rc = main(sys.argv[1:]);"
            "print(rc, 'grammar.ast' in sys.modules, 'lark' in sys.modules)")

    def run(*flags):
        """(replayed, parse cache hit) of a build by the copy of pybuild's code."""
        r = subprocess.run([sys.executable, "-c", code, "build", "--progress", "plain", *flags,
                            "-t", "app", str(ctx)], capture_output=True, text=True,
                           cwd=code_copy, check=False)
        rc, ast, lark = r.stdout.split()
        assert rc == "0", r.stderr
        return ast == "False", lark == "False"

    run()
    assert run() == (True, True)  # replayed
    assert run("--no-cache") == (False, True)  # a full build with the parsed Dockerfile
    new = code_copy / new_file
    new.parent.mkdir(exist_ok=True)
    new.write_text("# a module nobody imports yet\n")
    assert run() == (False, False)  # neither the record nor the parsed Dockerfile is trusted
    assert run() == (True, True)  # and both are kept again for the new code
