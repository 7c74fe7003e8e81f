"""`build --output`: what BuildKit's exporters write, as `docker build -o` spells them.

`-o DIR` is `type=local,dest=DIR` and `-o -` is `type=tar,dest=-` (docker's short forms).
`type=local` writes the final stage's filesystem into a directory, `type=tar` the same as a
tar archive (a file, or stdout: never a terminal), `type=oci|docker,dest=FILE` the image as
an archive (cache.archive), `type=registry[,name=REF]` pushes it. The filesystem is the merged
view of the image's layer dirs, whiteouts and opaque dirs applied: for a tar,
runtime.snapshotter's read-only view (the one RUN steps see) through cache.layers'
deterministic writer with the files' own times (the layers' times); for a directory,
runtime.snapshot.materialise of the layer dirs (the native snapshotter's copy) into a
temporary dir inside DEST, then merged in as BuildKit's exporter does (`_merge`: same-named
entries replaced, directories merged, the rest of DEST kept), so an interrupted export leaves
DEST as it was plus whole entries, never half a file; the next export removes a killed one's
temporary dir.
"""
from __future__ import annotations

import os
import sys

from builder.errors import BuildError

TYPES = ("local", "tar", "oci", "docker", "registry")


def parse(spec: str) -> dict[str, str]:
    """The fields of an --output value (type and dest filled in from docker's short forms)."""
    if "=" not in spec:            # docker: a bare value is a destination
        if not spec:
            raise BuildError("--output '': expected a directory, - or type=TYPE[,dest=PATH]")
        return {"type": "tar" if spec == "-" else "local", "dest": spec}
    fields = dict(f.partition("=")[::2] for f in spec.split(","))
    kind = fields.get("type")
    if kind is None and "dest" in fields:
        kind = fields["type"] = "local"
    if kind not in TYPES:
        raise BuildError(f"--output {spec!r}: type must be one of {', '.join(TYPES)}")
    if kind == "registry":
        unknown = sorted(set(fields) - {"type", "name", "push"})
        if unknown or fields.get("push", "true") != "true":
            raise BuildError(f"--output {spec!r}: type=registry takes name=REF (and push=true); "
                             f"not {', '.join(unknown) or 'push=' + fields['push']}")
        return fields
    if not fields.get("dest"):
        raise BuildError(f"--output {spec!r}: type={kind} needs dest=PATH")
    if fields["dest"] == "-" and kind == "local":
        raise BuildError(f"--output {spec!r}: type=local writes a directory: use type=tar,dest=-")
    return fields


def write(store, image_id: str, name: str, output: dict[str, str], compression: str) -> None:
    """Write `output` (a non-registry `parse` result) for the built image."""
    kind, dest = output["type"], output["dest"]
    if kind in ("oci", "docker"):
        from builder.commands.images import save_to

        save_to(store, [name], dest, fmt=kind, compression=compression)
        return
    if kind == "tar" and dest == "-" and sys.stdout.isatty():
        raise BuildError("--output type=tar,dest=-: refusing to write a tar archive to a terminal; "
                         "redirect stdout or give dest=FILE")
    img = store.image(image_id)
    dirs = store.layer_dirs(img.diff_ids)
    if kind == "local":
        _local(dirs, dest)
        return
    tar_of(dirs, store.tmp, dest)


def tar_of(dirs: list, tmp, dest: str) -> None:
    """The merged filesystem of layer dirs (top first) as a tar: into file dest (replaced
    whole), or stdout for `-` (build's type=tar, `container export`)."""
    from runtime.snapshotter import mounted

    with mounted(dirs, tmp=tmp) as view:
        _tar(view, dest)


def _tar(view, dest: str) -> None:
    from cache.layers import write_tar

    if dest == "-":
        sys.stdout.flush()
        write_tar(view, sys.stdout.buffer, epoch=None, hash_tar=False)
        sys.stdout.buffer.flush()
        return
    from cache import atomic

    try:
        with atomic.replacing(dest) as f:
            write_tar(view, f, epoch=None, hash_tar=False)
    except OSError as e:
        raise BuildError(f"failed to write {dest}: {e.strerror}") from None


_TMP = ".pybuild-"      # the export's own temporary dir in DEST: ".pybuild-export-<owner>-..."


def _local(dirs: list, dest: str) -> None:
    from cache import owner
    from cache.fspath import remove_tree
    from runtime.snapshot import materialise

    try:
        os.makedirs(dest, exist_ok=True)
        for name in os.listdir(dest):       # what a killed export left (its owner is gone)
            tok = owner.of_name(name[len(_TMP):]) if name.startswith(_TMP) else None
            if tok is not None and not owner.alive(tok):
                remove_tree(os.path.join(dest, name))
        while True:
            tmp = os.path.join(dest, _TMP + owner.temp_name("export"))
            try:
                os.mkdir(tmp, 0o700)
                break
            except FileExistsError:
                continue
    except OSError as e:
        raise BuildError(f"failed to write {dest}: {e.strerror}") from None
    try:
        materialise(dirs, tmp)
        _merge(tmp, dest)
    except OSError as e:
        raise BuildError(f"failed to write {dest}: {e.strerror}") from None
    finally:
        remove_tree(tmp)


def _merge(src: str, dest: str) -> None:
    """Move the export's tree `src` into `dest` as BuildKit's local exporter merges (fsutil
    Receive with Merge): its entries replace same-named ones, directories are merged (they
    take the export's mode and owner), and what else DEST holds is kept. An entry whose type
    differs from the export's (a directory where the export has a file) is replaced whole.
    Never follows a link in DEST: a symlink there is replaced, not written through."""
    import stat

    from cache.fspath import remove_tree

    stack = [(src, dest)]
    while stack:
        s_dir, d_dir = stack.pop()
        for name in sorted(os.listdir(s_dir)):
            s, d = os.path.join(s_dir, name), os.path.join(d_dir, name)
            st = os.lstat(s)
            try:
                dt = os.lstat(d)
            except FileNotFoundError:
                dt = None
            if stat.S_ISDIR(st.st_mode) and dt is not None and stat.S_ISDIR(dt.st_mode):
                os.chown(d, st.st_uid, st.st_gid)
                os.chmod(d, stat.S_IMODE(st.st_mode))
                stack.append((s, d))
                continue
            if dt is not None and stat.S_ISDIR(dt.st_mode):
                remove_tree(d)
            os.rename(s, d)
