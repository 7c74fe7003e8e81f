"""Layers at rest: `layers/<hex>/` dirs in overlay format, their compressed blobs made on first
use, the layers.json index, and the scratch dirs a layer is made in.

layers.json: {diff_id: {"size": n, "origin": "built"|"received", "epoch": e,
                        "blobs": {compression: {"digest", "size"}}, "fingerprint": ...,
                        "delta_key": k (a base, cache.layerdelta), "base": diff_id (a delta)}}
A layer this process commits or opens is held (cache.leases) before it is looked for under the
lock: a prune in between cannot take it from a build or a running container.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from pathlib import Path

from cache import atomic, layerdelta, layout
from cache.blobs import Blobs, check_digest
from cache.errors import StoreError
from cache.indexes import Indexes
from cache.layout import is_digest
from cache.leases import Leases


class LayerStore:
    def __init__(self, root: Path, blobs: Blobs, indexes: Indexes, leases: Leases):
        self.root = Path(root)
        self.dir = self.root / layout.LAYERS_DIR
        self.leases = leases
        self.tmp = indexes.tmp
        self.blobs = blobs
        self.ix = indexes
        self.lock = indexes.lock

    # ---- scratch -------------------------------------------------------------------------

    def new_scratch(self) -> Path:
        """`layout.new_scratch`: a fresh dir under tmp/ that prune leaves while we run."""
        return Path(layout.new_scratch(self.root))

    # ---- the index -----------------------------------------------------------------------

    def path(self, diff_id: str) -> Path:
        return self.dir / check_digest(diff_id, "diff_id")[7:]

    def info(self, diff_id: str) -> dict | None:
        return self.ix.read(layout.LAYERS).get(diff_id)

    def infos(self) -> dict[str, dict]:
        return self.ix.read(layout.LAYERS)

    def missing(self, diff_ids) -> list[str]:
        """The layers that cannot be used: neither their dir nor a blob to unpack is here."""
        infos = None
        out = []
        for d in diff_ids:
            if self.path(d).exists():
                base = layout.delta_base(self.root, d)
                infos = self.infos() if infos is None else infos
                if base == (infos.get(d) or {}).get("base") and (
                        base is None or self.path(base).exists()):
                    continue
                out.append(d)
                continue
            infos = self.infos() if infos is None else infos
            blobs = ((infos.get(d) or {}).get("blobs") or {}).values()
            if not any(self.blobs.has(b["digest"]) for b in blobs):
                out.append(d)
        return out

    def dir_ids(self) -> list[str]:
        """Every layer dir on disk, as diff_ids (for gc)."""
        return ["sha256:" + e.name for e in os.scandir(self.dir) if is_digest("sha256:" + e.name)]

    def remove(self, diff_ids) -> None:
        """Forget layers and delete their dirs (their blobs go with the blob sweep)."""
        diff_ids = list(diff_ids)
        if not diff_ids:
            return
        with self.lock.held():
            with self.ix.update(layout.LAYERS) as idx:
                for d in diff_ids:
                    idx.pop(d, None)
            for d in diff_ids:
                shutil.rmtree(self.path(d), ignore_errors=True)
            layerdelta.remove(self.root, diff_ids)

    # ---- committing and unpacking --------------------------------------------------------

    def commit(self, upper, *, epoch: int | None = 0, keep_empty: bool = False,
               keep_source: bool = False, keep_base: tuple[str, object] | None = None) -> str | None:
        """Move an overlay upper dir (or any dir in overlay format) into the store as a layer;
        returns its diff_id. Its entries' times become those of its tar (whole seconds,
        clamped to `epoch`; `write_tar(settle=True)`), so the dir and the tar agree. An
        empty dir gives None (no layer) unless `keep_empty`: BuildKit commits the 1024-byte
        empty tar for a RUN/COPY/WORKDIR that changed nothing.
        `keep_source` (`pybuild commit`: the container keeps its upper dir) copies it in
        through our own tar instead of moving it. `keep_base` = (key, manifest): keep the tar
        too, so that a later layer of the same step can be made as a delta over this one
        (cache.layerdelta)."""
        from cache.layers import is_empty_dir, write_tar
        upper = Path(upper)
        if not keep_empty and is_empty_dir(upper):
            return None
        # one truth: a dir that is moved in gets the times its tar says, and its fingerprint
        # as it is then, in the tar's own walk (a copy comes from the tar: nothing to settle;
        # only a moved dir keeps its inodes). Outside the lock: renaming the dir changes only
        # its own ctime, which the fingerprint leaves out.
        kept = index = None
        if keep_base is not None and not keep_source:
            from cache.layers import TarIndex
            index = TarIndex()
            f, kept = atomic.tmp_file(self.tmp, "tar")
            try:
                with f:
                    res = write_tar(upper, f, epoch=epoch, settle=True, index=index)
            except BaseException:
                kept.unlink(missing_ok=True)
                raise
            if index.special:       # not a base a delta can be made over
                kept.unlink(missing_ok=True)
                kept = None
        else:
            res = write_tar(upper, None, epoch=epoch, settle=not keep_source)
        fp = res.fingerprint
        dest = self.path(res.diff_id)
        moved = None
        synced = False
        if not keep_source and not dest.exists():
            atomic.sync_tree(upper)     # on disk before it is a layer; outside the lock
            synced = True
        self.leases.hold(res.diff_id)  # until this process is done with it (put_image, exit)
        with self.lock.held():
            if dest.exists():
                if not keep_source:
                    shutil.rmtree(upper, ignore_errors=True)
            elif keep_source:
                self._copy_in(upper, dest, res.diff_id, epoch)
            else:
                layerdelta.remove(self.root, [res.diff_id])  # a stale meta must not make it a delta
                if not synced:          # pruned since the look above
                    atomic.sync_tree(upper)
                try:
                    os.rename(upper, dest)
                    moved = fp  # the inodes just hashed are the layer's now
                except OSError as e:
                    if e.errno != errno.EXDEV:  # another filesystem: copy through our own tar
                        raise
                    self._copy_in(upper, dest, res.diff_id, epoch)
                    shutil.rmtree(upper, ignore_errors=True)
                atomic.fsync_dir(self.dir)
            with self.ix.update(layout.LAYERS) as idx:
                info = idx.setdefault(res.diff_id, {"origin": "built", "blobs": {}})
                info["size"] = res.size
                if moved is not None:
                    info["fingerprint"] = moved
                info.pop("pid", None)
                info.pop("t", None)
                if "epoch" not in info and info["origin"] == "built":
                    info["epoch"] = epoch
                if kept is not None and moved is not None:
                    try:
                        layerdelta.keep_base(self.root, self.tmp, res.diff_id, kept, index,
                                             res.size, keep_base[0], keep_base[1])
                    except OSError:
                        pass        # no base: the next edit is a full copy
                    else:
                        # the newest base of a step is the one its next edit is a delta over:
                        # the older ones' tars go (a delta over one makes it again to stream)
                        for d, other in idx.items():
                            if other.get("delta_key") == keep_base[0] and d != res.diff_id:
                                del other["delta_key"]
                                layerdelta.drop_base(self.root, d)
                        info["delta_key"] = keep_base[0]
        if kept is not None:
            kept.unlink(missing_ok=True)
        return res.diff_id

    # ---- deltas (cache.layerdelta) -------------------------------------------------------

    def find_base(self, key: str) -> tuple[str, dict] | None:
        """The full layer kept as a base under `key` (one at most: `commit`), with its index,
        held."""
        for d, info in self.infos().items():
            if info.get("delta_key") != key or "base" in info:
                continue
            self.leases.hold(d)
            index = layerdelta.read_index(self.root, d)
            if index is not None and index.get("key") == key and self.path(d).is_dir():
                return d, index
        return None

    def commit_delta(self, upper, base: str, index: dict, *, epoch: int | None = 0) -> str:
        """Move an overlay upper dir made over the layer dir of `base` into the store as a
        delta layer over it; returns the diff_id of the layer the two make together (the tar
        a cold build of it writes). NotDelta when the dir holds what a splice cannot carry
        (an opaque dir, a whiteout of what the base does not have)."""
        import io

        from cache.layers import TarIndex, write_tar
        from cache.overlayfmt import is_opaque, is_whiteout
        upper = Path(upper)
        dindex = TarIndex()
        buf = io.BytesIO()
        write_tar(upper, buf, epoch=epoch, settle=True, hash_tar=False, index=dindex)
        data = buf.getbuffer()
        kinds = []
        root = os.fsencode(upper)
        for rel in dindex.rels:
            st = os.lstat(root + b"/" + rel)
            if is_whiteout(st):
                kinds.append("w")
            elif stat.S_ISDIR(st.st_mode):
                if is_opaque(root + b"/" + rel):
                    raise layerdelta.NotDelta(f"{os.fsdecode(rel)}: an opaque dir")
                kinds.append("d")
            elif st.st_nlink > 1:
                raise layerdelta.NotDelta(f"{os.fsdecode(rel)}: a hardlink")
            else:
                kinds.append("f")
        segs = layerdelta.plan(index, layerdelta.delta_entries(dindex, kinds))
        diff_id, size = layerdelta.splice(self.root, base, index, data, segs)
        atomic.sync_tree(upper)     # its few entries, on disk before it is a layer
        dest = self.path(diff_id)
        self.leases.hold(diff_id, base)
        with self.lock.held():
            if not dest.exists():
                layerdelta.write_delta_meta(self.root, self.tmp, diff_id, base, segs)
                os.rename(upper, dest)
                atomic.fsync_dir(self.dir)
            else:
                shutil.rmtree(upper, ignore_errors=True)
            with self.ix.update(layout.LAYERS) as idx:
                info = idx.setdefault(diff_id, {"origin": "built", "blobs": {}})
                if "size" not in info:
                    info.update({"size": size, "epoch": epoch})
                    if layout.delta_base(self.root, diff_id) == base:
                        info["base"] = base
        return diff_id

    def _copy_in(self, src: Path, dest: Path, diff_id: str, epoch) -> None:
        from cache.layers import extract, write_tar
        f, tmp = atomic.tmp_file(self.tmp, "cp")
        scratch = self.new_scratch()
        try:
            with f:
                write_tar(src, f, epoch=epoch)
            (scratch / "layer").mkdir(mode=0o700)
            with open(tmp, "rb") as r:
                got = extract(r, scratch / "layer")
            if got != diff_id:
                raise StoreError(f"layer copy changed its content ({got} != {diff_id})")
            atomic.sync_tree(scratch / "layer")
            os.rename(scratch / "layer", dest)
        finally:
            tmp.unlink(missing_ok=True)
            shutil.rmtree(scratch, ignore_errors=True)

    def dir_of(self, diff_id: str) -> Path:
        """The layer's directory (overlay format), unpacking a received blob on first use."""
        dest = self.path(check_digest(diff_id, "diff_id"))
        self.leases.hold(diff_id)
        with self.lock.held():  # after the hold: a prune from now on keeps it
            if dest.exists():
                return dest
            info = self.info(diff_id)
        if not info or not info.get("blobs"):
            raise StoreError(f"layer {diff_id} is not in the store")
        from cache.layers import extract
        _kind, blob = next(iter(sorted(info["blobs"].items())))
        scratch = self.new_scratch()
        try:
            (scratch / "layer").mkdir(mode=0o700)
            with open(self.blobs.path(blob["digest"]), "rb") as f:
                got = extract(f, scratch / "layer")
            if got != diff_id:
                raise StoreError(f"layer blob {blob['digest']} does not match its diff_id "
                                 f"{diff_id} (got {got})")
            with self.lock.held():
                if not dest.exists():
                    os.rename(scratch / "layer", dest)
                    atomic.fsync_dir(self.dir)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return dest

    def dirs(self, diff_ids) -> list[Path]:
        """The dirs of `diff_ids` (bottom first, as a config lists them) in overlay's lowerdir
        order, top first: a delta layer's dir followed by its base's (`dir_of` each)."""
        out = []
        infos = None
        for d in reversed(list(diff_ids)):
            out.append(self.dir_of(d))
            base = layout.delta_base(self.root, d)
            infos = self.infos() if infos is None else infos
            if base != (infos.get(d) or {}).get("base"):
                raise StoreError(f"layer {d}: its delta record is damaged; remove the image and "
                                 "build it again")
            if base is not None:
                out.append(self.dir_of(base))
        return out

    # ---- tars and blobs ------------------------------------------------------------------

    def tar(self, diff_id: str, out) -> str:
        """Write the uncompressed layer tar to `out`; returns the diff_id it hashed to."""
        from cache.compress import CHUNK, HashingWriter, open_decompressed
        info = self.info(diff_id)
        if info is None:
            raise StoreError(f"layer {diff_id} is not in the store")
        if info.get("origin") == "built":
            from cache.layers import write_tar
            base = layout.delta_base(self.root, diff_id)
            if base is not None:
                return self._delta_tar(diff_id, base, info, out)
            return write_tar(self.path(diff_id), out, epoch=info.get("epoch", 0)).diff_id
        _kind, blob = next(iter(sorted(info["blobs"].items())))
        h = HashingWriter(out)
        with open(self.blobs.path(blob["digest"]), "rb") as f:
            shutil.copyfileobj(open_decompressed(f), h, CHUNK)
        return h.digest

    def blob(self, diff_id: str, compression: str = "gzip") -> dict:
        """A descriptor {mediaType, digest, size} of the layer compressed as asked, making and
        keeping the blob on first use (byte-identical every time for built layers)."""
        from cache.compress import MEDIA_TYPES, HashingWriter, compressor
        if compression not in MEDIA_TYPES:
            raise StoreError(f"unknown compression {compression!r} (use gzip or zstd)")
        info = self.info(diff_id)
        if info is None:
            raise StoreError(f"layer {diff_id} is not in the store")
        have = info.get("blobs", {}).get(compression)
        if have and self.blobs.has(have["digest"]):
            return {"mediaType": MEDIA_TYPES[compression], "digest": have["digest"], "size": have["size"]}
        f, tmp = atomic.tmp_file(self.tmp, "z")
        try:
            with f:
                h = HashingWriter(f)
                c = compressor(compression, h, threaded=True)
                got = self._blob_tar(diff_id, info, c)
                c.close()
                f.flush()
                os.fsync(f.fileno())  # here, not under the lock
            if got != diff_id:
                if "base" in info:      # its base's kept tar lied: no more deltas over it
                    with self.lock.held():
                        with self.ix.update(layout.LAYERS) as idx:
                            (idx.get(info["base"]) or {}).pop("delta_key", None)
                        layerdelta.drop_base(self.root, info["base"])
                raise StoreError(f"layer {diff_id} changed on disk (it now hashes to {got}); "
                                 "remove the image and build it again")
            with self.lock.held():
                self.blobs.publish(tmp, h.digest)
                with self.ix.update(layout.LAYERS) as idx:
                    if diff_id not in idx:
                        raise StoreError(f"layer {diff_id} was removed while it was compressed")
                    idx[diff_id].setdefault("blobs", {})[compression] = {"digest": h.digest,
                                                                         "size": h.size}
        finally:
            tmp.unlink(missing_ok=True)
        return {"mediaType": MEDIA_TYPES[compression], "digest": h.digest, "size": h.size}

    def _delta_tar(self, diff_id: str, base: str, info: dict, out) -> str:
        """`tar` of a delta layer: its plan over the base's kept tar (made again from the
        base's dir if it is gone) and its own dir's tar; hashed as it is written."""
        import io

        from cache.compress import HashingWriter
        from cache.layers import write_tar
        self.dir_of(base)
        with contextlib.ExitStack() as stack:
            try:    # opened now: a commit dropping it meanwhile cannot take it from under us
                kept = stack.enter_context(open(
                    os.path.join(layerdelta.meta_path(self.root, base), "tar"), "rb", buffering=0))
            except FileNotFoundError:
                f, made = atomic.tmp_file(self.tmp, "tar")
                stack.callback(made.unlink, missing_ok=True)
                with f:
                    write_tar(self.path(base), f, epoch=(self.info(base) or {}).get("epoch", 0))
                kept = stack.enter_context(open(made, "rb", buffering=0))
            own = io.BytesIO()
            write_tar(self.path(diff_id), own, epoch=info.get("epoch", 0), hash_tar=False)
            h = HashingWriter(out)
            layerdelta.stream(self.root, diff_id, kept, own.getbuffer(), h)
            return h.digest

    def _blob_tar(self, diff_id: str, info: dict, out) -> str:
        """`tar` for making a blob: a built layer dir whose fingerprint is what it was at
        commit, before and after the write, is not hashed again (its diff_id is known)."""
        from cache.layers import fingerprint, write_tar
        fp = info.get("fingerprint")
        if info.get("origin") != "built" or not fp or "base" in info:
            return self.tar(diff_id, out)
        path = self.path(diff_id)
        if fingerprint(path) != fp:
            return self.tar(diff_id, out)  # hashed: says what it hashes to now
        res = write_tar(path, out, epoch=info.get("epoch", 0), hash_tar=False)
        if fingerprint(path) != fp or res.size != info.get("size"):
            raise StoreError(f"layer {diff_id} changed on disk while it was written; "
                             "remove the image and build it again")
        return diff_id

    def add_received(self, diff_id: str, blob_digest: str, blob_size: int, compression: str,
                     size: int | None = None) -> None:
        with self.ix.update(layout.LAYERS) as idx:
            info = idx.setdefault(diff_id, {"origin": "received", "blobs": {}})
            info.setdefault("blobs", {})[compression] = {"digest": blob_digest, "size": blob_size}
            if size is not None:
                info.setdefault("size", size)
