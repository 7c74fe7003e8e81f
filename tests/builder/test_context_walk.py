"""The context key at a lower cost per entry (issue 14: the stat memo holds content digests and
xattrs, lines formatted once) is the key it was: builder/context.py of commit 8659484, loaded
from git into a module of its own, is the reference, for a tree of every kind, through a run
of edits, each with a warm memo on both sides; and an unchanged file costs no open."""
from __future__ import annotations

import builtins
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
from context_trees import backdate, every_kind

from builder import statid
from builder.context import BuildContext, SourceTree

REPO = Path(__file__).resolve().parents[2]
REF = "8659484"


def _reference():
    try:
        r = subprocess.run(["git", "-C", str(REPO), "show", f"{REF}:builder/context.py"],
                           capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    if r.returncode:
        return None
    mod = sys.modules["_ref_context"] = types.ModuleType("_ref_context")
    exec(compile(r.stdout, "ref:builder/context.py", "exec"), mod.__dict__)
    return mod


REF_CONTEXT = _reference()
needs_ref = pytest.mark.skipif(REF_CONTEXT is None, reason=f"needs git and commit {REF} of this "
                               "repository (the reference context hash); run from a git checkout")

def _tree(d: Path) -> Path:
    every_kind(d, big=200_000, xattrs=(("user.b", b"2"), ("user.a", b"1")))
    (d / "empty").write_bytes(b"")
    os.symlink("/nowhere", d / "dangling")
    (d / "ignored.log").write_text("no\n")
    (d / "keep.log").write_text("yes\n")
    (d / ".dockerignore").write_text("*.log\n!keep.log\n")
    return backdate(d)


def _both(ctx: Path, memo_dir: Path, srcs=("."), excludes=(), parents=False, tree=False):
    """(reference key, listing, observed contents), (ours), each through its own memo."""
    out = []
    for mod, name in ((REF_CONTEXT, "ref"), (sys.modules["builder.context"], "new")):
        cls = mod.SourceTree if tree else mod.BuildContext
        kw = {} if tree else {"stat_cache": memo_dir / f"{name}.memo"}
        c = cls(ctx, **kw) if tree else cls(ctx, None, **kw)
        seen: dict = {}
        if name == "ref":   # told each path, a regular file's with its "digest:capability"
            c.observe = lambda path, st, content=None, seen=seen: seen.__setitem__(path, content) \
                if content is not None or path not in seen else None
        else:               # told each path or stores its identity; contents: memo or unsaved
            c.observed = {}
            c.observe = lambda path, st, c=c: c.observed.__setitem__(path, statid.identity(st))
        listing: dict = {}
        key = c.digest(c.select(list(srcs), list(excludes), parents=parents), listing)
        if name == "new":
            seen = {path: _content(c, path, sig) for path, sig in c.observed.items()}
        out.append((key, listing, seen))
    return out


def _content(c, path: str, sig: tuple) -> str | None:
    """What a replay record holds of a regular file's content: the tree's unsaved entry, else
    the memo's for that identity (builder.replay)."""
    if path in c.unsaved and c.unsaved[path][0] == sig:
        return c.unsaved[path][1]
    hit = c._load_stat_cache().get(path)     # the memo file, as the replay reads it
    if hit is None or hit[0] != sig or not hit[1]:
        return None
    return statid.content(hit[1], hit[2], hit[3])


EDITS = [
    ("nothing", lambda d: None),
    ("touch", lambda d: os.utime(d / "src" / "main.go")),
    ("edit", lambda d: (d / "src" / "pkg" / "u.go").write_text("package pkg // edited\n")),
    ("same size", lambda d: (d / "empty").write_bytes(b"")),
    ("chmod", lambda d: os.chmod(d / "attrs", 0o600)),
    ("xattr", lambda d: os.setxattr(d / "attrs", "user.a", b"changed")),
    ("dir xattr", lambda d: os.removexattr(d / "src", "user.dir")),
    ("add", lambda d: (d / "src" / "new.go").write_text("new\n")),
    ("rename", lambda d: os.rename(d / "src" / "new.go", d / "src" / "renamed.go")),
    ("delete", lambda d: os.unlink(d / "hard")),
    ("relink", lambda d: (os.unlink(d / "link"), os.symlink("elsewhere", d / "link"))),
    ("ignore more", lambda d: (d / ".dockerignore").write_text("*.log\n")),
]


@needs_ref
def test_the_key_listing_and_observations_are_the_references_through_edits(tmp_path):
    ctx = _tree(tmp_path / "ctx")
    memos = tmp_path / "memos"
    memos.mkdir()
    keys = []
    for what, edit in EDITS:
        edit(ctx)
        time.sleep(0.06)  # past the racy window, so both memos hold everything
        for _pass in range(2):   # a cold memo, then a warm one
            (ref_key, ref_list, ref_seen), (key, listing, seen) = _both(ctx, memos)
            assert key == ref_key, what
            assert listing == ref_list, what
            assert seen == ref_seen, what
        keys.append(key)
    changed = [w for (w, _e), a, b in zip(EDITS[1:], keys, keys[1:], strict=False) if a != b]
    assert changed == ["edit", "chmod", "xattr", "dir xattr", "add", "rename", "delete",
                       "relink", "ignore more"]


@needs_ref
@pytest.mark.parametrize("srcs,excludes,parents", [
    (["src"], [], False), (["src/*.go", "link"], [], False), (["."], ["src/pkg"], False),
    (["src/./pkg/*.go"], [], True), (["s*", "a*", "k*"], ["*.go"], False)])
def test_selections_key_as_the_reference(tmp_path, srcs, excludes, parents):
    ctx = _tree(tmp_path / "ctx")
    (ref_key, ref_list, _), (key, listing, _) = _both(ctx, tmp_path, srcs, excludes, parents)
    assert (key, listing) == (ref_key, ref_list)


@needs_ref
def test_a_source_tree_keeps_owners_as_the_reference(tmp_path):
    ctx = _tree(tmp_path / "ctx")
    (ref_key, ref_list, _), (key, listing, _) = _both(ctx, tmp_path, tree=True)
    assert (key, listing) == (ref_key, ref_list)


def test_an_unchanged_file_is_not_opened_and_an_edited_one_is(tmp_path, monkeypatch):
    ctx = tmp_path / "ctx"
    for i in range(300):
        (ctx / f"d{i // 100}").mkdir(parents=True, exist_ok=True)
        (ctx / f"d{i // 100}" / f"f{i}").write_text(f"{i}\n")
    old = time.time() - 10
    for p in ctx.rglob("*"):
        os.utime(p, (old, old))
    time.sleep(0.06)
    memo = tmp_path / "memo"
    c = BuildContext(ctx, None, stat_cache=memo)
    first = c.digest(c.select(["."]))
    (ctx / "d1" / "f150").write_text("edited\n")
    time.sleep(0.06)
    opened, xattrs_read = [], []
    real_open, real_os_open, real_listxattr = builtins.open, os.open, os.listxattr

    def spy_open(path, *a, **kw):
        opened.append(os.fspath(path))
        return real_open(path, *a, **kw)

    def spy_os_open(path, *a, **kw):
        opened.append(os.fspath(path))
        return real_os_open(path, *a, **kw)

    def spy_listxattr(path, *a, **kw):
        xattrs_read.append(os.fspath(path))
        return real_listxattr(path, *a, **kw)
    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(os, "open", spy_os_open)
    monkeypatch.setattr(os, "listxattr", spy_listxattr)
    c = BuildContext(ctx, None, stat_cache=memo)
    second = c.digest(c.select(["."]))
    files = [p for p in opened if isinstance(p, str) and p.startswith(str(ctx) + "/d")]
    assert files == [str(ctx / "d1" / "f150")]
    # xattrs are read again for the edited file and its dir (whose mtime did not move, but
    # the racy check keeps nothing fresh out): never for the 299 others
    assert str(ctx / "d0" / "f0") not in xattrs_read and len(xattrs_read) <= 3
    assert second != first


def test_entry_is_still_rel_path_st(tmp_path):
    (tmp_path / "f").write_text("x")
    tree = SourceTree(tmp_path)
    (sel,) = tree.select(["f"])
    (e,) = tree.walk(sel)
    assert (e.rel, e.path, e.st.st_size) == ("", str(tmp_path / "f"), 1)


def test_one_edit_in_a_big_memo_is_hashed_again_rather_than_saved(tmp_path, monkeypatch):
    """A save that would add one entry to a memo of 1,000 is put off (rewriting every entry
    costs more than hashing that file again next time); the key is the same either way, and
    the next save that has more to add writes them all. (A .dockerignore with an exception:
    the walk by entry, which the stat memo serves; a directory at a time is
    test_context_dirs'.)"""
    ctx = tmp_path / "ctx"
    for i in range(1000):
        (ctx / f"d{i // 100}").mkdir(parents=True, exist_ok=True)
        (ctx / f"d{i // 100}" / f"f{i}").write_text(f"{i}\n")
    (ctx / ".dockerignore").write_text("*.log\n!keep.log\n")
    old = time.time() - 10
    for p in ctx.rglob("*"):
        os.utime(p, (old, old))
    time.sleep(0.06)
    memo = tmp_path / "memo"

    def key():
        c = BuildContext(ctx, None, stat_cache=memo)
        return c.digest(c.select(["."]))
    first = key()
    saved = memo.stat().st_mtime_ns
    (ctx / "d1" / "f150").write_text("edited\n")
    time.sleep(0.06)
    edited = key()
    assert edited != first and memo.stat().st_mtime_ns == saved
    assert key() == edited                      # hashed again, the same key
    (ctx / "d2" / "f250").write_text("edited too\n")
    time.sleep(0.06)
    both = key()
    assert memo.stat().st_mtime_ns != saved     # two to add: saved, both memoized
    opened, real = [], os.open
    monkeypatch.setattr(os, "open", lambda path, *a, **kw: (opened.append(os.fspath(path)),
                                                            real(path, *a, **kw))[1])
    assert key() == both
    monkeypatch.undo()
    assert not [p for p in opened if isinstance(p, str) and p.startswith(str(ctx) + "/")]
