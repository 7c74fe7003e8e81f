"""The build context and other COPY sources: select paths the BuildKit way, and hash them.

A `SourceTree` is a directory that COPY/ADD read from: the build context (`BuildContext`, with
`.dockerignore` applied and owners reset to 0:0 as BuildKit's context transfer does) or another
stage's rootfs for `COPY --from` (owners kept, nothing ignored).

`select()` turns the Dockerfile's source words into `Selected` roots: paths are clamped to the
tree (a leading `/` or `..` cannot leave it), Go `filepath.Match` wildcards are expanded (a
wildcard matching nothing is fine, a missing or ignored literal path is an error), top-level
symlinks are followed inside the tree as if it were a chroot. `walk()` lists what a selection
contributes (ignored files are invisible, `--exclude` and `--parents` patterns applied) and
`digest()` hashes exactly that - paths, types, modes, owners, link targets, file capabilities and
bytes, never mtimes - so the step cache key changes when the output would, and a `touch` costs a
stat: file hashes are memoized by (dev, ino, size, mtime_ns, ctime_ns) in a small JSON file.
"""

from __future__ import annotations

import gc
import hashlib
import os
import posixpath
import re
import stat
import time
from collections import namedtuple
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from operator import add as _concat
from operator import attrgetter
from pathlib import Path

from builder.errors import BuildError
from builder.statid import content, identity
from cache import atomic, fspath, layout, sealed
from cache.errors import StoreError
from cache.overlayfmt import key_xattrs
from grammar import gopath
from grammar.gomatch import compile_match

# A file whose mtime/ctime is this close to "now" may still change within the same timestamp
# tick; its hash is used but not memoized (git's "racy" rule; see moby/buildkit#4950).
_RACY_NS = 50_000_000
# The stat memo (layout.STAT_CACHE, marshal: 100,000 entries load in a tenth of JSON's time):
# {"v": 3, "files": {host path: (stat identity (builder.statid), sha256 hex or "",
# capability hex, other layer xattrs)}}.
_MEMO_VERSION = 3
# A save is put off while what it would add is at most 1/_DEFER_SHARE of the memo's entries and
# _DEFER_BYTES of file content: re-hashing that (each build until a save: at most 100 small files
# in a 100,000-entry memo) costs less than rewriting the memo.
_DEFER_SHARE, _DEFER_BYTES = 1000, 1 << 20
# Past this many entries, a memo's save drops those its process did not use (a store that
# built many contexts keeps the ones built lately).
_MEMO_ENTRIES = 250_000
# The directory memo (layout.DIR_CACHE, next to the stat memo), for a selected directory that hides
# only what .dockerignore patterns without exceptions match: {"v": 2, "dirs": {host path of a
# directory: ((its prefix in the selection, owners reset, the ignore patterns or None), visible
# entry names, their stat identities, their lines of the key, listing values, mtimes in seconds,
# bytes of its regular files, all entry names or None when nothing is ignored)}}. Past this many
# directories or entries in all (the stat memo's bound), those a save's process did not walk
# are dropped.
_DIR_MEMO_VERSION, _DIR_MEMO_MAX = 2, 50_000
_S_IFREG, _S_IFLNK, _S_IFCHR, _S_IFBLK = stat.S_IFREG, stat.S_IFLNK, stat.S_IFCHR, stat.S_IFBLK


# --------------------------------------------------------------------------- Go glob matching

def has_wildcards(s: str) -> bool:
    """True if `s` has an unescaped `*`, `?` or `[` (BuildKit's containsWildcards)."""
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c in "*?[":
            return True
        i += 1
    return False


def compile_glob(pattern: str) -> re.Pattern:
    """A Go `filepath.Match` pattern's regex (`grammar.gomatch`); `*` and `?` never match `/`."""
    try:
        return compile_match(pattern)
    except ValueError:
        raise BuildError(f"syntax error in pattern: {pattern!r}") from None


def go_match(pattern: str, name: str) -> bool:
    """Go's `filepath.Match(pattern, name)` (a bad pattern raises BuildError)."""
    return compile_glob(pattern).match(name) is not None


# --------------------------------------------------------------------------- chroot-like paths

def resolve_in_root(root: str, path: str, *, follow_final: bool = True,
                    exists=None, observe=None) -> str:
    """Resolve `path` inside `root` as if `root` were `/` (cache.fspath.resolve, the one
    in-root walk): a host path that never leaves `root`; missing components kept literally.
    `exists(rel, st)` may hide paths (the context's ignored files); `observe(path, st)` hears
    of every path looked at (see `builder.replay`)."""
    try:
        return fspath.resolve(root, path, follow_final=follow_final, visible=exists, observe=observe)
    except StoreError as e:
        raise BuildError(str(e)) from None


# --------------------------------------------------------------------------- selection

Entry = namedtuple("Entry", "rel path st")
_entry = tuple.__new__  # _entry(Entry, (rel, path, st)): an Entry without namedtuple's Python __new__
_by_name = attrgetter("name")
Entry.__doc__ = """One path a selection contributes: `rel` is relative to the selected root ('' =
itself), `path` the host path, `st` its lstat. (A tuple, not a dataclass: a walk of 100,000 files
makes 100,000 of them; collections.namedtuple, not typing's, which the build path never loads.)"""


@dataclass(frozen=True)
class Selected:
    """One resolved COPY source root.

    `rel` is the path inside the tree after following symlinks ('' = the tree root), `real` the
    host path, `name` the base name the user wrote (a followed link keeps its own name, as in
    BuildKit), `link` the unfollowed host path. `includes` are `--parents` patterns and
    `excludes` `--exclude` patterns, both relative to this root.
    """

    tree: SourceTree = field(repr=False, compare=False)
    source: str
    rel: str
    real: str
    link: str
    name: str
    is_dir: bool
    includes: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    wildcard: bool = False

    @property
    def path(self) -> Path:
        """The host path COPY reads (top-level symlinks followed inside the tree)."""
        return Path(self.real)


def _load_matcher(patterns, what: str = "--exclude"):
    """An IgnoreMatcher for --exclude/--parents patterns (patternmatcher syntax)."""
    from grammar.dockerignore import IgnoreMatcher
    from grammar.errors import DockerfileError

    try:
        return IgnoreMatcher(list(patterns), filename=what)
    except DockerfileError as e:
        raise BuildError(f"invalid {what} pattern: {getattr(e, 'message', e)}") from None


class SourceTree:
    """A directory COPY reads from; `COPY --from=<stage>` uses it directly on the rootfs."""

    reset_owner = False

    def __init__(self, root: Path | str, *, stat_cache: Path | None = None):
        self.root = os.path.realpath(os.fspath(root))
        self._ignore = None
        self._stat_cache_path = Path(stat_cache) if stat_cache else None
        self._hashes: dict[str, list] | None = None
        self._hashes_dirty = False
        # what `_remember` memoized while the memo file was not loaded (a walk the directory
        # memo served needs it only for new names): merged into it when it is loaded
        self._pending: dict[str, tuple] = {}
        self._dir_cache_path = (self._stat_cache_path.parent / layout.DIR_CACHE
                                if self._stat_cache_path is not None else None)
        self._dirs: dict | None = None
        self._dirs_dirty = 0        # directories memoized or dropped since the load
        self._dirs_seen: set[str] = set()
        self._fresh = [0, 0]  # entries memoized since the load: count, their files' bytes
        self._known: set[str] = set()  # memo entries this process used
        self.keyed_bytes = 0  # bytes of the regular files its digests keyed (the progress line)
        self.observe = None  # callable(path, st) told of every path the build looks at
        # {host path: stat identity} of the same observer (builder.replay.Recorder.observed):
        # the digest stores the identity it made for the memo there itself
        self.observed: dict | None = None
        # {host path: (stat identity, "sha256hex:capability")} of the regular files hashed by
        # this process that the memo file does not hold (a save put off, or racy times): a
        # replay record carries these contents, the memo file the others (builder.replay)
        self.unsaved: dict[str, tuple] = {}
        # {host path: lstat result} a failed replay check made moments ago (builder.replay):
        # the walk takes each once instead of a second lstat of 100,000 files
        self.prestat: dict | None = None

    # -- visibility (the context hides .dockerignored paths) --------------------------------
    def ignored(self, rel: str) -> bool:
        """True if `rel` (relative to the root) is .dockerignored."""
        return self._ignore is not None and rel != "" and self._ignore.matches(rel)

    def _has_exceptions(self) -> bool:
        return self._ignore is not None and bool(getattr(self._ignore, "has_exceptions", True))

    def _visible(self, rel: str, st: os.stat_result) -> bool:
        if not self.ignored(rel):
            return True
        if stat.S_ISDIR(st.st_mode) and self._has_exceptions():
            return any(True for _ in self._walk_dir(os.path.join(self.root, rel), rel, "",
                                                   [], None, (), None))
        return False

    def resolve(self, rel: str, *, follow: bool = True) -> str:
        """Host path of `rel` inside the tree, following symlinks like a chroot."""
        if self.observe is not None:
            self.observe(self.root, os.lstat(self.root))
        return resolve_in_root(self.root, rel, follow_final=follow,
                               exists=self._visible if self._ignore is not None else None,
                               observe=self.observe)

    def _lstat_visible(self, path: str) -> os.stat_result | None:
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if self.observe is not None:
            self.observe(path, st)
        rel = self._rel(path)
        if rel is None or (self._ignore is not None and not self._visible(rel, st)):
            return None
        return st

    def _rel(self, path: str) -> str | None:
        if path == self.root:
            return ""
        if path.startswith(self.root.rstrip("/") + "/"):
            return path[len(self.root.rstrip("/")) + 1:]
        return None

    # -- select ------------------------------------------------------------------------------
    def select(self, srcs: Sequence[str], excludes: Sequence[str] = (), *,
               allow_empty_wildcard: bool = True, parents: bool = False,
               follow_top_symlinks: bool = True) -> list[Selected]:
        """Resolve COPY source words to selections (BuildKit semantics, see module doc)."""
        excludes = tuple(excludes)
        if excludes:
            _load_matcher(excludes)  # validate patterns early
        out: list[Selected] = []
        for src in srcs:
            includes: tuple[str, ...] = ()
            required = None
            if parents:
                base, sep, pattern = src.partition("/./")
                if not sep:
                    base, pattern = "/", src
                pattern = gopath.clean("/" + pattern).lstrip("/")
                if pattern:
                    includes = (pattern,)
                    if not has_wildcards(base) and not has_wildcards(pattern):
                        required = gopath.join("/", base, pattern)
                src = base
            clean = gopath.clean("/" + src)
            if required is not None:
                req = self.resolve(required, follow=True)
                if self._lstat_visible(req) is None:
                    raise BuildError(f'failed to compute cache key: "{required}": not found')
            out.extend(self._select_one(src, clean, includes, excludes, allow_empty_wildcard,
                                        follow_top_symlinks))
        return out

    def _select_one(self, src, clean, includes, excludes, allow_empty, follow):
        parts = [p for p in clean.split("/") if p]
        fixed: list[str] = []
        rest: list[str] = []
        for p in parts:
            if rest or has_wildcards(p):
                rest.append(p)
            else:
                fixed.append(p)
        if not rest:
            return [self._make(src, "/".join(fixed), includes, excludes, follow, False)]
        base = self.resolve("/".join(fixed), follow=True)
        pattern = "/".join(rest)
        rx = compile_glob(pattern)
        depth = None if "[^" in pattern else len(rest)
        matches: list[str] = []
        if self._lstat_visible(base) is not None and os.path.isdir(base):
            self._glob_walk(base, "", rx, depth, matches)
        if not matches and not allow_empty:
            raise BuildError(f'failed to compute cache key: "{clean}": not found')
        out = []
        for m in matches:
            rel = self._rel(m)
            out.append(self._make(src, rel, includes, excludes, follow, True))
        return out

    def _glob_walk(self, top, relbase, rx, depth, out):
        try:
            names = sorted(os.listdir(top))
        except OSError:
            return
        for name in names:
            path = top + "/" + name
            rel = relbase + "/" + name if relbase else name
            st = self._lstat_visible(path)
            if st is None:
                continue
            if rx.match(rel):
                out.append(path)
                continue
            if stat.S_ISDIR(st.st_mode) and (depth is None or rel.count("/") + 1 < depth):
                self._glob_walk(path, rel, rx, depth, out)

    def _make(self, src, rel, includes, excludes, follow, wildcard) -> Selected:
        link = self.resolve(rel, follow=False)
        real = self.resolve(rel, follow=True) if follow else link
        st = self._lstat_visible(real)
        if st is None:
            raise BuildError(f'failed to compute cache key: "/{rel}": not found')
        name = posixpath.basename(rel.rstrip("/")) or posixpath.basename(real) or "/"
        return Selected(tree=self, source=src, rel=self._rel(real) or "", real=real, link=link,
                        name=name, is_dir=stat.S_ISDIR(st.st_mode), includes=includes,
                        excludes=excludes, wildcard=wildcard)

    # -- walk --------------------------------------------------------------------------------
    def walk(self, sel: Selected, *, follow: bool = True, quiet: bool = False) -> Iterator[Entry]:
        """Entries of a selection, parents before children, names sorted; the root first.
        `quiet`: `observe` is not told (the caller tells it of each entry it is given)."""
        path = sel.real if follow else sel.link
        pre = self.prestat
        st = (pre.pop(path, None) if pre else None) or os.lstat(path)
        if self.observe is not None and not quiet:
            self.observe(path, st)
        yield Entry("", path, st)
        if not stat.S_ISDIR(st.st_mode):
            return
        inc = _load_matcher(sel.includes) if sel.includes else None
        exc = _load_matcher(sel.excludes) if sel.excludes else None
        yield from self._walk_dir(path, sel.rel, "", [], inc, sel.includes, exc, quiet=quiet)

    def _walk_dir(self, path, treerel, rel, pending, inc, incpats, exc, inc_hit=False, *,
                  quiet=False):
        """Yield visible entries below `path`.

        `pending` holds parent dirs that are hidden themselves (ignored or excluded with
        exceptions present, or not yet matched by a --parents pattern): they are emitted just
        before the first descendant that is, like fsutil's lazy parent dirs.
        """
        try:
            with os.scandir(path) as it:
                ents = sorted(it, key=_by_name)
        except OSError as e:
            raise BuildError(f"failed to read /{treerel}: {e.strerror}") from None
        ign = self._ignore
        observe = None if quiet else self.observe
        prestat = self.prestat or None
        if ign is None and exc is None and inc is None and not pending:
            # nothing to hide, exclude or wait for (no .dockerignore, --exclude, --parents):
            # each entry is its stat and its tuple (a tenth of a 100,000-file key's cost)
            pre = rel + "/" if rel else ""
            tpre = treerel + "/" if treerel else ""
            for de in ents:
                p = de.path
                st = prestat.pop(p, None) if prestat else None
                if st is None:
                    st = de.stat(follow_symlinks=False)
                if observe is not None:
                    observe(p, st)
                r = pre + de.name
                yield _entry(Entry, (r, p, st))
                if st.st_mode & 0o170000 == 0o040000:
                    yield from self._walk_dir(p, tpre + de.name, r, pending, None, incpats, None,
                                              inc_hit, quiet=quiet)
            return
        ign_exc = self._has_exceptions()
        exc_exc = exc is not None and bool(getattr(exc, "has_exceptions", True))
        for de in ents:
            name = de.name
            r = rel + "/" + name if rel else name
            tr = treerel + "/" + name if treerel else name
            st = prestat.pop(de.path, None) if prestat else None
            if st is None:
                st = de.stat(follow_symlinks=False)
            isdir = stat.S_ISDIR(st.st_mode)
            hidden = ign is not None and ign.matches(tr)
            if hidden and not (isdir and ign_exc):
                continue
            if observe is not None:
                observe(de.path, st)
            excluded = exc is not None and exc.matches(r)
            if excluded and not (isdir and exc_exc):
                continue
            included = inc_hit or inc is None or inc.matches(r)
            if not included and not isdir:
                continue
            entry = Entry(r, de.path, st)
            if hidden or excluded or not included:
                if not included and not _may_match_below(incpats, r):
                    continue
                pending.append(entry)
                yield from self._walk_dir(de.path, tr, r, pending, inc, incpats, exc, inc_hit,
                                          quiet=quiet)
                if pending and pending[-1] is entry:
                    pending.pop()
                continue
            if pending:
                yield from pending
                pending.clear()
            yield entry
            if isdir:
                yield from self._walk_dir(de.path, tr, r, pending, inc, incpats, exc,
                                          inc_hit or inc is not None, quiet=quiet)

    # -- digest ------------------------------------------------------------------------------
    def owner(self, st: os.stat_result) -> tuple[int, int]:
        return (0, 0) if self.reset_owner else (st.st_uid, st.st_gid)

    def digest(self, selected: Sequence[Selected], listing: dict | None = None,
               manifest: set | None = None) -> str:
        """sha256 over what the selections would copy; mtimes never count. `listing` (why a
        step rebuilt, builder.explain) gets {path in the tree: "type mode uid:gid capability
        content"} of every entry (content: 16 hex digits of the digest, or the link target).
        `manifest` (a COPY made as a delta over an earlier layer, builder.delta) gets, per
        entry, its line of the key (path in the selection first) followed by its mtime in whole
        seconds: all that decides what the copy writes for the entry.

        An entry whose stat identity the memo knows costs its one stat (the walk's): its
        content digest and xattrs come from the memo, and its line of the key is formatted
        once, with the key's bytes as they always were."""
        # no cyclic GC while 100,000 entries make tuples and strings (none of them cycles): its
        # full passes over a build's heap cost a fifth of this loop
        paused = gc.isenabled()
        gc.disable()
        try:
            return self._digest(selected, listing, manifest)  # the memo is sealed: only what we wrote
        finally:
            if paused:
                gc.enable()

    def _digest(self, selected: Sequence[Selected], listing: dict | None,
                manifest: set | None = None) -> str:
        h = hashlib.sha256()
        memo = self._hashes     # loaded by the first entry that asks it (see `stale`)
        observe = self.observe
        observed = self.observed if observe is not None else None
        reset = self.reset_owner
        known = self._known
        # (mode, uid, gid) -> that part of a key line and of a listing value: formatting the
        # octal numbers of 100,000 entries that share a handful of modes is most of a line's cost
        mids: dict[tuple, tuple[str, str]] = {}
        def entry(rel: str, path: str, st, links: dict, want_value: bool,
                  stale: bool = False) -> tuple:
            """(line of the key, listing value (None unless `want_value`), stat identity) of
            one entry; its content digest and xattrs come from the memo, or are read and
            memoized. `stale`: the directory memo holds another identity for it, which the
            stat memo, saved by the same builds, cannot better: it is not loaded for it."""
            nonlocal memo
            mode = st.st_mode
            fmt = mode & 0o170000
            if reset:
                uid = gid = 0
            else:
                uid, gid = st.st_uid, st.st_gid
            if stale:
                hit = None
            else:
                if memo is None:
                    memo = self._load_stat_cache()
                hit = memo.get(path)
            sig = (st.st_dev, st.st_ino, st.st_size, mode, st.st_uid, st.st_gid,
                   st.st_mtime_ns, st.st_ctime_ns)      # statid.identity, inline
            if hit is not None and hit[0] != sig:
                hit = None
            if fmt == _S_IFREG:
                if st.st_nlink > 1 and (st.st_dev, st.st_ino) in links:
                    extra = "hardlink:" + links[st.st_dev, st.st_ino]
                    cap, xattrs = (hit[2], hit[3]) if hit is not None else key_xattrs(path)
                    keycap = f"{cap}\0{xattrs}" if xattrs else cap
                else:
                    if st.st_nlink > 1:
                        links[st.st_dev, st.st_ino] = rel
                    if hit is None or not hit[1]:
                        hit = self._remember(path, st, sig, self._hash_file(path))
                    known.add(path)
                    extra, cap, xattrs = hit[1], hit[2], hit[3]
                    keycap = f"{cap}\0{xattrs}" if xattrs else cap  # user.* xattrs only when any
                    self.keyed_bytes += st.st_size
            else:
                if fmt == _S_IFLNK:
                    extra = os.readlink(path)
                elif fmt in (_S_IFCHR, _S_IFBLK):
                    extra = f"{os.major(st.st_rdev)},{os.minor(st.st_rdev)}"
                else:
                    extra = ""
                if hit is None and stale:   # only xattrs to memoize: read again, not kept
                    hit = (sig, "", *key_xattrs(path))
                elif hit is None:
                    hit = self._remember(path, st, sig, "")
                known.add(path)
                cap, xattrs = hit[2], hit[3]
                keycap = f"{cap}\0{xattrs}" if xattrs else cap
            mid = mids.get((mode, uid, gid))
            if mid is None:
                perm = mode & 0o7777
                mid = mids[mode, uid, gid] = (f"\0{fmt:o}\0{perm:o}\0{uid}\0{gid}\0",
                                              f"{fmt:o} {perm:o} {uid}:{gid} ")
            if not want_value:
                return f"{rel}{mid[0]}{extra}\0{keycap}\n", None, sig
            what = extra[:16] if fmt == _S_IFREG and ":" not in extra else extra
            shown = f"{cap or '-'}+{xattrs}" if xattrs else cap or "-"
            return f"{rel}{mid[0]}{extra}\0{keycap}\n", f"{mid[1]}{shown} {what}", sig

        dirs = None     # the directory memo, loaded for the first selection that uses it
        for sel in selected:
            h.update(f"S\0{sel.name}\0{int(sel.is_dir)}\0{sel.includes}\0{sel.excludes}\n"
                     .encode("utf-8", "surrogateescape"))
            links: dict[tuple[int, int], str] = {}
            lines: list[str] = []
            append = lines.append
            wpre, wself = (sel.rel + "/", sel.rel) if sel.rel else ("", ".")  # listing's paths
            # nothing hidden or excluded (the walk then tells observe of exactly what it
            # yields): each entry's identity goes into `observed` from here, the memo's tuple
            own = observed is not None and self._ignore is None and not sel.includes \
                and not sel.excludes
            if (sel.is_dir and not self._has_exceptions() and not sel.includes
                    and not sel.excludes and (observe is None or observed is not None)
                    and self._dir_cache_path is not None):
                if dirs is None:
                    dirs = self._load_dir_cache()
                self._digest_dirs(sel, entry, dirs, links, lines, h, listing, manifest,
                                  observed, wpre)
                h.update("".join(lines).encode("utf-8", "surrogateescape"))
                continue
            for rel, path, st in self.walk(sel, quiet=own):
                line, lval, sig = entry(rel, path, st, links, listing is not None)
                if own:
                    observed[path] = sig            # what the walk, told quiet, did not say
                append(line)
                if manifest is not None:
                    manifest.add(line + str(st.st_mtime_ns // 1_000_000_000))
                if len(lines) >= 4096:
                    h.update("".join(lines).encode("utf-8", "surrogateescape"))
                    lines.clear()
                if listing is not None:  # one short string per entry: 20,000 files are ~1 MB
                    listing[wpre + rel if rel else wself] = lval
            h.update("".join(lines).encode("utf-8", "surrogateescape"))
        self.save_stat_cache()
        if dirs is not None:
            self._save_dir_cache()
        return "sha256:" + h.hexdigest()

    def _digest_dirs(self, sel: Selected, entry, dirs: dict, links: dict, lines: list, h,
                     listing: dict | None, manifest: set | None, observed: dict | None,
                     wpre: str) -> None:
        """The walk and key of a selected directory, a directory at a time, when what it hides
        is only what .dockerignore patterns without exceptions match (so no hidden directory is
        walked for what it holds):
        a directory whose entries all have the stat identities the directory memo holds for it
        (`_DIR_MEMO_VERSION`) takes its lines of the key, listing values and mtimes from there
        (one comparison, no per-entry Python beyond its identity); in one that changed, each
        entry whose identity is the memo's still takes its own, the others go through `entry`.
        The key's bytes, the listing and the observations are those of the walk by entry
        (tests/builder/test_context_dirs.py). A directory holding a hard-linked file or a file
        whose times are racy is never memoized (its entries' lines depend on the walk so far,
        or may not be final)."""
        prestat = self.prestat or None
        reset = self.reset_owner
        ign = self._ignore
        # what decides a directory's lines besides its entries: its prefix in the selection,
        # owners reset or not, and the ignore patterns (which of its entries are visible)
        ignkey = tuple(getattr(self, "ignore_patterns", ())) if ign is not None else None
        seen = self._dirs_seen
        known = self._known
        racy = time.time_ns() - _RACY_NS
        path = sel.real
        st = (prestat.pop(path, None) if prestat else None) or os.lstat(path)
        # stale: its xattrs are one call; the stat memo is loaded only if an entry needs it
        line, lval, sig = entry("", path, st, links, listing is not None, True)
        if observed is not None:
            observed[path] = sig
        lines.append(line)
        if manifest is not None:
            manifest.add(line + str(st.st_mtime_ns // 1_000_000_000))
        if listing is not None:
            listing[sel.rel or "."] = lval

        def visit(path: str, treerel: str, rel: str) -> None:
            try:
                with os.scandir(path) as it:
                    ents = sorted(it, key=_by_name)
            except OSError as e:
                raise BuildError(f"failed to read /{treerel}: {e.strerror}") from None
            pre = rel + "/" if rel else ""
            dkey = (pre, reset, ignkey)
            got = dirs.get(path)
            if got is not None and got[0] != dkey:
                got = None      # another selection's prefix, owners or patterns: other lines
            allnames = None
            if ign is not None:     # hidden: not walked, not observed, as the walk by entry
                allnames = tuple([de.name for de in ents])
                if got is not None and got[7] == allnames:
                    if len(got[1]) != len(allnames):
                        shown = set(got[1])
                        ents = [de for de in ents if de.name in shown]
                else:
                    tpre = treerel + "/" if treerel else ""
                    ents = [de for de in ents if not ign.matches(tpre + de.name)]
            names = tuple([de.name for de in ents])
            paths = [de.path for de in ents]
            if prestat:
                sts = [prestat.pop(p, None) or de.stat(follow_symlinks=False)
                       for p, de in zip(paths, ents, strict=True)]
            else:
                sts = [de.stat(follow_symlinks=False) for de in ents]
            sigs = tuple([(st.st_dev, st.st_ino, st.st_size, st.st_mode, st.st_uid, st.st_gid,
                           st.st_mtime_ns, st.st_ctime_ns) for st in sts])  # statid.identity
            seen.add(path)
            if got is not None and got[1] == names and got[2] == sigs:
                dlines, dvals, dsecs = got[3], got[4], got[5]
                self.keyed_bytes += got[6]
                known.update(paths)
            else:
                old = {n: i for i, n in enumerate(got[1])} if got is not None else {}
                dlines, dvals, dsecs, nbytes, keep = [], [], [], 0, True
                for k, (name, p, st) in enumerate(zip(names, paths, sts, strict=True)):
                    i = old.get(name)
                    regular = st.st_mode & 0o170000 == _S_IFREG
                    # a hard-linked file's line names the first path of its inode: walked
                    # by entry (a directory's link count is its subdirectories'; it is reused)
                    if i is not None and got[2][i] == sigs[k] and (not regular
                                                                   or st.st_nlink == 1):
                        dlines.append(got[3][i])
                        dvals.append(got[4][i])
                        known.add(p)
                        if regular:
                            self.keyed_bytes += st.st_size
                    else:
                        line, lval, _sig = entry(pre + name, p, st, links, True, i is not None
                                                 and got[2][i] != sigs[k])
                        dlines.append(line)
                        dvals.append(lval)
                    if regular:
                        nbytes += st.st_size
                        if st.st_nlink > 1:
                            keep = False
                    dsecs.append(str(st.st_mtime_ns // 1_000_000_000))
                    if max(st.st_mtime_ns, st.st_ctime_ns) >= racy:
                        keep = False
                dlines, dvals, dsecs = tuple(dlines), tuple(dvals), tuple(dsecs)
                if keep:
                    dirs[path] = (dkey, names, sigs, dlines, dvals, dsecs, nbytes, allnames)
                    self._dirs_dirty += 1
                elif path in dirs:
                    del dirs[path]
                    self._dirs_dirty += 1
            if observed is not None:
                observed.update(zip(paths, sigs, strict=True))
            if listing is not None:
                lpre = wpre + pre
                listing.update(zip([lpre + n for n in names], dvals, strict=True))
            if manifest is not None:
                manifest.update(map(_concat, dlines, dsecs))
            last = 0
            for k, st in enumerate(sts):
                if st.st_mode & 0o170000 == 0o040000:
                    lines.extend(dlines[last:k + 1])
                    last = k + 1
                    visit(paths[k], treerel + "/" + names[k] if treerel else names[k],
                          pre + names[k])
            lines.extend(dlines[last:])
            if len(lines) >= 4096:
                h.update("".join(lines).encode("utf-8", "surrogateescape"))
                lines.clear()

        visit(path, sel.rel, "")

    def file_hash(self, path: str, st: os.stat_result) -> str:
        """sha256 of a file's bytes, memoized by its stat identity (a touch is a re-read)."""
        memo = self._load_stat_cache()
        sig = identity(st)
        hit = memo.get(path)
        if hit is None or hit[0] != sig or not hit[1]:
            hit = self._remember(path, st, sig, self._hash_file(path))
        self._known.add(path)
        return hit[1]

    @staticmethod
    def _hash_file(path: str) -> str:
        """sha256 hex of the file's bytes: a raw fd and 64 KiB reads (hashlib.file_digest
        zeroes a 256 KiB buffer per call, which is most of the cost of a small file); only a
        regular file, never a link's target or a FIFO swapped in since the walk."""
        h = hashlib.sha256()
        try:
            fd = fspath.open_file(path)
            try:
                while data := os.read(fd, 1 << 16):
                    h.update(data)
            finally:
                os.close(fd)
        except OSError as e:
            raise BuildError(f"failed to read {path}: {e.strerror}") from None
        return h.hexdigest()

    def _remember(self, path: str, st: os.stat_result, sig: tuple, hexd: str) -> tuple:
        """(sig, content digest or "", capability hex, other layer xattrs): what the key needs
        of `path`, memoized unless its times are racy (an xattr change moves the ctime too)."""
        entry = (sig, hexd, *key_xattrs(path))
        if hexd:
            self.unsaved[path] = (sig, content(hexd, entry[2], entry[3]))
        if max(st.st_mtime_ns, st.st_ctime_ns) < time.time_ns() - _RACY_NS:
            (self._hashes if self._hashes is not None else self._pending)[path] = entry
            self._hashes_dirty = True
            self._fresh[0] += 1
            self._fresh[1] += st.st_size
        return entry

    def _load_stat_cache(self) -> dict:
        if self._hashes is None:
            self._hashes = {}
            p = self._stat_cache_path
            if p is not None:
                data = sealed.read(p)
                if isinstance(data, dict) and data.get("v") == _MEMO_VERSION and \
                        isinstance(data.get("files"), dict):
                    self._hashes = data["files"]
            if self._pending:
                self._hashes.update(self._pending)
                self._pending = {}
        return self._hashes

    def save_stat_cache(self) -> None:
        """Write the memo (tmp + rename) if it changed; unseen entries are dropped when big."""
        p = self._stat_cache_path
        if p is None or not self._hashes_dirty:
            return
        n, size = self._fresh
        # not loaded (the directory memo served the walk): it holds about what was walked
        total = len(self._hashes) if self._hashes is not None else len(self._known)
        if n * _DEFER_SHARE <= total and size <= _DEFER_BYTES:
            # a few files edited in a big memo: hashing them again next time costs less than
            # writing every entry now (100,000 entries: ~13 MB, ~0.1 s); they are memoized
            # by the save that has enough to say
            return
        files = self._load_stat_cache()
        if len(files) > _MEMO_ENTRIES:
            files = {k: v for k, v in files.items() if k in self._known}
        if _write_memo(p, {"v": _MEMO_VERSION, "files": files}):
            self._hashes_dirty = False
            self.unsaved = {k: v for k, v in self.unsaved.items()
                            if k not in files or files[k][0] != v[0]}


    def _load_dir_cache(self) -> dict:
        if self._dirs is None:
            data = sealed.read(self._dir_cache_path)
            self._dirs = data["dirs"] if isinstance(data, dict) and \
                data.get("v") == _DIR_MEMO_VERSION and isinstance(data.get("dirs"), dict) else {}
        return self._dirs

    def _save_dir_cache(self) -> None:
        """Write the directory memo if it changed, put off as the stat memo's save is (a few
        directories of many changed: walking their entries again costs less than a rewrite)."""
        dirs = self._dirs
        if dirs is None or not self._dirs_dirty:
            return
        if self._dirs_dirty * _DEFER_SHARE <= len(dirs) and self._fresh[1] <= _DEFER_BYTES:
            return
        if len(dirs) > _DIR_MEMO_MAX or sum(len(v[1]) for v in dirs.values()) > _MEMO_ENTRIES:
            dirs = {k: v for k, v in dirs.items() if k in self._dirs_seen}
        if _write_memo(self._dir_cache_path, {"v": _DIR_MEMO_VERSION, "dirs": dirs}):
            self._dirs_dirty = 0


def _write_memo(path: Path, doc: dict) -> bool:
    """Write a memo (tmp + rename through the store's tmp/, which prune sweeps of a killed
    write's temporary); no fsync: a cache that checks itself (sealed; each entry by its stat
    identity). False if it could not be written (a help, never a reason for a build to fail)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / layout.TMP_DIR
        atomic.write_file(path, sealed.dumps(doc), tmp_dir=tmp if tmp.is_dir() else None,
                          durable=False)
    except (OSError, ValueError):
        return False
    return True


def _may_match_below(patterns: Sequence[str], rel: str) -> bool:
    """Could a path under dir `rel` match one of the --parents patterns? (prunes the walk)"""
    segs = rel.split("/")
    for pat in patterns:
        psegs = pat.strip("/").split("/")
        ok = True
        for i, s in enumerate(segs):
            if i >= len(psegs):
                ok = False
                break
            if "**" in psegs[i]:
                return True
            if not go_match(psegs[i], s):
                ok = False
                break
        if ok:
            return True
    return False


class BuildContext(SourceTree):
    """The local build context: `.dockerignore` applied, owners reset to 0:0 (BuildKit)."""

    reset_owner = True

    def __init__(self, root: Path | str, dockerfile: Path | str | None = None, *,
                 ignore: bool = True, stat_cache: Path | None = None,
                 reset_owner: bool | None = None):
        """`ignore=False` makes a plain source tree (a stage rootfs for COPY --from): nothing
        is ignored and owners are kept unless `reset_owner=True`."""
        super().__init__(root, stat_cache=stat_cache)
        self.reset_owner = ignore if reset_owner is None else reset_owner
        self.ignore_file: Path | None = None
        self.ignore_patterns: list[str] = []
        if not os.path.isdir(self.root):
            raise BuildError(f"unable to prepare context: path {str(root)!r} not found")
        if ignore:
            self._load_ignore(dockerfile)

    def _load_ignore(self, dockerfile) -> None:
        candidates = []
        if dockerfile is not None:
            df = Path(dockerfile)
            candidates.append(df.with_name(df.name + ".dockerignore"))
        candidates.append(Path(self.root) / ".dockerignore")
        for cand in candidates:
            try:
                raw = cand.read_bytes()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                continue
            except OSError as e:
                raise BuildError(f"failed to read {cand}: {e.strerror}") from None
            from grammar.dockerignore import IgnoreMatcher, parse_ignore
            from grammar.errors import DockerfileError

            try:
                self.ignore_patterns = parse_ignore(raw)
                self._ignore = (IgnoreMatcher(self.ignore_patterns, filename=str(cand))
                                if self.ignore_patterns else None)
            except DockerfileError as e:
                raise BuildError(f"{cand.name}: {getattr(e, 'message', e)}") from None
            self.ignore_file = cand
            return
