"""Volumes for `pybuild run`: docker's -v / --mount / --tmpfs specs, named and anonymous volumes
kept under `<store root>/volumes/<name>/` (volume.json: created time, labels, anonymous; the
data in `_data`, docker's layout), and docker's copy-up of the image's content into a new one.

A container's record keeps its mounts as plain dicts (`parse_*` make them, `prepare` resolves
them: volumes made, missing bind sources created as docker's -v does, copy-up done) and
`to_spec` turns them into runtime.spec.Mount (a volume is a bind of its `_data`). Which
containers use a volume is read from the container records, so there is no use count to drift.
"""
from __future__ import annotations

import os

from runtime.containers.names import valid_name
from runtime.errors import ConfigError, ContainerError

META = "volume.json"
DATA = "_data"
# ---- the user's specs -> mount dicts ---------------------------------------------------------

def _target(target: str, spec: str) -> str:
    if not target.startswith("/"):
        raise ConfigError(f"invalid mount config: mount path must be absolute: {spec!r}")
    if ".." in target.split("/"):
        raise ConfigError(f"invalid mount config: the container path must not contain '..': {spec!r}")
    if not target.strip("/"):
        raise ConfigError(f"invalid mount config: destination can't be '/': {spec!r}")
    return "/" + "/".join(p for p in target.split("/") if p and p != ".")


def _source_kind(source: str, spec: str) -> str:
    if source.startswith("/"):
        return "bind"
    if not valid_name(source):
        raise ConfigError(f'create {source}: "{source}" includes invalid characters for a local '
                          f'volume name, only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you '
                          f'intended to pass a host directory, use absolute path')
    return "volume"


def parse_v(spec: str) -> dict:
    """-v SRC:DST[:ro|rw] (SRC absolute: a bind; else a volume name) or -v DST (anonymous)."""
    parts = spec.split(":")
    mode = ""
    if len(parts) == 3 or (len(parts) == 2 and parts[1] in ("ro", "rw")):
        mode = parts.pop()
    if mode not in ("", "ro", "rw") or len(parts) not in (1, 2) or not all(parts):
        raise ConfigError(f"invalid volume specification: {spec!r}")
    ro = mode == "ro"
    if len(parts) == 1:
        return {"type": "volume", "source": "", "target": _target(parts[0], spec), "readonly": ro}
    src, dst = parts
    kind = _source_kind(src, spec)
    return {"type": kind, "source": os.path.normpath(src) if kind == "bind" else src,
            "target": _target(dst, spec), "readonly": ro, "create_source": kind == "bind"}


def _size(text: str) -> str:
    import re

    m = re.fullmatch(r"(\d+)([bkmg]?)b?", text.strip().lower())
    if not m:
        raise ConfigError(f"invalid tmpfs size {text!r}")
    return m.group(1) + (m.group(2) if m.group(2) != "b" else "")


def parse_mount(spec: str) -> dict:
    """--mount type=bind|volume|tmpfs,source=,target=,readonly[,tmpfs-size=,tmpfs-mode=]."""
    import csv

    fields = next(csv.reader([spec]), [])
    kv: dict[str, str] = {}
    ro = False
    for f in fields:
        key, eq, value = f.partition("=")
        key = key.strip().lower()
        if key in ("readonly", "ro"):
            ro = not eq or value.lower() in ("1", "true")
            continue
        if not eq:
            raise ConfigError(f"invalid field '{f}' must be a key=value pair")
        if key in ("src", "source"):
            key = "source"
        elif key in ("dst", "destination", "target"):
            key = "target"
        elif key not in ("type", "tmpfs-size", "tmpfs-mode", "bind-propagation",
                         "volume-nocopy", "consistency"):
            raise ConfigError(f"unexpected key '{key}' in '{f}'")
        kv[key] = value
    kind = kv.get("type", "volume")
    if kind not in ("bind", "volume", "tmpfs"):
        raise ConfigError(f"invalid mount type {kind!r}: use bind, volume or tmpfs")
    if "target" not in kv:
        raise ConfigError("invalid argument for --mount: target is required")
    target = _target(kv["target"], spec)
    source = kv.get("source", "")
    if kind == "tmpfs":
        if source:
            raise ConfigError(f"invalid mount config for type \"tmpfs\": source must not be given: {spec!r}")
        opts = []
        if "tmpfs-size" in kv:
            opts.append("size=" + _size(kv["tmpfs-size"]))
        if "tmpfs-mode" in kv:
            opts.append("mode=" + kv["tmpfs-mode"])
        return {"type": "tmpfs", "source": "", "target": target, "readonly": ro, "options": opts}
    if kind == "bind":
        if not source.startswith("/"):
            raise ConfigError(f"invalid mount config for type \"bind\": source must be an "
                              f"absolute path: {spec!r}")
        if not os.path.exists(source):   # --mount does not create it (docker's rule)
            raise ConfigError(f"invalid mount config for type \"bind\": bind source path does "
                              f"not exist: {source}")
        return {"type": "bind", "source": os.path.normpath(source), "target": target, "readonly": ro}
    if source:
        _source_kind(source, spec)
        if source.startswith("/"):
            raise ConfigError(f"invalid mount config for type \"volume\": invalid volume name "
                              f"{source!r}")
    return {"type": "volume", "source": source, "target": target, "readonly": ro,
            "nocopy": kv.get("volume-nocopy", "").lower() in ("1", "true")}


def parse_tmpfs(spec: str) -> dict:
    """--tmpfs DST[:opts] (mount(8) options: size=64m,mode=1777,ro,...)."""
    dst, _, opts = spec.partition(":")
    options, ro = [], False
    for o in filter(None, opts.split(",")):
        if o == "ro":
            ro = True
        elif o != "rw":
            options.append(o)
    return {"type": "tmpfs", "source": "", "target": _target(dst, spec), "readonly": ro,
            "options": options}


def parse_all(vs, mounts, tmpfs) -> list[dict]:
    """Every mount flag of one `run`, checked for two mounts on one target."""
    out = [parse_v(s) for s in vs] + [parse_mount(s) for s in mounts] + [parse_tmpfs(s) for s in tmpfs]
    seen = set()
    for m in out:
        if m["target"] in seen:
            raise ConfigError(f"Duplicate mount point: {m['target']}")
        seen.add(m["target"])
    return out


def volumes_from(root, specs, mounts: list[dict]) -> list[dict]:
    """docker --volumes-from C[:ro|rw]: C's volumes and binds at their targets (ro/rw as
    given, else as C has them), then `mounts` (the -v/--mount/--tmpfs ones, which win a target
    both have). Its volumes are then shared by name, never anonymous here: `rm -v` of either
    leaves them to the other."""
    if not specs:
        return mounts
    from runtime.containers.state import Containers

    cs, taken = Containers(root), {m["target"] for m in mounts}
    out: dict[str, dict] = {}
    for spec in specs:
        ref, _, mode = spec.partition(":")
        if mode not in ("", "ro", "rw"):
            raise ConfigError(f"invalid mode: {mode}")
        for m in cs.get(ref).config.get("mounts") or []:
            if m.get("type") not in ("volume", "bind") or m["target"] in taken:
                continue
            m = {k: v for k, v in m.items() if k != "anonymous"}
            if mode:
                m["readonly"] = mode == "ro"
            out[m["target"]] = m
    return [*out.values(), *mounts]


def image_volumes(mounts: list[dict], volumes) -> list[dict]:
    """The image's VOLUME paths as anonymous volumes after the user's mounts, as docker run
    makes them: a path one of `mounts` already targets is left to that mount; relative paths
    are taken from /, and `/` itself (which docker refuses) is skipped."""
    out = list(mounts)
    taken = {m["target"] for m in mounts}
    for path in sorted(volumes or ()):
        target = "/" + "/".join(p for p in path.split("/") if p and p != ".")
        if target == "/" or ".." in target.split("/") or target in taken:
            continue
        taken.add(target)
        out.append({"type": "volume", "source": "", "target": target, "readonly": False})
    return out


# ---- volumes on disk -------------------------------------------------------------------------

class Volumes:
    """The volumes of one store root."""

    def __init__(self, root):
        self.root = os.fspath(root)

    @property
    def dir(self) -> str:
        from cache import layout

        return os.path.join(self.root, layout.VOLUMES_DIR)

    def _lock(self):
        from cache import atomic

        os.makedirs(self.dir, exist_ok=True)
        return atomic.Lock(os.path.join(self.dir, "lock"))

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def mountpoint(self, name: str) -> str:
        return os.path.join(self.dir, name, DATA)

    def meta(self, name: str) -> dict | None:
        import json

        try:
            with open(os.path.join(self.path(name), META), "rb") as f:
                value = json.load(f)
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def names(self) -> list[str]:
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if valid_name(n) and self.meta(n) is not None)

    def create(self, name: str | None = None, labels: dict | None = None,
               anonymous: bool = False) -> tuple[str, bool]:
        """(name, made now): an existing volume is reused, as docker's create does."""
        from cache import atomic, layout, owner
        from runtime.containers.state import now

        if name is None:
            name = os.urandom(32).hex()
        elif not valid_name(name):
            _source_kind(name, name)
        with self._lock().held():
            if self.meta(name) is not None:
                return name, False
            tmp = os.path.join(self.root, layout.TMP_DIR)
            os.makedirs(tmp, exist_ok=True)
            staging = owner.temp_dir(tmp, "vol")
            try:
                os.mkdir(os.path.join(staging, DATA), 0o755)
                atomic.write_json(os.path.join(staging, META), {
                    "CreatedAt": now().split(".")[0] + "Z", "Labels": labels or {},
                    "Anonymous": anonymous})
                os.chmod(staging, 0o701)
                os.rename(staging, self.path(name))
            except BaseException:
                import shutil
                shutil.rmtree(staging, ignore_errors=True)
                raise
        return name, True

    def doc(self, name: str) -> dict:
        """docker volume inspect's object."""
        meta = self.meta(name)
        if meta is None:
            raise ContainerError(f"get {name}: no such volume")
        return {"CreatedAt": meta.get("CreatedAt", ""), "Driver": "local",
                "Labels": meta.get("Labels") or {}, "Mountpoint": self.mountpoint(name),
                "Name": name, "Options": None, "Scope": "local"}

    def users(self, name: str) -> list[str]:
        """IDs of the containers (any state) whose record mounts the volume."""
        from runtime.containers.state import Containers

        return [c.id for c in Containers(self.root).all()
                if any(m.get("type") == "volume" and m.get("source") == name
                       for m in c.config.get("mounts") or [])]

    def remove(self, name: str, force: bool = False) -> None:
        if self.meta(name) is None:
            raise ContainerError(f"get {name}: no such volume")
        from cache import layout, owner

        users = self.users(name)
        if users and not force:
            raise ContainerError(f"remove {name}: volume is in use - [{', '.join(users)}]")
        gone = os.path.join(self.root, layout.TMP_DIR, owner.temp_name("rmvol"))
        with self._lock().held():
            try:
                os.rename(self.path(name), gone)
            except FileNotFoundError:
                raise ContainerError(f"get {name}: no such volume") from None
        import shutil

        shutil.rmtree(gone, ignore_errors=True)

    def remove_anonymous(self, mounts: list) -> None:
        """`rm -v` / `run --rm`: the container's anonymous volumes go with it, unless another
        container (--volumes-from) mounts them too."""
        for m in mounts or []:
            if m.get("type") == "volume" and m.get("anonymous") and not self.users(m["source"]):
                try:
                    self.remove(m["source"], force=True)
                except ContainerError:
                    pass


# ---- at run time -----------------------------------------------------------------------------

def prepare(root, mounts: list[dict], lowerdirs: list) -> list[dict]:
    """Make what the mounts need: volumes (named ones on first use, anonymous ones always,
    filled from the image when new), missing -v bind sources (as docker does). Returns the
    mounts with every volume's name filled in, as a container's record keeps them."""
    vols = Volumes(root)
    out, fill = [], []
    for m in mounts:
        m = dict(m)
        if m["type"] == "volume":
            anonymous = not m["source"]
            name, new = vols.create(m["source"] or None, anonymous=anonymous)
            m["source"], m["anonymous"] = name, anonymous
            if new and not m.pop("nocopy", False):
                fill.append((m["target"], vols.mountpoint(name)))
        elif m["type"] == "bind" and m.pop("create_source", False) and not os.path.exists(m["source"]):
            os.makedirs(m["source"], 0o755, exist_ok=True)
        out.append(m)
    if fill:
        copy_up(root, lowerdirs, fill)
    return out


def to_spec(root, mounts: list[dict]) -> list:
    """The record's mounts as runtime.spec.Mount (a volume: a bind of its _data)."""
    from runtime.spec import Mount

    vols = Volumes(root)
    out = []
    for m in mounts or []:
        if m["type"] == "volume":
            if vols.meta(m["source"]) is None:
                raise ContainerError(f"volume {m['source']} is gone; recreate it or the container")
            out.append(Mount(target=m["target"], source=vols.mountpoint(m["source"]),
                             readonly=m["readonly"]))
        elif m["type"] == "tmpfs":
            out.append(Mount(target=m["target"], type="tmpfs", readonly=m["readonly"],
                             options=list(m.get("options") or [])))
        else:
            out.append(Mount(target=m["target"], source=m["source"], readonly=m["readonly"]))
    return out


def inspect_mounts(root, mounts: list[dict]) -> list[dict]:
    """docker inspect's Mounts of a container."""
    vols = Volumes(root)
    out = []
    for m in mounts or []:
        d = {"Type": m["type"]}
        if m["type"] == "volume":
            d.update(Name=m["source"], Source=vols.mountpoint(m["source"]), Driver="local")
        else:
            d["Source"] = m["source"]
        d.update(Destination=m["target"], Mode="" if m["type"] != "volume" else "z",
                 RW=not m["readonly"], Propagation="rprivate" if m["type"] == "bind" else "")
        out.append(d)
    return out


def copy_up(root, lowerdirs: list, fill: list[tuple[str, str]]) -> None:
    """docker's copy-up: what the image has at each target (a directory) is copied, with modes,
    owners and times, into the new empty volume dir. Done in a forked child in a mount namespace
    of its own over a read-only view of the layers; each target is opened with openat2
    RESOLVE_IN_ROOT, so an image's symlink cannot point the copy outside the image."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            _copy_up_child(root, lowerdirs, fill)
            os._exit(0)
        except BaseException as e:  # noqa: BLE001 - reported through the pipe
            os.write(w, str(e).replace("\n", " ").encode()[:4000])
            os._exit(1)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        msg = f.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise ConfigError(f"could not fill the volume from the image: {msg or 'copy failed'}")


def _copy_up_child(root, lowerdirs, fill) -> None:
    import errno
    import stat

    from cache import layout
    from runtime import kernel, mountns, snapshotter
    from runtime.errors import KernelCallError

    mountns.enter_private()
    with snapshotter.mounted([os.fspath(d) for d in lowerdirs],
                             tmp=os.path.join(os.fspath(root), layout.TMP_DIR)) as merged:
        rootfd = os.open(merged, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        for target, dest in fill:
            try:
                fd = kernel.openat2(rootfd, target, os.O_PATH | os.O_CLOEXEC,
                                    kernel.RESOLVE_IN_ROOT | kernel.RESOLVE_NO_MAGICLINKS)
            except KernelCallError as e:
                if e.errno in (errno.ENOENT, errno.ENOTDIR):
                    continue
                raise
            try:
                st = os.fstat(fd)
                if not stat.S_ISDIR(st.st_mode) or os.listdir(dest):
                    continue
                src = os.readlink(f"/proc/self/fd/{fd}")   # a real path in our private mount
                _copy_tree(src, dest)
                os.chown(dest, st.st_uid, st.st_gid)
                os.chmod(dest, stat.S_IMODE(st.st_mode))
                os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(fd)


def _copy_tree(src: str, dst: str) -> None:
    """Copy src's entries into the existing dir dst: files, dirs, symlinks (not followed),
    devices and fifos, with owner, mode and times."""
    import shutil
    import stat

    for entry in os.scandir(src):
        s, d = entry.path, os.path.join(dst, entry.name)
        st = entry.stat(follow_symlinks=False)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            os.mkdir(d, 0o700)
            _copy_tree(s, d)
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(s), d)
        elif stat.S_ISREG(mode):
            with open(s, "rb") as fi, open(d, "xb") as fo:
                shutil.copyfileobj(fi, fo, 1 << 20)
        elif stat.S_ISSOCK(mode):
            continue
        else:
            os.mknod(d, mode, st.st_rdev)
        os.lchown(d, st.st_uid, st.st_gid)
        if not stat.S_ISLNK(mode):
            os.chmod(d, stat.S_IMODE(mode))
        os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
