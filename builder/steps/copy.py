"""COPY and ADD as build steps: pick the source tree, key the step by content, write the layer.

The file semantics (wildcards, directories, --chown/--chmod, --parents, archives) live in
`builder.copying`; this module decides where sources come from (the context, another stage, an
image, heredocs, URLs) and what goes into the cache key: the sources' content digest, never
their mtimes.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

from builder.steps.layer import commit, scratch
from cache import owner
from grammar import ExpansionError, ast

SHARE_ENV = "PYBUILD_COPY_SHARE"  # "link": a missed COPY hard-links unchanged files (_share)


def sharing() -> bool:
    """Is COPY's sharing with the previous layer on (`_share`)?"""
    return os.environ.get(SHARE_ENV, "off") == "link"


def _is_url(src: str) -> bool:
    return src.startswith(("http://", "https://"))


def _is_git(src: str) -> bool:
    return src.startswith("git@") or src.endswith(".git") or ".git#" in src


def copy_step(run, ins: ast.Copy | ast.Add, n: int) -> None:
    is_add = isinstance(ins, ast.Add)
    kind = "ADD" if is_add else "COPY"
    if not ins.sources or not ins.dest:
        raise run.error(ins, f"{kind} requires at least two arguments, but only one was provided. "
                        "Destination could not be determined")
    heredocs = {f"<<{h.name}": h for h in ins.heredocs}
    heredocs.update({f"<<-{h.name}": h for h in ins.heredocs})
    srcs = [s if s in heredocs else run.expand(ins, s) for s in ins.sources]
    dest = run.expand(ins, ins.dest)
    chown = run.expand(ins, ins.flag("chown") or "") or None
    chmod = run.expand(ins, ins.flag("chmod") or "") or None
    link = ins.has_flag("link") and (ins.flag("link") or "true").lower() != "false"
    parents = ins.has_flag("parents") and (ins.flag("parents") or "true").lower() != "false"
    excludes = [run.expand(ins, e or "") for e in ins.flag_values("exclude")]
    unpack = (ins.flag("unpack") or "true").lower() != "false" if is_add else False
    checksum = run.expand(ins, ins.flag("checksum") or "") or None if is_add else None
    frm = None if is_add else ins.flag("from")
    workdir = run.state.config["config"].get("WorkingDir") or "/"
    for s in srcs:
        if not is_add and _is_url(s):
            raise run.error(ins, "source can't be a URL for COPY")
        if _is_git(s) and (_is_url(s) or s.startswith("git@")):
            raise run.error(ins, f"{kind} of a git repository is not supported by pybuild yet: {s}")
    if checksum and not all(_is_url(s) for s in srcs):
        raise run.error(ins, "checksum requires HTTP(S) or Git sources")

    flags_text = "".join(f"--{name}={val} " for name, val in
                         (("parents", "true" if parents else None), ("chown", chown), ("chmod", chmod))
                         if val)
    created_by = f"{kind} {flags_text}{' '.join(srcs)} {dest} # buildkit"

    with contextlib.ExitStack() as stack:
        groups = _source_groups(run, ins, srcs, heredocs, frm, checksum, stack)
        digests = []
        files = ignore = None  # what builder.explain compares when the step misses
        for tree, names, from_key, local in groups:
            # a stage or image source is keyed by its own key: no mount, no walk on a cache hit
            if local:
                files, ignore = {}, list(getattr(tree, "ignore_patterns", []))
            digests.append(from_key or tree.digest(tree.select(names, excludes),
                                                   files if local else None))
        inputs = {"kind": kind, "srcs": srcs, "dest": dest, "chown": chown, "chmod": chmod,
                  "parents": parents, "link": link, "exclude": excludes, "workdir": workdir,
                  "unpack": unpack, "sources": digests}

        def do(vertex):
            from builder.copying import copy
            from builder.users import resolve_chown
            from runtime.snapshotter import mounted

            with scratch(run.solver.store) as (upper, work):
                lowers = [] if link else run.lowerdirs()
                share = None
                try:
                    with mounted(lowers, upper, work) as root:
                        root = Path(root)
                        owner = resolve_chown(chown, root) if chown else None
                        for tree, names, _, local in groups:
                            if callable(tree):
                                tree = tree()
                            sel = tree.select(names, excludes)
                            if local and len(groups) == 1 and len(sel) == 1 and sel[0].is_dir:
                                share = _share(run, upper, tree)
                            copy(sel, root, dest, workdir=workdir, chown=owner, chmod=chmod,
                                 parents=parents, multiple=len(srcs) > 1,
                                 unpack=is_add and unpack and local, share=share,
                                 settle=(run.solver.opts.epoch,))
                    if share is not None:
                        share.finish(upper)
                finally:
                    if share is not None:
                        share.close()
                return commit(run, upper)

        run.layer_step(ins, n, created_by, inputs, do, files, ignore)


def _share(run, upper, tree):
    """A `builder.copying.Share` with the layer this step made in the last build of this
    Dockerfile and tag (builder.explain's record: the same step, its parent and inputs but
    the sources' digests unchanged, so each source lands where it did), when the last
    record of this command line (builder.replay's: the full content digest of each context
    file then) was made with that layer; else None. Only with the overlay snapshotter: the
    links go into the upper dir, which the native one writes only at the end.

    Off unless PYBUILD_COPY_SHARE=link: a shared inode's link count is 2 or more while both
    layers exist, and a later RUN (or a container) sees that count through the overlay where a
    cold build shows 1 - the layer's tar and digest are a cold build's, its view is not."""
    from builder.copying import Share
    from cache.errors import StoreError
    from runtime.snapshotter import snapshotter

    if not sharing():
        return None
    rec, ex = run.solver.recorder, run.solver.explainer
    prev = getattr(rec, "previous", None)
    if run.no_cache or ex is None or not isinstance(prev, dict) or not rec.contents:
        return None
    try:
        steps = ex.stages[run.stage.label]["steps"]
        step = steps[-1]            # noted by layer_step just before it ran this
        old = ex.previous_step(run.stage.label, step)
        if old is None or old["parent"] != step["parent"]:
            return None
        def same(d):
            return {k: v for k, v in d.items() if k not in ("sources", "epoch")}
        if json.loads(json.dumps(same(step["inputs"]))) != same(old["inputs"]):
            return None
        diff_id = (prev["keys"].get(old["key"]) or {}).get("diff_id")
        files = prev["files"]
        if not diff_id or not isinstance(files, dict):
            return None
        if snapshotter(Path(upper).parent) != "overlay":
            return None
        old_dir = run.solver.store.layer_dir(diff_id)   # held from now on: a prune keeps it
    except (KeyError, TypeError, AttributeError, IndexError, StopIteration, StoreError):
        return None
    return Share(os.fspath(old_dir), files, rec.contents, rec.observed, tree.root)


def _source_groups(run, ins, srcs, heredocs, frm, checksum, stack):
    """[(tree, names, key-or-None, local)]: where each source is read from (`tree` may be a
    callable that mounts a stage's rootfs when the step runs); only local (context) archives
    are unpacked by ADD."""
    from builder.context import BuildContext, SourceTree
    from runtime.snapshotter import mounted

    store = run.solver.store
    if frm:
        i = run.solver.plan.stage_by_ref(frm, run.stage.index)
        if i is not None:
            state = run.solver.stage_result(i)
            diff_ids, key = state.diff_ids, state.key
        else:
            img = run.solver.image(frm, ins.line)
            diff_ids, key = img.diff_ids, img.id
        def stage_tree():  # mounted only when the step runs
            layers = [store.layer_dir(d) for d in reversed(diff_ids)]
            return SourceTree(Path(stack.enter_context(mounted(layers, tmp=store.tmp))))

        return [(stage_tree, srcs, f"{key}:{srcs}", False)]

    groups = []
    local = [s for s in srcs if s not in heredocs and not _is_url(s)]
    if local:
        groups.append((run.solver.context(), local, None, True))
    extra = [s for s in srcs if s in heredocs or _is_url(s)]
    if extra:
        tmp = Path(owner.temp_dir(store.tmp, "src"))  # in the store's tmp/: prune removes it after a kill
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        names = []
        for s in extra:
            if s in heredocs:
                h = heredocs[s]
                body = h.text()
                if h.expand:
                    body = _expand_heredoc(run, ins, body)
                (tmp / h.name).write_text(body)
                (tmp / h.name).chmod(0o644)
                names.append(h.name)
            else:
                from builder.fetch import fetch_url

                if run.solver.recorder:
                    run.solver.recorder.volatile = True  # a URL can change under the same name
                got = fetch_url(s, tmp, checksum=checksum)
                names.append(got.relative_to(tmp).as_posix())
        groups.append((BuildContext(tmp, None, ignore=False), names, None, False))
    return groups


def _expand_heredoc(run, ins, body: str) -> str:
    """An unquoted COPY/ADD heredoc body expanded by grammar's lexer, as BuildKit does it."""
    from grammar.lexer import expand_heredoc

    try:
        return expand_heredoc(body, run.expansion_env())
    except ExpansionError as e:
        raise e.at(run.df.filename, ins.line) from None
