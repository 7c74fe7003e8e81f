"""Read a docker-archive (what `docker save` and `pybuild save` write) into what a user of the
image sees: the config, and the flattened filesystem as a normalised listing.

Both sides go through this same reader, so a difference is a difference in the images, not in how
we looked at them. Layers are applied as the OCI spec says: a layer's whiteouts (`.wh.name`,
`.wh..wh..opq`) remove entries of the layers below it, then its own entries are added.
"""
from __future__ import annotations

import hashlib
import json
import stat
import tarfile
from dataclasses import dataclass

_TYPES = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.DIRTYPE: "dir",
          tarfile.SYMTYPE: "symlink", tarfile.FIFOTYPE: "fifo", tarfile.CHRTYPE: "char",
          tarfile.BLKTYPE: "block", tarfile.CONTTYPE: "file"}


@dataclass(frozen=True)
class Node:
    """One inode: hard links in a layer share the same Node object."""
    type: str
    mode: int
    uid: int
    gid: int
    size: int
    sha256: str
    target: str  # symlink target, or "major,minor" of a device


@dataclass
class Image:
    config: dict
    files: dict[str, Node]  # "/abs/path" -> Node (hard-linked paths share the object)
    layers: int

    def listing(self) -> dict[str, tuple]:
        """path -> (type, mode octal, uid, gid, size, sha256, target, nlink)."""
        nlink: dict[int, int] = {}
        for n in self.files.values():
            nlink[id(n)] = nlink.get(id(n), 0) + 1
        return {p: (n.type, oct(n.mode), n.uid, n.gid, n.size, n.sha256[:16], n.target,
                    nlink[id(n)] if n.type == "file" else 1)
                for p, n in self.files.items()}


def _norm(name: str) -> str:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    return "/" + "/".join(parts)


def _node(tf: tarfile.TarFile, m: tarfile.TarInfo) -> Node:
    kind = _TYPES.get(m.type)
    if kind is None:
        raise ValueError(f"unexpected tar member type {m.type!r} for {m.name}")
    digest, size, target = "", 0, ""
    if kind == "file":
        h = hashlib.sha256()
        f = tf.extractfile(m)
        assert f is not None
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
        digest, size = h.hexdigest(), m.size
    elif kind == "symlink":
        target = m.linkname
    elif kind in ("char", "block"):
        target = f"{m.devmajor},{m.devminor}"
    return Node(kind, stat.S_IMODE(m.mode), m.uid, m.gid, size, digest, target)


def _apply(files: dict[str, Node], tf: tarfile.TarFile) -> None:
    adds: list[tuple[str, tarfile.TarInfo]] = []
    for m in tf:
        path = _norm(m.name)
        parent, _, base = path.rpartition("/")
        if base == ".wh..wh..opq":
            prefix = (parent or "") + "/"
            for p in [p for p in files if p.startswith(prefix)]:
                del files[p]
        elif base.startswith(".wh."):
            gone = f"{parent}/{base[4:]}"
            for p in [p for p in files if p == gone or p.startswith(gone + "/")]:
                del files[p]
        else:
            adds.append((path, m))
    here: dict[str, Node] = {}
    for path, m in adds:
        if m.type == tarfile.LNKTYPE:
            node = here.get(_norm(m.linkname)) or files[_norm(m.linkname)]
        else:
            node = _node(tf, m)
        old = files.get(path)
        if old is not None and old.type == "dir" and node.type != "dir":
            for p in [p for p in files if p.startswith(path + "/")]:
                del files[p]
        files[path] = here[path] = node


def read_archive(path) -> Image:
    """The single image in a docker-archive at `path`."""
    with tarfile.open(path) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))
        assert len(manifest) == 1, manifest
        config = json.load(outer.extractfile(manifest[0]["Config"]))
        files: dict[str, Node] = {}
        for layer in manifest[0]["Layers"]:
            with tarfile.open(fileobj=outer.extractfile(layer), mode="r:*") as tf:
                _apply(files, tf)
    files.pop("/", None)
    return Image(config, files, len(manifest[0]["Layers"]))
