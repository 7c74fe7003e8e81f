"""The context key a directory at a time (builder.context.SourceTree._digest_dirs: a selected
directory that hides nothing, or only what .dockerignore patterns without exceptions match,
takes each unchanged directory's lines of the key, listing values and mtimes from the
directory memo) gives what the walk by entry gives - key, explain listing,
replay observations, delta manifest and the bytes keyed - for a tree of every kind, through a
run of edits with the memo warm; and an unchanged directory costs no per-entry lookup."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from context_trees import backdate, every_kind

from builder import statid
from builder.context import BuildContext
from cache import layout


def _tree(d: Path) -> Path:
    (d / "src" / "pkg" / "deep").mkdir(parents=True)
    (d / "empty-dir").mkdir()
    every_kind(d, big=100_000)
    (d / "src" / "pkg" / "deep" / "d.txt").write_text("deep\n")
    for i in range(30):
        (d / "src" / f"f{i:02d}.txt").write_text(f"{i}\n")
    (d / "src" / "debug.log").write_text("log\n")
    (d / "top.log").write_text("log\n")
    return backdate(d)


def _digest(ctx: Path, memo: Path | None, srcs=(".",)):
    """(key, listing, observations, manifest, bytes keyed); `memo` None: the walk by entry."""
    c = BuildContext(ctx, None, stat_cache=memo)
    c.observed = {}
    c.observe = lambda path, st: c.observed.__setitem__(path, statid.identity(st))
    listing: dict = {}
    manifest: set = set()
    key = c.digest(c.select(list(srcs)), listing, manifest)
    return key, listing, c.observed, manifest, c.keyed_bytes


EDITS = [
    ("nothing", lambda d: None),
    ("touch", lambda d: os.utime(d / "src" / "f03.txt")),
    ("edit", lambda d: (d / "src" / "pkg" / "u.go").write_text("package pkg // edited\n")),
    ("chmod", lambda d: os.chmod(d / "attrs", 0o600)),
    ("xattr", lambda d: os.setxattr(d / "attrs", "user.a", b"changed")),
    ("dir xattr", lambda d: os.removexattr(d / "src", "user.dir")),
    ("add", lambda d: (d / "src" / "new.go").write_text("new\n")),
    ("rename", lambda d: os.rename(d / "src" / "new.go", d / "src" / "renamed.go")),
    ("delete", lambda d: os.unlink(d / "src" / "f10.txt")),
    ("hard link into a memoized dir", lambda d: os.link(d / "src" / "f11.txt", d / "h2")),
    ("unlink it", lambda d: os.unlink(d / "h2")),
    ("relink", lambda d: (os.unlink(d / "link"), os.symlink("elsewhere", d / "link"))),
    ("file to dir", lambda d: (os.unlink(d / "src" / "f12.txt"),
                               (d / "src" / "f12.txt").mkdir(),
                               (d / "src" / "f12.txt" / "in").write_text("in\n"))),
    ("deep edit", lambda d: (d / "src" / "pkg" / "deep" / "d.txt").write_text("deeper\n")),
    ("dir removed", lambda d: os.rmdir(d / "empty-dir")),
    ("an ignored file edited", lambda d: (d / "src" / "debug.log").write_text("more\n")),
    ("an ignored file added", lambda d: (d / "src" / "new.log").write_text("new\n")),
]


IGNORES = {"nothing ignored": None, "ignored": "**/*.log\n**/deep\n",
           "with exceptions": "*.log\n!top.log\n"}   # the last: walked by entry both ways


@pytest.mark.parametrize("ignore", IGNORES.values(), ids=IGNORES.keys())
def test_a_directory_at_a_time_is_the_walk_by_entry_through_edits(tmp_path, ignore):
    ctx = _tree(tmp_path / "ctx")
    if ignore is not None:
        (ctx / ".dockerignore").write_text(ignore)
    memo = tmp_path / "store" / layout.STAT_CACHE
    memo.parent.mkdir()
    for what, edit in EDITS:
        edit(ctx)
        time.sleep(0.06)        # past the racy window: every directory is memoized
        want = _digest(ctx, None)
        for _pass in range(2):  # the memo as the last edit left it, then as this one did
            got = _digest(ctx, memo)
            for name, a, b in zip(("key", "listing", "observed", "manifest", "bytes"), got,
                                  want, strict=True):
                assert a == b, f"{what}: {name}"
    by_dirs = ignore != IGNORES["with exceptions"]
    assert (memo.parent / layout.DIR_CACHE).exists() == by_dirs
    if ignore == IGNORES["ignored"]:
        assert not [p for p in got[2] if p.endswith(".log") or "/deep" in p]


@pytest.mark.parametrize("srcs", [["src"], ["src", "attrs", "big"], ["src/pkg"]])
def test_selections_below_the_root_and_several_roots(tmp_path, srcs):
    ctx = _tree(tmp_path / "ctx")
    time.sleep(0.06)
    memo = tmp_path / "store" / layout.STAT_CACHE
    memo.parent.mkdir()
    want = _digest(ctx, None, srcs)
    assert _digest(ctx, memo, srcs) == want
    (ctx / "src" / "pkg" / "u.go").write_text("edited\n")
    time.sleep(0.06)
    want = _digest(ctx, None, srcs)
    assert _digest(ctx, memo, srcs) == want == _digest(ctx, memo, srcs)


def test_an_unchanged_directory_costs_no_entry_lookup(tmp_path, monkeypatch):
    ctx = _tree(tmp_path / "ctx")
    time.sleep(0.06)        # ctimes past the racy window
    memo = tmp_path / "store" / layout.STAT_CACHE
    memo.parent.mkdir()
    first = _digest(ctx, memo)
    looked: list[str] = []

    class Counting(dict):
        def get(self, key, default=None):
            looked.append(key)
            return super().get(key, default)

    real = BuildContext._load_stat_cache

    def load(self):
        if not isinstance(self._hashes, Counting):
            self._hashes = Counting(real(self))
        return self._hashes
    real_save = BuildContext.save_stat_cache

    def save(self):     # marshal writes a dict, not a subclass
        self._hashes = dict(self._hashes)
        real_save(self)
    monkeypatch.setattr(BuildContext, "_load_stat_cache", load)
    monkeypatch.setattr(BuildContext, "save_stat_cache", save)
    assert _digest(ctx, memo) == first
    # only the hard-linked files' directories are walked by entry (the selected root's own
    # entry needs only its xattrs)
    hard = {str(ctx / "hard"), str(ctx / "src" / "main.go")}
    assert str(ctx) not in looked and set(looked) <= {
        str(p) for p in [*ctx.iterdir(), *(ctx / "src").iterdir()]} | hard
    inside = str(ctx / "src" / "pkg") + "/"      # src/pkg itself is an entry of src
    assert not [p for p in looked if p.startswith(inside)]
    (ctx / "src" / "pkg" / "deep" / "d.txt").write_text("edited\n")
    time.sleep(0.06)
    looked.clear()
    _digest(ctx, memo)
    # the edited file: the directory memo's identity for it is another, so is the stat memo's
    assert [p for p in looked if p.startswith(inside)] == []


def test_an_edit_the_directory_memo_serves_never_reads_the_stat_memo(tmp_path, monkeypatch):
    """A file edited (or a directory's entry changed) in a tree both memos know: the stat memo
    (17 MB at 100,000 files) is not read; a new name is what it is read for. Each key is the
    one a walk with no memo at all gives."""
    ctx = tmp_path / "ctx"
    for d in range(3):
        (ctx / f"d{d}").mkdir(parents=True)
        for f in range(5):
            (ctx / f"d{d}" / f"f{f}").write_text(f"{d} {f}\n")
    time.sleep(0.06)
    memo = tmp_path / "store" / layout.STAT_CACHE
    memo.parent.mkdir()
    _digest(ctx, memo)
    reads = []
    real = BuildContext._load_stat_cache

    def load(self):
        if self._hashes is None:
            reads.append(1)
        return real(self)
    monkeypatch.setattr(BuildContext, "_load_stat_cache", load)
    import builder.context as context
    monkeypatch.setattr(context, "_DEFER_SHARE", 0)     # saves put off, as in a big tree's memo
    for change in (lambda: (ctx / "d1" / "f2").write_text("edited\n"),
                   lambda: os.chmod(ctx / "d2" / "f0", 0o600),
                   lambda: (ctx / "d0" / "new").write_text("new\n")):
        change()
        time.sleep(0.06)
        reads.clear()
        got = _digest(ctx, memo)
        assert reads == ([1] if (ctx / "d0" / "new").exists() else []), change
        assert got == _digest(ctx, tmp_path / "none" / layout.STAT_CACHE)


def test_a_big_directory_memo_keeps_what_its_build_walked(tmp_path, monkeypatch):
    """Past the memos' bound of entries, a save keeps the directories its process walked: a
    store that built many contexts does not carry all of them in every build's memo."""
    import builder.context as context
    from cache import sealed

    monkeypatch.setattr(context, "_MEMO_ENTRIES", 60)
    memo = tmp_path / "store" / layout.STAT_CACHE
    memo.parent.mkdir()
    trees = []
    for name in ("a", "b"):
        t = tmp_path / name
        for i in range(40):
            (t / "d").mkdir(parents=True, exist_ok=True)
            (t / "d" / f"f{i}").write_text(f"{name}{i}\n")
        trees.append(t)
    time.sleep(0.06)
    for t in trees:
        _digest(t, memo)
    dirs = sealed.read(memo.parent / layout.DIR_CACHE)["dirs"]
    assert sorted(dirs) == [str(trees[1]), str(trees[1] / "d")]
