"""The snapshotter: overlayfs where it works, else the native copy (`runtime.snapshot`).

Where overlayfs cannot be used (not in the kernel, or the store's filesystem cannot hold an upper
dir, e.g. overlay on overlay), `snapshotter` picks the native one, saying so once per process on
stderr; `PYBUILD_SNAPSHOTTER=overlay|native` forces either. The probe that decides mounts a test
overlay once per filesystem and boot: its answer is kept in /run/pybuild/overlay-probe, keyed by
what it depends on, so a run mounts none; a mount refused where that said overlay works drops the
entry (`forget`) and probes again, `mounted` then falling back on the native copy.
`mounted` (COPY, WORKDIR, RUN --mount=from) and the sandbox's rootfs both follow that choice, so
callers never see it. This module sits above `runtime.overlay` and `runtime.snapshot`, which
know nothing of each other's choice.
"""
from __future__ import annotations

import _thread
import errno
import os
import sys
from _collections_abc import Iterator, Sequence

from cache.fspath import remove_tree
from runtime import kernel, lazyctx, overlay, snapshot
from runtime.errors import KernelCallError, SandboxError
from runtime.privileges import require_root

TYPE_CHECKING = False
if TYPE_CHECKING:       # annotations only: pathlib is imported where a Path is made
    from pathlib import Path

SNAPSHOTTER_ENV = "PYBUILD_SNAPSHOTTER"
# errnos of an overlay mount that mean "not here" rather than "something broke"
_UNUSABLE = {errno.ENODEV, errno.EINVAL, errno.EPERM, errno.EACCES, errno.EOPNOTSUPP,
             errno.ENOSYS, errno.EXDEV, errno.ENOTDIR}
_choice: dict[int, str] = {}     # st_dev of where upper dirs go -> "overlay" | "native"
_noticed = False
_choice_lock = _thread.allocate_lock()   # threading.Lock, without importing threading
PROBE_CACHE = "/run/pybuild/overlay-probe"     # the probe's answers: `<_fs_key> overlay|native why`
_boot: str | None = None


def snapshotter(base: str | os.PathLike | None = None) -> str:
    """"overlay" or "native" for upper dirs made under `base` (default: the temp dir).

    PYBUILD_SNAPSHOTTER=overlay|native decides; otherwise (auto) a probe mounts a tiny overlay
    with its upper dir in `base` once per filesystem and boot (its answer is kept in
    PROBE_CACHE, `_probed`). A refusal that means overlay is unusable there (ENODEV, EINVAL,
    EPERM, ...) selects the native snapshotter and prints one notice line on stderr, once per
    process.
    """
    global _noticed
    mode = os.environ.get(SNAPSHOTTER_ENV, "") or "auto"
    if mode in ("overlay", "native"):
        return mode
    if mode != "auto":
        raise SandboxError(f"{SNAPSHOTTER_ENV}={mode!r} is not a snapshotter: use overlay, native "
                           "or auto (the default: overlay where it works)")
    if base is None:
        import tempfile
        base = tempfile.gettempdir()
    base = os.fspath(base)
    dev = os.stat(base).st_dev
    with _choice_lock:
        got = _choice.get(dev)
        if got is None:
            problem = _probed(base)
            got = _choice[dev] = "native" if problem else "overlay"
            if problem and not _noticed:
                _noticed = True
                print(f"pybuild: notice: {problem}; using the native snapshotter (slower: each step "
                      f"copies its rootfs). {SNAPSHOTTER_ENV}=native skips this check.",
                      file=sys.stderr, flush=True)
    return got


def _fs_key(base: str) -> str:
    """What the probe's answer depends on: this boot and kernel (PROBE_CACHE may outlive a
    reboot where /run is no tmpfs), whether overlay is loaded (a later modprobe), the user
    namespace (overlay's trusted xattrs) and the filesystem of base (device, fsid and mount
    flags: an overlay or a new mount on a reused device number differs in fsid)."""
    global _boot
    if _boot is None:
        try:
            with open("/proc/sys/kernel/random/boot_id") as f:
                _boot = f.read().strip()
        except OSError:
            _boot = "?"
    st, vfs = os.stat(base), os.statvfs(base)
    try:
        ns = os.readlink("/proc/self/ns/user")
    except OSError:
        ns = "?"
    try:
        with open("/proc/filesystems", "rb") as f:
            loaded = int(b"\toverlay\n" in f.read())
    except OSError:
        loaded = 2
    return (f"{_boot}/{os.uname().release}/{loaded}/{ns}/{st.st_dev}/{vfs.f_fsid:x}/"
            f"{vfs.f_flag:x}")


def _cache_lines() -> list[str]:
    try:
        with open(PROBE_CACHE, encoding="utf-8", errors="replace") as f:
            return f.read().splitlines()
    except OSError:
        return []


def _store(key: str, answer: str | None) -> None:
    """Record answer ("overlay" or "native <why>") for key in PROBE_CACHE, None: drop key's
    entry; entries of an earlier boot go, and all but the latest 32. Atomic; best effort (a
    read-only /run keeps probing)."""
    boot = key.split("/", 1)[0] + "/"
    lines = _cache_lines()
    keep = [ln for ln in lines if ln.startswith(boot) and ln.split(" ", 1)[0] != key]
    if answer is not None:
        keep = keep[-31:] + [f"{key} {answer}"]
    if keep == lines:
        return
    from cache.atomic import write_file
    try:
        os.makedirs(os.path.dirname(PROBE_CACHE), exist_ok=True)
        write_file(PROBE_CACHE, "".join(ln + "\n" for ln in keep).encode())
    except OSError:
        pass


def _probed(base: str) -> str | None:
    """overlay_problem(base), from PROBE_CACHE when it has the answer for base's filesystem
    (a run then mounts no probe), else probed and recorded."""
    try:
        key = _fs_key(base)
    except OSError:
        return overlay_problem(base)
    for line in _cache_lines():
        k, _, answer = line.partition(" ")
        if k == key:
            if answer == "overlay":
                return None
            if answer.startswith("native "):
                return answer[len("native "):]
    problem = overlay_problem(base)
    _store(key, "overlay" if problem is None else "native " + problem.replace("\n", " "))
    return problem


def forget(base: str | os.PathLike | None) -> None:
    """Drop what is known of overlay on base's filesystem (this process's choice and PROBE_CACHE's
    entry): a mount there was refused although it said overlay works, so the next use probes."""
    if base is None:
        import tempfile
        base = tempfile.gettempdir()
    base = os.fspath(base)
    try:
        dev, key = os.stat(base).st_dev, _fs_key(base)
    except OSError:
        return
    with _choice_lock:
        _choice.pop(dev, None)
    _store(key, None)


def overlay_problem(base: str) -> str | None:
    """Why an overlay with its upper dir under `base` cannot be mounted, or None if it can."""
    try:
        with open("/proc/filesystems") as f:
            listed = any(line.split()[-1:] == ["overlay"] for line in f)
    except OSError:
        listed = True
    from cache import owner

    probe = owner.temp_dir(base, "probe")
    try:
        dirs = [os.path.join(probe, n) for n in ("lower", "upper", "work", "merged")]
        for d in dirs:
            os.mkdir(d)
        try:
            overlay.mount_overlay(dirs[3], [dirs[0]], dirs[1], dirs[2])
        except KernelCallError as e:
            if e.errno not in _UNUSABLE:
                raise
            if e.errno == errno.ENODEV and not listed:
                return "overlayfs is not available (not in /proc/filesystems)"
            from runtime.mountinfo import filesystem_of
            where, fstype = filesystem_of(base)
            return (f"overlayfs refuses upper dirs on {where} ({fstype}): "
                    f"{os.strerror(e.errno)}")
        kernel.umount2(dirs[3], kernel.MNT_DETACH)
        return None
    finally:
        remove_tree(probe)


def writes_through(merged: str | os.PathLike, upperdir: str | os.PathLike) -> bool:
    """True when `merged` (from `mounted`) is an overlay over `upperdir`, so that an entry
    written into upperdir below a directory made through the mount is what the mount shows
    there; False for the native snapshotter's copy, whose changes reach upperdir only at
    the end. An overlay's directories have the overlay's own device number; the copy is a
    plain directory on upperdir's filesystem."""
    return os.stat(merged).st_dev != os.stat(upperdir).st_dev


@lazyctx.contextmanager
def mounted(lowerdirs: Sequence[Path], upperdir: Path | None = None,
            workdir: Path | None = None, *, tmp: str | os.PathLike | None = None,
            volatile: bool = False) -> Iterator[Path]:
    """A context manager yielding the merged Path of the layer dirs (top first).

    With overlayfs: an overlay in this process's mount namespace, unmounted on exit. Without
    upperdir the view is read-only. With an upperdir but no workdir, a work dir is made next to
    it (it must be on the same filesystem) and removed afterwards. With no lowerdirs an empty
    lower dir stands in, so the upper dir alone is what is seen. With the native snapshotter: a
    copy whose changes are written to upperdir on a clean exit (`runtime.snapshot.mounted`).
    Either way the upper dir ends in the same form (redundant opaque markers dropped).

    What the mount needs on disk goes next to upperdir (a store's scratch dir); a read-only view
    puts it in one dir named for this process (`mount-<pid>.<start>-...`, `cache.owner`) under
    `tmp` (the store's tmp/), so what a killed build leaves is what `pybuild prune` removes.
    Without either it uses the system temp dir (for callers outside a store). `volatile`
    (overlay only): no sync of the store's filesystem at unmount (`overlay.mount_overlay`).
    """
    import contextlib
    import shutil
    from pathlib import Path

    from cache import owner

    require_root()
    with contextlib.ExitStack() as stack:
        base = None
        if upperdir is not None:
            base = Path(upperdir).parent
        elif tmp is not None:
            base = Path(owner.temp_dir(tmp, "mount"))
            stack.callback(shutil.rmtree, base, ignore_errors=True)
        merged = None
        if snapshotter(base) == "overlay":
            try:
                merged = stack.enter_context(overlay.mounted(lowerdirs, upperdir, workdir, base=base,
                                                             volatile=volatile))
            except KernelCallError as e:
                if e.errno not in _UNUSABLE:
                    raise
                forget(base)                    # a cached answer gone wrong: probe again
                if snapshotter(base) != "native":
                    raise
        if merged is None:
            merged = stack.enter_context(snapshot.mounted(lowerdirs, upperdir, base=base))
        yield merged
