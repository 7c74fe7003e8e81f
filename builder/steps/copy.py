"""COPY and ADD as build steps: pick the source tree, key the step by content, write the layer.

The file semantics (wildcards, directories, --chown/--chmod, --parents, archives) live in
`builder.copying`; this module decides where sources come from (the context, another stage, an
image, heredocs, URLs) and what goes into the cache key: the sources' content digest, never
their mtimes.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from builder import delta
from builder.steps.layer import commit, scratch
from cache import owner
from grammar import ExpansionError, ast


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
        manifest = None        # builder.delta's, for a COPY of one context dir
        for tree, names, from_key, local in groups:
            # a stage or image source is keyed by its own key: no mount, no walk on a cache hit
            if from_key:
                digests.append(from_key)
                continue
            if local:
                files, ignore = {}, list(getattr(tree, "ignore_patterns", []))
            sel = tree.select(names, excludes)
            if (local and len(groups) == 1 and len(sel) == 1 and sel[0].is_dir and not is_add
                    and not link and not parents and delta.enabled()):
                manifest = set()
            digests.append(tree.digest(sel, files if local else None, manifest))
        inputs = {"kind": kind, "srcs": srcs, "dest": dest, "chown": chown, "chmod": chmod,
                  "parents": parents, "link": link, "exclude": excludes, "workdir": workdir,
                  "unpack": unpack, "sources": digests}

        def do(vertex):
            from builder.copying import copy
            from builder.users import resolve_chown
            from runtime.snapshotter import mounted, writes_through

            keep = None
            if manifest is not None:
                got, keep = _as_delta(run, inputs, groups[0][0], groups[0][1], excludes, manifest,
                                      dest, workdir, chown, chmod)
                if got is not None:
                    return got
            with scratch(run.solver.store) as (upper, work):
                lowers = [] if link else run.lowerdirs()
                # volatile: the commit syncs the layer, not the whole disk (atomic.sync_tree)
                with mounted(lowers, upper, work, volatile=True) as root:
                    root = Path(root)
                    owner = resolve_chown(chown, root) if chown else None
                    direct = upper if writes_through(root, upper) else None
                    for tree, names, _, local in groups:
                        if callable(tree):
                            tree = tree()
                        copy(tree.select(names, excludes), root, dest, workdir=workdir,
                             chown=owner, chmod=chmod, parents=parents, multiple=len(srcs) > 1,
                             unpack=is_add and unpack and local, settle=(run.solver.opts.epoch,),
                             upper=direct)
                return commit(run, upper, keep)

        run.layer_step(ins, n, created_by, inputs, do, files, ignore)


def _as_delta(run, inputs, tree, srcs, excludes, manifest, dest, workdir, chown, chmod):
    """(diff_id, None) of this COPY made as a delta over the base of its step
    (builder.delta), else (None, what `commit` keeps to make this layer such a base)."""
    from builder.copying import copy_changes
    from builder.users import resolve_chown
    from cache.layerdelta import NotDelta
    from runtime.snapshotter import mounted, snapshotter

    store = run.solver.store
    epoch = run.solver.opts.epoch
    if epoch is None:
        return None, None               # real times: no two builds agree on a layer anyway
    keep = (delta.base_key(run.state.key, run.state.diff_ids, inputs, epoch), manifest)
    with scratch(store) as (upper, work):
        if snapshotter(Path(upper).parent) != "overlay":
            return None, None           # the native one writes the upper dir at the end
        if run.no_cache:
            return None, keep           # a cold build, which the next edit can be a delta over
        found = store.delta_base(keep[0])
        if found is None:
            return None, keep
        base, index = found
        ch = delta.changes(index["manifest"], manifest, epoch)
        if ch is None:
            return None, keep
        lowers = run.lowerdirs()
        owner = None
        if chown:                       # names as the image has them, not as the copy made them
            with mounted(lowers, tmp=store.tmp) as image_root:
                owner = resolve_chown(chown, Path(image_root))
        try:
            # volatile: its unmount would sync the whole disk; the few entries it writes are
            # made durable by the commit (LayerStore.commit_delta: atomic.sync_tree)
            with mounted([store.layer_dir(base), *lowers], upper, work, volatile=True) as root:
                root = os.path.realpath(root)
                sel = tree.select(srcs, excludes)
                copy_changes(sel[0], Path(root), dest, *ch, workdir=workdir, chown=owner,
                             chmod=chmod, settle=(epoch,), lower_has=delta.lower_has(lowers, root))
            return store.commit_delta_layer(upper, base, index, epoch=epoch), None
        except NotDelta:
            return None, keep


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
            layers = store.layer_dirs(diff_ids)
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
