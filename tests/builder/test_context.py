"""builder.context: selecting COPY sources the BuildKit way and hashing them for the cache key."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from builder import statid
from builder.context import BuildContext, SourceTree, go_match, resolve_in_root
from builder.errors import BuildError
from cache import sealed


def _tree(root: Path, files: dict[str, str | None]) -> Path:
    """Create files ({rel: text}); a None value makes a directory."""
    for rel, text in files.items():
        p = root / rel
        if text is None:
            p.mkdir(parents=True, exist_ok=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
    return root


def _names(sel):
    return [(s.rel, s.name, s.is_dir) for s in sel]


def _walked(ctx, sel):
    return [e.rel for s in sel for e in ctx.walk(s)]


@pytest.fixture
def ctx_dir(tmp_path):
    return _tree(tmp_path / "ctx", {
        "a.txt": "a", "b.txt": "b", "c.md": "c", "*star": "lit",
        "src/main.go": "m", "src/util/u.go": "u", "src/util/u_test.go": "t",
        "docs/README.md": "r", "docs/api.md": "api", "empty": None,
    })


def test_go_match_follows_filepath_match():
    assert go_match("*.txt", "a.txt") and not go_match("*.txt", "d/a.txt")
    assert go_match("?.txt", "a.txt") and not go_match("?.txt", "ab.txt")
    assert go_match("[ab].txt", "b.txt") and not go_match("[^ab].txt", "a.txt")
    assert go_match("[a-c]x", "bx") and go_match(r"\*x", "*x") and not go_match(r"\*x", "ax")
    with pytest.raises(BuildError, match="syntax error in pattern"):
        go_match("[", "x")


def test_literal_wildcard_and_directory_sources(ctx_dir):
    ctx = BuildContext(ctx_dir, None)
    assert _names(ctx.select(["a.txt"])) == [("a.txt", "a.txt", False)]
    assert _names(ctx.select(["*.txt"])) == [("a.txt", "a.txt", False), ("b.txt", "b.txt", False)]
    assert _names(ctx.select(["src"])) == [("src", "src", True)]
    assert _names(ctx.select(["src/*/u*.go"])) == [
        ("src/util/u.go", "u.go", False), ("src/util/u_test.go", "u_test.go", False)]
    # escapes only mean something in a pattern; a literal path is looked up as written
    assert _names(ctx.select([r"\*sta?"])) == [("*star", "*star", False)]
    assert _names(ctx.select(["[*]star"])) == [("*star", "*star", False)]
    with pytest.raises(BuildError, match="not found"):
        ctx.select([r"\*star"])
    assert _names(ctx.select(["[ab].txt"])) == [("a.txt", "a.txt", False), ("b.txt", "b.txt", False)]
    # a directory matched by a wildcard is selected whole, not descended into
    assert _names(ctx.select(["s*"])) == [("src", "src", True)]
    assert _walked(ctx, ctx.select(["src"])) == ["", "main.go", "util", "util/u.go",
                                                  "util/u_test.go"]


def test_leading_slash_and_dotdot_are_clamped_to_the_context(ctx_dir):
    ctx = BuildContext(ctx_dir, None)
    for src in ("/a.txt", "../../a.txt", "src/../../a.txt", "./a.txt"):
        assert _names(ctx.select([src])) == [("a.txt", "a.txt", False)], src
    assert _names(ctx.select([".", "/", ".."])) == [("", "ctx", True)] * 3


def test_empty_wildcard_is_allowed_but_a_missing_file_is_not(ctx_dir):
    ctx = BuildContext(ctx_dir, None)
    assert ctx.select(["*.nothing"]) == []
    with pytest.raises(BuildError) as e:
        ctx.select(["nope.txt"])
    assert str(e.value) == 'failed to compute cache key: "/nope.txt": not found'
    with pytest.raises(BuildError, match='"/src/nope": not found'):
        ctx.select(["./src/../src/nope"])
    with pytest.raises(BuildError, match="not found"):
        ctx.select(["*.nothing"], allow_empty_wildcard=False)


def test_top_level_symlink_is_followed_inside_the_context(ctx_dir, tmp_path):
    (tmp_path / "secret").write_text("host secret")
    os.symlink("a.txt", ctx_dir / "rel-link")
    os.symlink("/a.txt", ctx_dir / "abs-link")        # absolute: relative to the context
    os.symlink("src", ctx_dir / "dir-link")
    os.symlink("../secret", ctx_dir / "escape")        # would leave the context
    os.symlink(str(tmp_path / "secret"), ctx_dir / "escape-abs")
    ctx = BuildContext(ctx_dir, None)
    assert _names(ctx.select(["rel-link", "abs-link"])) == [
        ("a.txt", "rel-link", False), ("a.txt", "abs-link", False)]
    assert _names(ctx.select(["dir-link"])) == [("src", "dir-link", True)]
    for name in ("escape", "escape-abs"):
        with pytest.raises(BuildError, match="not found"):
            ctx.select([name])
    # a symlink inside a selected directory is listed as a link, not followed
    os.symlink("../a.txt", ctx_dir / "src" / "inner")
    entries = {e.rel: e for e in ctx.walk(ctx.select(["src"])[0])}
    assert os.path.islink(entries["inner"].path)


def test_resolve_in_root_never_leaves_the_root(tmp_path):
    root = tmp_path / "r"
    (root / "etc").mkdir(parents=True)
    os.symlink("/etc", root / "app")
    os.symlink("../../../../..", root / "up")
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    r = str(root)
    assert resolve_in_root(r, "/app/x") == r + "/etc/x"
    assert resolve_in_root(r, "up/etc") == r + "/etc"
    assert resolve_in_root(r, "/../../etc/passwd") == r + "/etc/passwd"
    assert resolve_in_root(r, "app", follow_final=False) == r + "/app"
    with pytest.raises(BuildError, match="too many levels of symbolic links"):
        resolve_in_root(r, "loop1")


def test_dockerignore_hides_files_everywhere(ctx_dir):
    (ctx_dir / ".dockerignore").write_text("# comment\n*.md\ndocs\nsrc/**/*_test.go\n")
    ctx = BuildContext(ctx_dir, None)
    with pytest.raises(BuildError, match='"/c.md": not found'):
        ctx.select(["c.md"])
    with pytest.raises(BuildError, match='"/docs": not found'):
        ctx.select(["docs"])
    assert _names(ctx.select(["*.md"])) == []
    assert _walked(ctx, ctx.select(["src"])) == ["", "main.go", "util", "util/u.go"]
    everything = _walked(ctx, ctx.select(["."]))
    assert "docs" not in everything and "c.md" not in everything
    assert ".dockerignore" in everything and "a.txt" in everything


def test_dockerignore_exceptions_reinclude_below_an_ignored_dir(ctx_dir):
    (ctx_dir / ".dockerignore").write_text("docs\n!docs/README.md\n")
    ctx = BuildContext(ctx_dir, None)
    assert _walked(ctx, ctx.select(["docs"])) == ["", "README.md"]
    assert _names(ctx.select(["docs/README.md"])) == [("docs/README.md", "README.md", False)]
    with pytest.raises(BuildError, match="not found"):
        ctx.select(["docs/api.md"])
    walked = _walked(ctx, ctx.select(["."]))
    assert walked.index("docs") + 1 == walked.index("docs/README.md")
    assert "docs/api.md" not in walked


def test_dockerfile_specific_ignore_file_wins(ctx_dir, tmp_path):
    (ctx_dir / ".dockerignore").write_text("a.txt\n")
    df_dir = tmp_path / "df"
    df_dir.mkdir()
    (df_dir / "app.Dockerfile").write_text("FROM scratch\n")
    (df_dir / "app.Dockerfile.dockerignore").write_text("b.txt\n")
    ctx = BuildContext(ctx_dir, df_dir / "app.Dockerfile")
    assert ctx.ignore_file == df_dir / "app.Dockerfile.dockerignore"
    assert _names(ctx.select(["a.txt"])) == [("a.txt", "a.txt", False)]
    with pytest.raises(BuildError, match="not found"):
        ctx.select(["b.txt"])
    # without the specific file, the context's .dockerignore applies
    ctx2 = BuildContext(ctx_dir, df_dir / "other.Dockerfile")
    with pytest.raises(BuildError, match="not found"):
        ctx2.select(["a.txt"])


def test_bad_dockerignore_is_one_clear_error(ctx_dir):
    (ctx_dir / ".dockerignore").write_text("!\n")
    with pytest.raises(BuildError, match=r'\.dockerignore: illegal exclusion pattern: "!"'):
        BuildContext(ctx_dir, None)


def test_exclude_patterns_are_relative_to_each_source(ctx_dir):
    ctx = BuildContext(ctx_dir, None)
    sel = ctx.select(["src"], ["**/*_test.go"])
    assert _walked(ctx, sel) == ["", "main.go", "util", "util/u.go"]
    sel = ctx.select(["."], ["*/*.md", "*.txt"])
    walked = _walked(ctx, sel)
    assert "docs" in walked and "docs/README.md" not in walked and "a.txt" not in walked
    assert "src/main.go" in walked
    # exclude a directory entirely, with an exception re-including one file below it
    sel = ctx.select(["."], ["src", "!src/util/u.go"])
    assert [w for w in _walked(ctx, sel) if w.startswith("src")] == ["src", "src/util",
                                                                     "src/util/u.go"]


def test_parents_selects_from_the_root_or_the_pivot(ctx_dir):
    ctx = BuildContext(ctx_dir, None)
    sel = ctx.select(["src/util/u.go"], parents=True)
    assert _names(sel) == [("", "ctx", True)]
    assert _walked(ctx, sel) == ["", "src", "src/util", "src/util/u.go"]
    sel = ctx.select(["src/./util/u.go"], parents=True)
    assert _walked(ctx, sel) == ["", "util", "util/u.go"]
    sel = ctx.select(["src/*/*_test.go"], parents=True)
    assert _walked(ctx, sel) == ["", "src", "src/util", "src/util/u_test.go"]
    with pytest.raises(BuildError, match='"/src/missing.go": not found'):
        ctx.select(["src/missing.go"], parents=True)


def test_digest_ignores_mtime_and_owner_of_the_context(ctx_dir):
    ctx = BuildContext(ctx_dir, None)
    d0 = ctx.digest(ctx.select(["."]))
    os.utime(ctx_dir / "a.txt", (1, 1))
    os.chown(ctx_dir / "b.txt", 1234, 1234)  # the context is sent as 0:0
    assert BuildContext(ctx_dir, None).digest(BuildContext(ctx_dir, None).select(["."])) == d0


@pytest.mark.parametrize("change", ["content", "mode", "rename", "add", "symlink", "setuid",
                                    "hardlink"])
def test_digest_changes_when_the_copy_would(ctx_dir, change):
    os.symlink("a.txt", ctx_dir / "link")
    ctx = BuildContext(ctx_dir, None)
    before = ctx.digest(ctx.select(["."]))
    if change == "content":
        (ctx_dir / "a.txt").write_text("A")      # same size, new bytes
    elif change == "mode":
        os.chmod(ctx_dir / "a.txt", 0o600)
    elif change == "rename":
        os.rename(ctx_dir / "b.txt", ctx_dir / "bb.txt")
    elif change == "add":
        (ctx_dir / "empty" / "new").write_text("")
    elif change == "symlink":
        os.unlink(ctx_dir / "link")
        os.symlink("b.txt", ctx_dir / "link")
    elif change == "setuid":
        os.chmod(ctx_dir / "a.txt", 0o4644)
    elif change == "hardlink":
        os.unlink(ctx_dir / "b.txt")
        os.link(ctx_dir / "a.txt", ctx_dir / "b.txt")
        (ctx_dir / "b.txt").chmod(0o644)
    after = BuildContext(ctx_dir, None)
    assert after.digest(after.select(["."])) != before


def test_digest_of_a_stage_rootfs_counts_owners(tmp_path):
    root = _tree(tmp_path / "rootfs", {"f": "x"})
    tree = SourceTree(root)
    d0 = tree.digest(tree.select(["f"]))
    os.chown(root / "f", 1000, 1000)
    assert tree.digest(tree.select(["f"])) != d0


def test_stat_cache_makes_touch_cheap_and_content_changes_visible(ctx_dir, tmp_path):
    cache = tmp_path / "cache" / "stat.json"
    old = time.time() - 10
    for p in ctx_dir.rglob("*"):
        os.utime(p, (old, old), follow_symlinks=False)
    time.sleep(0.06)  # ctime of fresh files must age past the racy window
    ctx = BuildContext(ctx_dir, None, stat_cache=cache)
    d0 = ctx.digest(ctx.select(["."]))
    memo = sealed.loads(cache.read_bytes())["files"]
    a = str(ctx_dir / "a.txt")
    assert memo[a][1] == "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"
    os.utime(ctx_dir / "a.txt")                      # touch
    time.sleep(0.06)
    ctx = BuildContext(ctx_dir, None, stat_cache=cache)
    assert ctx.digest(ctx.select(["."])) == d0
    assert sealed.loads(cache.read_bytes())["files"][a][0][statid.MTIME] == os.stat(a).st_mtime_ns
    (ctx_dir / "a.txt").write_text("Z")
    ctx = BuildContext(ctx_dir, None, stat_cache=cache)
    assert ctx.digest(ctx.select(["."])) != d0


def test_a_corrupt_stat_cache_is_ignored(ctx_dir, tmp_path):
    cache = tmp_path / "stat.json"
    cache.write_text("{not json")
    ctx = BuildContext(ctx_dir, None, stat_cache=cache)
    plain = BuildContext(ctx_dir, None)
    assert ctx.digest(ctx.select(["."])) == plain.digest(plain.select(["."]))


def test_missing_context_dir_is_a_build_error(tmp_path):
    with pytest.raises(BuildError, match="unable to prepare context"):
        BuildContext(tmp_path / "nope", None)


@pytest.mark.parametrize("ignore", [True, False], ids=["dockerignore", "plain"])
def test_a_failed_replays_lstats_stand_in_for_the_walks(tmp_path, ignore):
    """builder.replay hands the lstats of its failed check to the full build's walk: the key,
    listing and observations are the ones of a walk that stats everything itself, and each
    lstat handed over is taken (none is made twice)."""
    ctx_dir = tmp_path / "ctx"
    (ctx_dir / "sub" / "deep").mkdir(parents=True)
    for rel in ("a.txt", "sub/b.txt", "sub/deep/c.txt"):
        (ctx_dir / rel).write_text(rel)
    os.symlink("a.txt", ctx_dir / "link")
    if ignore:      # the walk that hides paths, else the one that hides none
        (ctx_dir / ".dockerignore").write_text("*.log\n")
        (ctx_dir / "x.log").write_text("ignored")
    results = []
    for handed in (False, True):
        ctx = BuildContext(ctx_dir, None)
        ctx.observed = {}
        ctx.observe = lambda path, st, ctx=ctx: ctx.observed.__setitem__(path, statid.identity(st))
        if handed:
            ctx.prestat = {str(p): os.lstat(p) for p in [ctx_dir, *ctx_dir.rglob("*")]
                           if p.name != "x.log"}
        listing: dict = {}
        results.append((ctx.digest(ctx.select(["."]), listing), listing, ctx.observed))
        if handed:
            assert ctx.prestat == {}
    assert results[0] == results[1]
