"""`pybuild diff`: what differs between two images, down to the file and the attribute.

Sources (`open_image`): a store image (name or ID), a docker-archive or OCI-archive tar, an OCI
layout dir, or a registry reference. A registry's blobs are streamed through a pipe into the
comparison, never stored: a diff changes nothing in the user's store (no image, tag or gc root
appears), writes nothing to disk, and each blob's digest is still checked by fetch_blob (a
mismatch fails the diff). Archives and layouts are read through cache.archive's readers, store
layers through the store's own tar (`Store.layer_tar`), every tar through
`cache.extract.LayerReader`: one reader of each format.

Comparison (diffoci's walk, its exit convention 0 same / 1 different / 2 error): the manifests
(when both sides have one: a store image has none until it is saved or pushed), the config
field by field (history included), then the layers paired by position. A layer whose diff_id
is the same on both sides is the same tar and is not read. Otherwise layer A's entries are
loaded into a dict by name (their headers and a sha256 of their content: memory grows with
the number of entries, never with their size), layer B is streamed against it, and each entry
is added, removed or changed in named attributes. Small text files keep their bytes within a
budget, so a changed one can show its lines.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cache.compress import CHUNK
from cache.errors import StoreError
from cache.fspath import clean

TEXT_MAX = 4096          # a file up to this size that is text keeps its bytes (line diffs)
TEXT_BUDGET = 8 << 20    # at most this much kept per layer
ATTRS = ("type", "content", "mode", "owner", "mtime", "xattrs", "link target", "hardlink",
         "device")
_KINDS = {b"0": "file", b"\0": "file", b"7": "file", b"1": "hardlink", b"2": "symlink",
          b"3": "char device", b"4": "block device", b"5": "dir", b"6": "fifo"}


# ---- sources -------------------------------------------------------------------------------

@dataclass
class Layer:
    diff_id: str
    open: object                 # () -> a binary stream of the (maybe compressed) tar
    descriptor: dict | None = None
    checked: bool = False        # the stream itself fails unless its tar hashes to diff_id


@dataclass
class Image:
    label: str                   # what the user named
    kind: str                    # store | docker-archive | oci-archive | oci-layout | registry
    image_id: str                # the config digest
    config: dict
    layers: list[Layer]
    manifest: dict | None = None
    manifest_digest: str | None = None
    index_digest: str | None = None   # the top digest when it is an index (registry, layout)


def _digest(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


class _Pipe:
    """A readable stream fed by `produce(writer)` on a thread: a source that pushes (the
    store's tar writer, a registry's fetch_blob) read by the tar reader, which pulls, at the
    pipe's constant memory. The producer's error is raised at the end of the stream."""

    def __init__(self, produce):
        self.r, w = os.pipe()
        self.err: BaseException | None = None

        def run() -> None:
            try:
                produce(_FdWriter(w))
            except BrokenPipeError:
                pass  # the reader stopped early (it failed, or closed)
            except BaseException as e:  # noqa: BLE001 - raised in the reader's thread
                self.err = e
            finally:
                os.close(w)

        self.t = threading.Thread(target=run, name="diff-pipe", daemon=True)
        self.t.start()

    def read(self, n: int = -1) -> bytes:
        n = CHUNK if n is None or n < 0 else n
        if n == 0:
            return b""
        parts, got = [], 0
        while got < n:
            data = os.read(self.r, n - got)
            if not data:
                break
            parts.append(data)
            got += len(data)
        if got < n:  # the end: what went wrong on the other side is the reader's error
            self.t.join()
            if self.err is not None:
                raise self.err
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        if self.r >= 0:
            os.close(self.r)
            self.r = -1
        self.t.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _FdWriter:
    def __init__(self, fd: int):
        self.fd = fd

    def write(self, data) -> int:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        return len(data)

    def flush(self) -> None:
        pass


def _tmp_file(kind: str):
    import tempfile
    fd, path = tempfile.mkstemp(prefix=f"pybuild-diff-{kind}-")
    return os.fdopen(fd, "wb"), Path(path)


def store_image(store, ref: str, label: str | None = None) -> Image:
    """An image of `store` (cache.store.Store); its layers read as the store's own tars."""
    img = store.image(ref)

    def produce(diff_id: str, out) -> None:
        got = store.layer_tar(diff_id, out)  # hashed as it is written: no second hash here
        if got != diff_id:
            raise StoreError(f"layer {diff_id} changed on disk (its tar hashes to {got})")
    layers = [Layer(d, (lambda d=d: _Pipe(lambda out: produce(d, out))), checked=True)
              for d in img.diff_ids]
    return Image(label or ref, "store", img.id, img.config, layers)


def _archive_image(path: Path, want: str | None, label: str, stack) -> Image:
    try:
        return _read_archive(path, want, label, stack)
    except StoreError as e:
        raise StoreError(f"{label}: {e}") from None


def _read_archive(path: Path, want: str | None, label: str, stack) -> Image:
    from cache import archive, refs
    src = archive.open_source(path, _tmp_file)
    stack.callback(src.close)
    images = list(archive.read_images(src, prefer_oci=True))
    if want:
        full = refs.normalize(want)
        images = [i for i in images if full in i.names]
        if not images:
            raise StoreError(f"no image named {want} in it")
    if not images:
        raise StoreError("holds no image")
    if len(images) > 1:
        names = sorted({refs.familiar(n) for i in images for n in i.names})
        raise StoreError(f"holds {len(images)} images; name one as docker-archive:PATH:NAME or "
                         f"oci:DIR:NAME ({', '.join(names) or 'untagged'})")
    a = images[0]
    kind = "oci-layout" if path.is_dir() else "oci-archive" if a.manifest is not None else "docker-archive"
    layers = [Layer(d, (lambda n=n: src.open(n)), desc) for n, d, desc in a.layers]
    top = (a.top or {}).get("digest")
    mdigest = (a.descriptor or {}).get("digest")
    return Image(label, kind, _digest(a.raw), a.config, layers, a.manifest, mdigest,
                 top if top and top != mdigest else None)


def registry_image(ref: str, *, tls_verify: bool = True, platform: str | None = None) -> Image:
    """A registry's image, read without storing anything: manifest and config in memory,
    each layer streamed from the registry when it is compared."""
    from cache import schema
    from cache.registry.pull import _fetch_small, _json, resolve
    repo, _repo_full, _tag, top, man = resolve(ref, platform=platform, tls_verify=tls_verify)
    where = f"{repo.name}@{man.digest}"
    doc = schema.manifest(_json(man.raw, where), where)
    cdesc = doc["config"]
    raw = _fetch_small(repo, cdesc["digest"], cdesc.get("size"))
    config = _json(raw, f"{repo.name}: config {cdesc['digest']}")
    ids = schema.config(config, f"{repo.name}: config {cdesc['digest']}")
    descs = doc.get("layers") or []
    if len(descs) != len(ids):
        raise StoreError(f"{where}: {len(descs)} layers but its config lists {len(ids)}")

    def opener(desc):
        return lambda: _Pipe(lambda out: repo.fetch_blob(desc["digest"], out, size=desc.get("size")))
    layers = [Layer(d, opener(desc), desc) for desc, d in zip(descs, ids, strict=True)]
    return Image(ref, "registry", cdesc["digest"], config, layers, doc, man.digest,
                 top if top != man.digest else None)


_PREFIXES = ("docker-archive:", "oci-archive:", "oci:", "docker://", "store:")


def open_image(spec: str, stack, *, store=None, tls_verify: bool = True) -> Image:
    """The image `spec` names: `docker-archive:PATH[:NAME]`, `oci-archive:PATH[:NAME]`,
    `oci:DIR[:NAME]`, `docker://REF`, `store:REF`; else an existing path (archive tar or layout
    dir), else an image of the store (`store()` opens it), else a registry reference. `stack`
    (an ExitStack) closes what was opened."""
    from cache import refs
    if not spec:
        raise StoreError("an image is an empty string")
    for p in _PREFIXES:
        if spec.startswith(p):
            rest = spec[len(p):]
            if p == "docker://":
                return registry_image(rest, tls_verify=tls_verify)
            if p == "store:":
                return store_image(store(), rest, spec)
            path, _, name = rest.partition(":") if not os.path.exists(rest) else (rest, "", "")
            if not os.path.exists(path):
                raise StoreError(f"{spec}: {path}: no such file or directory")
            return _archive_image(Path(path), name or None, spec, stack)
    if os.path.exists(spec):
        return _archive_image(Path(spec), None, spec, stack)
    try:
        refs.parse(spec)
        is_ref = True
    except StoreError:
        is_ref = False
    s = store()
    try:
        return store_image(s, spec)
    except StoreError as e:
        if not is_ref:
            raise StoreError(f"{spec}: no such file, directory or image ({e})") from None
    try:
        return registry_image(spec, tls_verify=tls_verify)
    except StoreError as e:  # RegistryError is one
        raise StoreError(f"{spec}: not a file, not in the store, and not pulled: {e}") from None


# ---- comparison ----------------------------------------------------------------------------

@dataclass
class Report:
    a: Image
    b: Image
    rows: list[dict] = field(default_factory=list)

    @property
    def same(self) -> bool:
        return not self.rows


@dataclass
class Options:
    semantic: bool = False   # ignore timestamps (config, history, files), history, entry order


def _values(path: str, a, b, out: list, kind: str) -> None:
    """Rows for every leaf where JSON values a and b differ (path like config.Env[2])."""
    if a == b:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            sub = f"{path}.{k}" if path else str(k)
            if k not in a:
                out.append({"kind": kind, "path": sub, "a": None, "b": b[k], "change": "added"})
            elif k not in b:
                out.append({"kind": kind, "path": sub, "a": a[k], "b": None, "change": "removed"})
            else:
                _values(sub, a[k], b[k], out, kind)
        return
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _values(f"{path}[{i}]", x, y, out, kind)
        return
    if isinstance(a, list) and isinstance(b, list) and all(
            isinstance(v, (str, int, float, bool)) for v in a + b):  # Env, Cmd...: the items
        gone, new = [x for x in a if x not in b], [y for y in b if y not in a]
        out.extend({"kind": kind, "path": path, "a": x, "b": None, "change": "removed"} for x in gone)
        out.extend({"kind": kind, "path": path, "a": None, "b": y, "change": "added"} for y in new)
        if gone or new:
            return
    out.append({"kind": kind, "path": path, "a": a, "b": b, "change": "changed"})


def layer_steps(config: dict) -> list[str]:
    """The history `created_by` of each layer, in layer order ("" when history says nothing)."""
    steps = [h.get("created_by") or "" for h in config.get("history") or ()
             if isinstance(h, dict) and not h.get("empty_layer")]
    n = len((config.get("rootfs") or {}).get("diff_ids") or ())
    return (steps + [""] * n)[:n]


def compare(a: Image, b: Image, opts: Options | None = None) -> Report:
    opts = opts or Options()
    rep = Report(a, b)
    rows = rep.rows
    if a.index_digest and b.index_digest and a.index_digest != b.index_digest:
        rows.append({"kind": "index", "path": "digest", "a": a.index_digest, "b": b.index_digest,
                     "change": "changed"})
    if a.manifest is not None and b.manifest is not None and a.manifest_digest != b.manifest_digest:
        _values("", {k: v for k, v in a.manifest.items() if k not in ("config", "layers")},
                {k: v for k, v in b.manifest.items() if k not in ("config", "layers")}, rows, "manifest")
        pairs = zip(a.manifest.get("layers") or [], b.manifest.get("layers") or [], strict=False)
        for i, (x, y) in enumerate(pairs):
            for k in ("mediaType", "size", "digest", "annotations"):
                if x.get(k) != y.get(k):
                    rows.append({"kind": "manifest", "path": f"layers[{i}].{k}", "a": x.get(k),
                                 "b": y.get(k), "change": "changed"})
        if not any(r["kind"] == "manifest" for r in rows):
            rows.append({"kind": "manifest", "path": "digest", "a": a.manifest_digest,
                         "b": b.manifest_digest, "change": "changed"})
    if a.image_id != b.image_id:
        ca = {k: v for k, v in a.config.items() if k not in ("rootfs", "history")}
        cb = {k: v for k, v in b.config.items() if k not in ("rootfs", "history")}
        _values("", ca, cb, rows, "config")
        if opts.semantic:  # the image's own time
            rows[:] = [r for r in rows if r["path"] != "created"]
        else:
            _values("history", a.config.get("history"), b.config.get("history"), rows, "history")
        ra = {k: v for k, v in (a.config.get("rootfs") or {}).items() if k != "diff_ids"}
        rb = {k: v for k, v in (b.config.get("rootfs") or {}).items() if k != "diff_ids"}
        _values("rootfs", ra, rb, rows, "config")
    steps_a, steps_b = layer_steps(a.config), layer_steps(b.config)
    for i in range(max(len(a.layers), len(b.layers))):
        la = a.layers[i] if i < len(a.layers) else None
        lb = b.layers[i] if i < len(b.layers) else None
        steps = steps_b if lb is not None else steps_a
        step = steps[i] if i < len(steps) else ""
        head = {"kind": "layer", "layer": i, "step": step}
        if la is None or lb is None:
            rows.append({**head, "change": "only in " + ("B" if la is None else "A"),
                         "a": la and la.diff_id, "b": lb and lb.diff_id})
            continue
        if la.diff_id == lb.diff_id:
            continue
        files = compare_layers(la, lb, opts, (f"{a.label}: layer {i}", f"{b.label}: layer {i}"))
        if files or not opts.semantic:
            rows.append({**head, "change": "changed", "a": la.diff_id, "b": lb.diff_id,
                         "files": files})
    return rep


# ---- layers --------------------------------------------------------------------------------

class _Entry:
    __slots__ = ("attrs", "digest", "index", "text")

    def __init__(self, attrs: dict, digest: str | None, index: int, text: bytes | None):
        self.attrs, self.digest, self.index, self.text = attrs, digest, index, text


def _entries(layer: Layer, where: str):
    try:
        yield from _read_entries(layer)
    except StoreError as e:
        raise StoreError(f"{where}: {e}") from None


def _read_entries(layer: Layer):
    """Yield (name, attrs, content digest or None, text or None, size) for each entry of the
    layer's tar, streaming; the tar must hash to the layer's diff_id."""
    from cache.extract import LayerReader
    with contextlib.closing(layer.open()) as raw:
        r = LayerReader(raw, hashed=not layer.checked)
        try:
            for m in r:
                name = "/".join(clean(m.name))
                if not name:
                    continue
                kind = _KINDS.get(m.type, "other")
                base = name.rsplit("/", 1)[-1]
                if kind == "file" and base.startswith(".wh."):
                    kind = "opaque whiteout" if base == ".wh..wh..opq" else "whiteout"
                xattrs = {k[len("SCHILY.xattr."):]: v for k, v in sorted(m.pax_headers.items())
                          if k.startswith("SCHILY.xattr.")}
                attrs = {"type": kind, "mode": m.mode & 0o7777, "owner": f"{m.uid}:{m.gid}",
                         "mtime": int(m.mtime), "size": m.size}
                if xattrs:
                    attrs["xattrs"] = xattrs
                if kind == "symlink":
                    attrs["link target"] = m.linkname
                elif kind == "hardlink":
                    attrs["hardlink"] = "/".join(clean(m.linkname))
                elif kind in ("char device", "block device"):
                    attrs["device"] = f"{m.devmajor}:{m.devminor}"
                digest = text = None
                if m.isreg():
                    h = hashlib.sha256()
                    f = r.data(m)
                    keep = m.size <= TEXT_MAX
                    chunks = []
                    while data := f.read(CHUNK):
                        h.update(data)
                        if keep:
                            chunks.append(data)
                    digest = "sha256:" + h.hexdigest()
                    if keep:
                        text = b"".join(chunks)
                        if b"\0" in text:
                            text = None
                yield name, attrs, digest, text
        except BaseException:
            r.tf.close()
            raise
        got = r.close()
    if got is not None and got != layer.diff_id:
        raise StoreError(f"layer {layer.diff_id}: its tar hashes to {got}")


def _changed(ea: _Entry, eb: _Entry, opts: Options) -> dict:
    a, b = ea.attrs, eb.attrs
    if a["type"] != b["type"]:
        return {"type": {"a": a["type"], "b": b["type"]}}
    out = {}
    if ea.digest != eb.digest:
        c = {"a": ea.digest, "b": eb.digest, "size": [a["size"], b["size"]]}
        if ea.text is not None and eb.text is not None:
            lines = _line_diff(ea.text, eb.text)
            if lines is not None:
                c["lines"] = lines
        out["content"] = c
    for k in ATTRS[2:]:
        if k == "mtime" and opts.semantic:
            continue
        if a.get(k) != b.get(k):
            va, vb = a.get(k), b.get(k)
            if k == "mode":
                va, vb = f"{va:04o}", f"{vb:04o}"
            out[k] = {"a": va, "b": vb}
    return out


def _line_diff(x: bytes, y: bytes, limit: int = 20) -> list[str] | None:
    try:
        ta, tb = x.decode(), y.decode()
    except UnicodeDecodeError:
        return None
    import difflib
    out = [ln.rstrip("\n") for ln in difflib.unified_diff(ta.splitlines(True), tb.splitlines(True), n=0,
                                                          lineterm="\n")
           if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    return out[:limit]


def compare_layers(la: Layer, lb: Layer, opts: Options | None = None,
                   where: tuple[str, str] = ("A", "B")) -> list[dict]:
    """File rows between two layers: {"path", "change": added|removed|changed, "attrs"}."""
    opts = opts or Options()
    if la.diff_id == lb.diff_id:
        return []  # the same tar
    have: dict[str, _Entry] = {}
    budget = TEXT_BUDGET
    for i, (name, attrs, digest, text) in enumerate(_entries(la, where[0])):
        if text is not None:
            if budget < len(text):
                text = None
            else:
                budget -= len(text)
        have[name] = _Entry(attrs, digest, i, text)
    rows, order_a, order_b = [], [], []
    seen: set[str] = set()
    for i, (name, attrs, digest, text) in enumerate(_entries(lb, where[1])):
        eb = _Entry(attrs, digest, i, text)
        seen.add(name)
        ea = have.get(name)
        if ea is None:
            rows.append({"path": name, "change": "added", "b": _brief(eb)})
            continue
        order_a.append(ea.index)
        order_b.append(name)
        ch = _changed(ea, eb, opts)
        if ch:
            rows.append({"path": name, "change": "changed", "attrs": ch})
    for name, ea in have.items():
        if name not in seen:
            rows.append({"path": name, "change": "removed", "a": _brief(ea)})
    if not rows and not opts.semantic:  # same entries, yet another tar
        moved = [order_b[k] for k in range(1, len(order_a)) if order_a[k] < order_a[k - 1]]
        if moved:
            rows.append({"path": moved[0], "change": "changed", "attrs": {"order": {
                "a": "entry order differs", "b": "entry order differs"}}})
        else:
            rows.append({"path": "", "change": "changed", "attrs": {"tar encoding": {
                "a": la.diff_id, "b": lb.diff_id}}})
    rows.sort(key=lambda r: r["path"])
    return rows


def _brief(e: _Entry) -> dict:
    out = {k: v for k, v in e.attrs.items() if k != "mtime"}
    out["mode"] = f"{e.attrs['mode']:04o}"
    if e.digest:
        out["content"] = e.digest
    return out


def what_differs(rep: Report) -> list[str]:
    """One line per difference, as `pybuild diff` prints them (also the check's report)."""
    out = []
    for r in rep.rows:
        if r["kind"] != "layer":
            if r["change"] == "changed":
                out.append(f"{r['kind']} {r['path']}: {_show(r['a'])} -> {_show(r['b'])}")
            else:
                v = r["b"] if r["a"] is None else r["a"]
                out.append(f"{r['kind']} {r['path']}: {r['change']} ({_show(v)})")
            continue
        step = f" [{_short(r['step'])}]" if r.get("step") else ""
        if r["change"] != "changed":
            out.append(f"layer {r['layer']}{step}: {r['change']}")
            continue
        out.append(f"layer {r['layer']}{step}: {r['a']} -> {r['b']}")
        for f in r["files"]:
            p = "/" + f["path"]
            if f["change"] == "added":
                out.append(f"  + {p}: added ({_entry_text(f['b'])})")
            elif f["change"] == "removed":
                out.append(f"  - {p}: removed ({_entry_text(f['a'])})")
            else:
                parts = []
                lines = []
                for k, v in f["attrs"].items():
                    if k == "content":
                        sa, sb = v["size"]
                        parts.append("content" + (f" ({sa} -> {sb} bytes)" if sa != sb else ""))
                        lines = v.get("lines") or []
                    elif k in ("order", "tar encoding"):
                        parts.append(v["a"] if k == "order" else "tar bytes (same entries)")
                    elif k in ("mode", "owner", "mtime", "device", "type"):
                        parts.append(f"{k} {v['a']} -> {v['b']}")
                    else:
                        parts.append(f"{k} {_show(v['a'])} -> {_show(v['b'])}")
                out.append(f"  ~ {p}: {', '.join(parts)}")
                out.extend(f"      {ln}" for ln in lines)
    return out


def _entry_text(d: dict) -> str:
    bits = [d["type"], d["mode"], d["owner"]]
    if d["type"] == "file":
        bits.append(f"{d['size']} bytes")
    if "link target" in d:
        bits.append("-> " + d["link target"])
    return ", ".join(bits)


def _short(text: str, n: int = 60) -> str:
    text = " ".join(text.split()).replace("RUN /bin/sh -c ", "RUN ", 1).removesuffix(" # buildkit")
    return text if len(text) <= n else text[:n - 3] + "..."


def _show(v) -> str:
    if isinstance(v, str):
        return json.dumps(v) if len(v) <= 120 else json.dumps(v[:117] + "...")
    s = json.dumps(v, sort_keys=True)
    return s if len(s) <= 120 else s[:117] + "..."


def to_json(rep: Report) -> dict:
    def side(i: Image) -> dict:
        return {"name": i.label, "source": i.kind, "id": i.image_id,
                "manifest": i.manifest_digest, "index": i.index_digest}
    return {"same": rep.same, "a": side(rep.a), "b": side(rep.b), "differences": rep.rows}

