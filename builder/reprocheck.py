"""`pybuild build --check-reproducible`: build the same plan a second time, from scratch, in a
throw-away store root, with another temp path, hostname, umask and environment order, and
compare the results.

What is compared ("digest"): the image ID (the config digest, which holds every layer's
diff_id, the digest of its uncompressed tar), and, when the build makes a manifest (--output,
--push), the manifest digest with the build's --compression too: only a manifest depends on
the compressed blobs. Cost: one more build (the first may be cached; the second never is) and,
only when the IDs differ, one read of each layer pair whose diff_ids differ (cache.diff).

The second store lives in the user's store as `tmp/check-<owner>-<rand>`: removed in a finally,
and by `pybuild prune` if this process is killed (an owner-named tmp/ entry of a dead process;
the build's mounts are in this process's private mount namespace and die with it). Base images
come from the user's store, never from a registry: on its first look-up the scratch store is
given the image's config, its layer dirs as symlinks (read-only lower dirs, never written; a
removal unlinks a symlink, never follows it) and hard links of its blobs, so nothing is pulled,
copied or unpacked.
"""
from __future__ import annotations

import contextlib
import os
import sys

from cache.errors import StoreError

HOSTNAME = "pybuild-check"


class _Seeded:
    """The scratch store as the second build sees it: an image it lacks is taken from the
    user's store (`_seed`), so a base image is never pulled."""

    def __init__(self, store, source):
        self._store, self._source = store, source

    def __getattr__(self, name):
        return getattr(self._store, name)

    def image(self, ref: str):
        try:
            return self._store.image(ref)
        except StoreError:
            img = self._source.image(ref)  # the user's store lacks it too: that error
        _seed(self._source, self._store, img)
        return self._store.image(img.id)

    def resolve(self, ref: str) -> str:
        return self.image(ref).id


def _seed(src, dst, img) -> None:
    from cache import layout, owner
    infos = src.layer_store.infos()
    with dst.locked():
        bases = [b for b in (layout.delta_base(src.root, d) for d in img.diff_ids) if b]
        for d in [*img.diff_ids, *bases]:
            have, link = src.layer_path(d), dst.layer_path(d)
            if have.is_dir() and not os.path.lexists(link):
                os.symlink(os.path.abspath(have), link)  # the root may be relative
            meta, mlink = layout.layer_meta_path(src.root, d), layout.layer_meta_path(dst.root, d)
            if os.path.isdir(meta) and not os.path.lexists(mlink):  # a delta's base and plan
                os.makedirs(os.path.dirname(mlink), exist_ok=True)
                os.symlink(os.path.abspath(meta), mlink)
            info = dict(infos.get(d) or {"origin": "received"})
            info.pop("delta_key", None)     # no base here: its tar is the user's store's
            blobs = {}
            for comp, b in (info.get("blobs") or {}).items():
                if not src.has_blob(b["digest"]):
                    continue
                if not dst.has_blob(b["digest"]):
                    tmp = dst.tmp / owner.temp_name("seed")
                    os.link(src.blob_path(b["digest"]), tmp)
                    dst.add_blob_file(tmp, b["digest"], synced=True)
                blobs[comp] = b
            info["blobs"] = blobs
            with dst.indexes.update(layout.LAYERS) as idx:
                idx.setdefault(d, info)
        dst.put_config_bytes(src.read_blob(img.id))


@contextlib.contextmanager
def _varied(tmpdir: str):
    """Another umask, environment order (reversed, TMPDIR under the scratch root) and hostname
    (a UTS namespace of this thread, entered before the build's threads start, left after)."""
    old_umask = os.umask(0)
    new_umask = 0o077 if old_umask != 0o077 else 0o022
    os.umask(new_umask)
    what = [f"umask {new_umask:04o} (was {old_umask:04o})", "environment reversed",
            f"TMPDIR={tmpdir}"]
    env = dict(os.environ)
    os.environ.clear()
    for k, v in reversed([*env.items(), ("TMPDIR", tmpdir)]):
        os.environ.setdefault(k, v)
    uts = None
    try:
        from runtime import kernel
        from runtime.errors import KernelCallError
        uts = os.open("/proc/self/ns/uts", os.O_RDONLY | os.O_CLOEXEC)
        try:
            kernel.unshare(kernel.CLONE_NEWUTS)
        except KernelCallError:
            os.close(uts)
            uts = None  # the hostname stays: the other variations still apply
        else:
            name = f"{HOSTNAME}-{os.urandom(3).hex()}"
            kernel.sethostname(name)
            what.append(f"hostname {name}")
        yield ", ".join(what)
    finally:
        if uts is not None:
            kernel.setns(uts, kernel.CLONE_NEWUTS)
            os.close(uts)
        os.umask(old_umask)
        os.environ.clear()
        os.environ.update(env)


def check(store, plan, opts, image_id: str, *, progress_mode: str, quiet: bool = False,
          compression: str | None = None, out=None) -> int:
    """Build `plan` again in a scratch store and compare with `image_id` (the first build's);
    `compression`: also compare the manifests made with it. 0 when both agree, else 1 with the
    layer, file and attribute that differ on `out` (stderr)."""
    import dataclasses

    from builder.baseimage import PullOptions
    from builder.progress import make_progress
    from builder.solve import build
    from cache import diff, owner
    from cache.fspath import remove_tree
    from cache.store import Store

    out = out or sys.stderr

    def say(line: str) -> None:
        """A line of the check's report; with --progress json, a JSON object as the
        progress events are ({"check_reproducible": line})."""
        if progress_mode == "json":
            import json
            line = json.dumps({"check_reproducible": line})
        print(line, file=out, flush=True)

    root = os.path.abspath(owner.temp_dir(store.tmp, "check"))
    try:
        scratch = Store.open(root)
        tmpdir = os.path.join(root, "tmp", "TMPDIR")
        os.mkdir(tmpdir, 0o700)
        opts2 = dataclasses.replace(opts, no_cache=True, cache_from=[], cache_to=[],
                                    pull=PullOptions("never", opts.pull.tls_verify, opts.pull.platform))
        # made now, not after: the save or push would make it anyway, and the base layers'
        # blobs it makes are then linked into the scratch store instead of made again there
        first_m = store.manifest(image_id, compression)["digest"] if compression else None
        with _varied(tmpdir) as varied, open(os.devnull, "w") as devnull:
            say(f"check-reproducible: building again from scratch in {root} ({varied})")
            progress = make_progress("plain" if quiet else progress_mode, devnull if quiet else None)
            try:
                second = build(_Seeded(scratch, store), plan, opts2, progress, None)
            except Exception:
                # the first build worked: what failed depends on one of the variations
                say(f"check-reproducible: the second build failed ({varied}):")
                raise
            finally:
                progress.close()
        second_m = None
        if compression and second == image_id:
            second_m = scratch.manifest(second, compression)["digest"]
        if second == image_id and first_m == second_m:
            what = f" (manifest {first_m} with {compression})" if first_m else ""
            say(f"check-reproducible: both builds gave the same digest: {image_id}{what}")
            return 0
        if second == image_id:
            say(f"check-reproducible: NOT reproducible: same image ID {image_id}, but the "
                f"manifests with {compression} differ: {first_m} vs {second_m}")
            return 1
        rep = diff.compare(diff.store_image(store, image_id, "first build"),
                           diff.store_image(scratch, second, "second build"))
        say(f"check-reproducible: NOT reproducible: {image_id} (first build) vs {second} "
            "(second build):")
        for line in diff.what_differs(rep):
            say(line)
        return 1
    finally:
        remove_tree(root)
