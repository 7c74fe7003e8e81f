"""A fully cached rebuild replays the record of the last identical build.

Issue 4 wants a cached rebuild no slower than BuildKit's; Python start-up plus the front end,
planner and solver cost ~150 ms of imports alone. So every successful build leaves a *record*,
keyed by all it was given - pybuild's own code (builder.codeid), the command line, the store root,
the epoch (builder.sourcedate: SOURCE_DATE_EPOCH, or a git context's HEAD commit time) and the
bytes of the Dockerfile and .dockerignore - and holding all it looked
at: the stat identity (inode, size, mtime, ctime, mode) of every context path it resolved or
walked (a new or deleted file changes its directory's mtime, an edit or touch the file's), the
image each base or `--from` reference named, the cache entry of each step key, and the image it
made. `pybuild build` tries the record first: every observation is checked again, and any
difference - a touched file, a moved tag, a pruned cache entry, a removed image - falls back to
the full build, which is always right. A replay prints the same steps (all CACHED) and tags the
same way. Only os, json and zlib are imported (and marshal, built in: the record is a sealed marshal
file, which 100,000 observed files load from in a tenth of JSON's time); never hashlib, lark,
the AST or the solver.

Command lines that depend on more than the above never replay: --no-cache(-filter), --secret,
--output, `-f -`, a context that is not a local directory (`-`, a URL), unknown or abbreviated
flags; nor builds with ADD of a URL.
"""
from __future__ import annotations

import gc
import json
import os
import sys

from builder import codeid, sourcedate, statid
from builder.statid import CONTENT, MODE, MTIME, identity
from cache import layout, sealed

RECORD_VERSION = 4
_VALUE_FLAGS = {"-t": "tag", "--tag": "tag", "-f": "file", "--file": "file",
                "--build-arg": "build_arg", "--label": "label", "--target": "target",
                "--progress": "progress", "--network": "network", "--iidfile": "iidfile",
                "--platform": "platform"}
_LISTS = ("tag", "build_arg", "label")


PROGRESS_MODES = ("auto", "tty", "plain", "json", "quiet")


def default_progress() -> str:
    """--progress when it is not given: $BUILDKIT_PROGRESS (docker's variable) if it names a
    mode, else auto."""
    v = os.environ.get("BUILDKIT_PROGRESS", "").lower()
    return v if v in PROGRESS_MODES else "auto"


def parse_argv(argv: list[str]) -> dict | None:
    """The options of `pybuild [--root D] [--debug] build ...`, or None when a flag outside
    the replayable set (or anything unusual) is present: the full build then decides."""
    o: dict = {"root": None, "tag": [], "build_arg": [], "label": [], "file": None, "target": None,
               "progress": default_progress(), "network": "default", "iidfile": None, "platform": None,
               "quiet": False, "context": None}
    i, n = 0, len(argv)
    while i < n and argv[i] != "build":
        a = argv[i]
        if a == "--root" and i + 1 < n:
            o["root"] = argv[i + 1]
            i += 2
        elif a.startswith("--root="):
            o["root"] = a[7:]
            i += 1
        elif a == "--debug":
            i += 1
        else:
            return None
    i += 1
    if i > n:
        return None
    while i < n:
        a = argv[i]
        if a in ("-q", "--quiet"):
            o["quiet"] = True
            i += 1
            continue
        name, eq, val = a.partition("=") if a.startswith("--") else (a, "", "")
        if name in _VALUE_FLAGS:
            if not eq:
                if i + 1 >= n or argv[i + 1].startswith("-"):
                    return None
                val = argv[i + 1]
            i += 1 if eq else 2
            dest = _VALUE_FLAGS[name]
            if dest in _LISTS:
                o[dest].append(val)
            else:
                o[dest] = val
            continue
        if a.startswith("-") or o["context"] is not None:
            return None
        o["context"] = a
        i += 1
    if o["context"] is None or o["file"] == "-":
        return None
    # --- lead: a URL or git context is fetched anew by every build, never replayed ---
    from builder.contextsource import is_local

    if not is_local(o["context"]):
        return None
    # --- end lead ---
    return o


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "surrogateescape")
    except OSError:
        return None


def _size(text: str | None) -> int:
    """Bytes of a file `_read` returned."""
    return len(text.encode("utf-8", "surrogateescape")) if text else 0


def _recorded_content(path: str, sig, memo) -> str | None:
    """A regular file's "sha256hex:capability" when the record was made: the record's own, or
    the stat memo's for the identity the record holds (`memo()` loads it); None if unknown."""
    if len(sig) > CONTENT:
        return sig[CONTENT]
    hit = memo().get(path)
    if hit is None or tuple(hit[0]) != tuple(sig[:CONTENT]) or not hit[1]:
        return None
    return statid.content(hit[1], hit[2], hit[3])


def _same_content(path: str, now: tuple, sig, recorded: str | None) -> bool:
    """A regular file whose times changed but whose bytes and layer xattrs did not: a touch,
    which a build keys the same (digests never include mtimes)."""
    if recorded is None or tuple(now[:MTIME]) != tuple(sig[:MTIME]) or \
            now[MODE] & 0o170000 != 0o100000:
        return False
    import hashlib

    from cache.overlayfmt import key_xattrs

    try:
        with open(path, "rb") as f:
            hexd = hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return False
    return statid.content(hexd, *key_xattrs(path)) == recorded   # what the digest saw


def _memo_loader(root: str):
    """The stat memo's {host path: entry}, read once when first asked (only for a touch)."""
    got: list[dict] = []

    def load() -> dict:
        if not got:
            data = sealed.read(os.path.join(root, layout.STAT_CACHE))
            files = data.get("files") if isinstance(data, dict) else None
            got.append(files if isinstance(files, dict) else {})
        return got[0]
    return load


class Pending:
    """A build that may replay, or be recorded when it runs in full."""

    def __init__(self, opts: dict):
        import zlib

        self.opts = opts
        # {host path: lstat result} of the record's paths as the replay check found them: the
        # full build's context walk takes these instead of a second lstat (builder.context)
        self.stats: dict[str, os.stat_result] = {}
        self.root = os.path.abspath(opts["root"] or layout.default_root())
        self.context = os.path.realpath(opts["context"])
        self.dockerfile = os.path.abspath(opts["file"] or os.path.join(opts["context"], "Dockerfile"))
        build_args = []
        for item in opts["build_arg"]:
            k, eq, v = item.partition("=")
            build_args.append([k, v if eq else os.environ.get(k)])
        slot = [self.root, self.context, self.dockerfile, opts["tag"], build_args, opts["label"],
                opts["target"], opts["network"], opts["platform"]]
        text = json.dumps(slot)
        # one record per command line and context (a rebuild after an edit replaces it)
        self.slot = f"{zlib.crc32(text.encode()):08x}{zlib.adler32(text.encode()):08x}"
        ignores = [self.dockerfile + ".dockerignore", os.path.join(self.context, ".dockerignore")]
        # the epoch as the build resolves it (the environment's SOURCE_DATE_EPOCH, or a git
        # context's HEAD commit time, read from .git without running git)
        epoch = sourcedate.resolve(self.context, {k: v for k, v in build_args if v is not None},
                                   os.environ).value
        # compared whole, not hashed: no hashlib (OpenSSL) to load on the fast path
        self.inputs = json.loads(json.dumps(
            [RECORD_VERSION, slot, codeid.identity(), epoch,
             _read(self.dockerfile), [_read(p) for p in ignores]]))

    @property
    def path(self) -> str:
        return os.path.join(self.root, layout.REPLAY_DIR, self.slot + ".m")

    # -- replay ------------------------------------------------------------------------------
    def replay(self) -> str | None:
        """The image ID when every observation of the record still holds, else None."""
        paused = gc.isenabled()  # no cyclic GC while a record of 100,000 files loads and is
        gc.disable()             # checked (nothing here makes cycles)
        try:
            return self._replay()
        except (KeyError, TypeError, AttributeError, ValueError, IndexError):
            return None     # a record of another shape (damaged): a full build, never a trace
        finally:
            if paused:
                gc.enable()

    def _replay(self) -> str | None:
        rec = sealed.read(self.path)
        if rec is None:
            return None
        if not isinstance(rec, dict) or rec.get("inputs") != self.inputs:
            return None
        root = self.root
        image = rec["image"]
        if image not in layout.read_index(root, layout.IMAGES) or not layout.has_blob(root, image):
            return None
        entries = layout.read_index(root, layout.CACHEKEYS)
        for key, value in rec["keys"].items():
            if entries.get(key) != value:
                return None
            diff_id = value.get("diff_id")
            if diff_id and not layout.has_layer_dir(root, diff_id):
                return None
        tags = layout.read_index(root, layout.TAGS)
        for name, image_id in rec["tags_read"].items():
            if tags.get(name) != image_id:
                return None
        touched = []
        memo = _memo_loader(root)
        lstat, stats = os.lstat, self.stats
        files = iter(rec["files"].items())
        for path, sig in files:
            try:
                st = lstat(path)
            except OSError:
                return self._stat_rest(files)
            stats[path] = st
            # identity(st) != sig[:8], field by field: no two tuples per file (a third of the
            # loop), the times first (what an edit or a touch moves)
            if (st.st_mtime_ns != sig[6] or st.st_ctime_ns != sig[7] or st.st_ino != sig[1]
                    or st.st_size != sig[2] or st.st_dev != sig[0] or st.st_mode != sig[3]
                    or st.st_uid != sig[4] or st.st_gid != sig[5]):
                now = identity(st)
                content = _recorded_content(path, sig, memo)
                if not _same_content(path, now, sig, content):
                    return self._stat_rest(files)
                touched.append((path, (*now, content)))  # the memo does not know this identity
        if touched:  # a touch: same bytes, mode and owner; remember the new stat identity
            rec["files"].update(touched)
            self._write(rec)
        self.record = rec
        return image

    def _stat_rest(self, files) -> None:
        """The replay is off: lstat the record's other paths too, for the full build's walk
        (`stats`), which then reads its directories but stats none of these again."""
        lstat, stats = os.lstat, self.stats
        for path, _sig in files:
            try:
                stats[path] = lstat(path)
            except OSError:
                pass
        return None

    def finish_replay(self, image_id: str) -> int:
        rec, o = self.record, self.opts
        if not (o["quiet"] or o["progress"] == "quiet"):    # -q: no progress to make at all
            from builder.progress import CONTEXT, context_read, exported, loaded, make_progress

            progress = make_progress(o["progress"], live=False)
            try:   # the layout of a full build's (builder.progress), from the record's facts
                ignore = next((t for t in self.inputs[5] if t is not None), "")
                loaded(progress, os.path.basename(self.dockerfile), _size(self.inputs[4]), _size(ignore))
                for name, cached in rec["steps"]:
                    v = progress.start(name)
                    if name == CONTEXT:     # the regular files the build read from it
                        context_read(progress, v, rec["context_bytes"])
                    else:
                        (progress.cached if cached else progress.done)(v)
                v = progress.start("exporting to image")
                progress.status(v, "exporting layers")
                exported(progress, v, image_id, o["tag"])
            finally:
                progress.close()
        tags = layout.read_index(self.root, layout.TAGS)
        if any(tags.get(full) != image_id for full in rec["tags"]):
            from cache.store import Store

            Store.open(self.root).tag_all(o["tag"], image_id)  # all or none, as a full build
        announce(image_id, o["tag"], quiet=o["quiet"], iidfile=o["iidfile"],
                 silent=o["progress"] != "json")
        return 0

    # -- recording ---------------------------------------------------------------------------
    def save(self, image_id: str, rec: Recorder, store, progress) -> None:
        """Write the record of a build that just succeeded (never when it read a URL)."""
        if rec.volatile:
            return
        from cache import refs
        from cache.errors import StoreError

        tags = store.tags()
        tags_read = {}
        for ref, got in rec.refs.items():
            if ref == got:
                continue
            try:
                full = refs.normalize(ref)
            except StoreError:
                return  # name@digest or an ID prefix: not worth a record
            if tags.get(full) != got:
                return
            tags_read[full] = got
        steps = [[v.name, v.cached or v.step] for v in progress.vertices if not v.once]
        doc = {"inputs": self.inputs, "image": image_id, "keys": rec.keys, "tags_read": tags_read,
               "tags": [refs.normalize(t) for t in self.opts["tag"]], "steps": steps,
               "context_bytes": rec.tree.keyed_bytes if rec.tree is not None else 0}
        paused = gc.isenabled()  # as in replay(): 100,000 entries, no cycles
        gc.disable()
        try:
            doc["files"] = self._files(rec)
            self._write(doc)
        finally:
            if paused:
                gc.enable()

    def _files(self, rec: Recorder) -> dict:
        """The record's {host path: stat identity [+ content]}, every path the build looked
        at (all in the context: the context is the only tree observed): a regular file's
        content ("sha256hex:capability", what a touch is checked against) only where the stat
        memo's file does not hold it for that identity (`SourceTree.unsaved`). In the order
        the build saw them: the check of a replay an edit defeats goes on to lstat the rest
        for the full build's walk anyway (`_stat_rest`), so no order finds an edit sooner."""
        files = dict(rec.observed)
        if rec.tree is not None:
            for path, (sig, content) in rec.tree.unsaved.items():
                if files.get(path) == sig:
                    files[path] = (*sig, content)
        return files

    def _write(self, doc: dict) -> None:
        """tmp + rename under the store lock (a prune sees a whole record or none)."""
        from cache import atomic  # only when writing: the check above imports nothing more

        try:
            data = sealed.dumps(doc)
        except ValueError:
            return  # a value marshal cannot write: no record, the next build runs in full
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with atomic.Lock(os.path.join(self.root, layout.LOCK)).held():
                # no fsync: a lost or damaged record (sealed) means a full build, and what it
                # names was written durably before it and is checked again by a replay
                atomic.write_file(self.path, data, tmp_dir=os.path.join(self.root, layout.TMP_DIR),
                                  durable=False)
        except OSError:
            pass


class Recorder:
    """What a full build looked at, filled in by the solver and the context as they go."""

    def __init__(self):
        self.observed: dict[str, tuple] = {}  # host path -> stat identity (builder.statid)
        self.tree = None  # the build context (builder.context.BuildContext) once it is opened
        self.prestat: dict | None = None  # the failed replay check's lstats (Pending.stats)
        self.refs: dict[str, str] = {}  # image reference as written -> image ID
        self.keys: dict[str, dict] = {}  # step key -> cache entry used or made
        self.volatile = False  # read something a record cannot check (a URL)

    def observe(self, path: str, st: os.stat_result) -> None:
        """Note a path the build looked at (the context's digest stores the identities of
        what it walks in `observed` itself)."""
        self.observed[path] = identity(st)

    def store(self, store) -> RecordingStore:
        return RecordingStore(store, self)


class RecordingStore:
    """The store as the solver sees it, noting what a replay must check again."""

    def __init__(self, store, rec: Recorder):
        self._store = store
        self._rec = rec

    def __getattr__(self, name):
        return getattr(self._store, name)

    def image(self, ref: str):
        img = self._store.image(ref)
        self._rec.refs[ref] = img.id
        return img

    def resolve(self, ref: str) -> str:
        image_id = self._store.resolve(ref)
        self._rec.refs[ref] = image_id
        return image_id

    def cache_get(self, key: str):
        value = self._store.cache_get(key)
        if value is not None:
            self._rec.keys[key] = value
        return value

    def cache_put(self, key: str, value: dict) -> None:
        self._store.cache_put(key, value)
        self._rec.keys[key] = value


def attempt(argv: list[str]):
    """Replay when possible: returns the exit code, else a `Pending` to record the full
    build under (None when this command line never replays)."""
    opts = parse_argv(argv)
    if opts is None:
        return None
    try:
        pending = Pending(opts)
        image_id = pending.replay()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if image_id is None:
        return pending
    return pending.finish_replay(image_id)


def announce(image_id: str, tags: list[str], *, quiet: bool, iidfile: str | None,
             silent: bool = False) -> None:
    """How every build ends for the user, full or replayed (`silent`: no lines; --progress
    quiet, or a progress that said them under `exporting to image`)."""
    if iidfile:
        try:
            with open(iidfile, "w") as f:
                f.write(image_id)
        except OSError as e:
            from builder.errors import BuildError

            raise BuildError(f"failed to write image ID to {iidfile}: {e.strerror}") from None
    if quiet:
        print(image_id)
    elif not silent:
        print(f"writing image {image_id} done", file=sys.stderr)
        for tag in tags:
            print(f"naming to {tag} done", file=sys.stderr)
