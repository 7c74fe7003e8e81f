"""The host side of one sandbox run: its run dir before the fork, and what is left after.

Before: a private run dir (next to the caller's upper dir, so the native snapshotter's tree and
the upper dir share a filesystem) holding a throw-away upper/work pair when the caller gave none,
the stub layer of mount points (`rootfs.make_stub`) and, for the native snapshotter, the copied
tree and its snapshot; the generated /etc files and the mount point of the rootfs beside them,
on the process's private tmpfs when it has one (`mountns.private_tmpfs`); all of it as a
`rootfs.MountPlan` for pid 1. After: mount points the sandbox had to create are removed from the
upper dir, the command's changes are left there in the one form both snapshotters give, and the
run dir goes.
"""
from __future__ import annotations

import os
import stat

from cache.fspath import remove_tree
from runtime import etcfiles, kernel, mountns, rootfs, snapshot
from runtime.errors import KernelCallError, SandboxError
from runtime.snapshotter import snapshotter
from runtime.spec import SandboxSpec


class RunDir:
    """Everything on disk for one run; `plan` is what pid 1 mounts."""

    def __init__(self, spec: SandboxSpec, net=None):
        from cache import owner

        if spec.upperdir is not None:
            base = _parent(os.fspath(spec.upperdir))
        else:
            import tempfile
            base = tempfile.gettempdir()
        native = snapshotter(base) == "native"
        self.base = base        # where upper dirs go: the overlay probe's answer is this fs's
        self.path = owner.temp_dir(base, "run")
        self.keep = spec.upperdir is not None      # the caller's upper dir: its changes are wanted
        self.net = net      # runtime.network.attach.Attachment (bridge): released in remove()
        self.side = self.path
        try:
            # --- perf: the /etc files and the mount point on the namespace's tmpfs ---
            # (not on a network: its peers rewrite our /etc/hosts by path, from their processes;
            # nor the stub, a lower layer: one on another fs changes the st_dev overlay reports)
            fast = mountns.private_tmpfs() if net is None else None
            if fast is not None:
                self.side = owner.temp_dir(fast, "run")
            # --- end perf ---
            self.upper = (os.fspath(spec.upperdir) if spec.upperdir is not None
                          else os.path.join(self.path, "upper"))
            work = (os.fspath(spec.workdir) if spec.workdir is not None
                    else os.path.join(self.path, "work"))
            for d in (self.upper, work):
                if not os.path.isdir(d):
                    os.makedirs(d)
                    os.chmod(d, 0o755)  # the upper dir's root is the container's /: 0755 as
                    # docker's diff dirs, whatever the caller's umask (077 left / unusable)
            stub = os.path.join(self.path, "stub")
            # --- perf: a stub of only what no layer has (none at all when every layer has it) ---
            stubs = [stub] if rootfs.make_stub(stub, spec.mounts, spec.lowerdirs) else []
            # --- end perf ---
            etc = os.path.join(self.side, "etc")
            os.mkdir(etc)
            lease = net.lease if net is not None else None
            if net is not None:     # --mac-address, and a user network's DNS upstreams
                net.configure(spec)
            etc_files = etcfiles.write(etc, spec.hostname, spec.network,
                                       lease.ip if lease and not spec.own_hosts else "",
                                       lease.gateway if lease else "",
                                       spec.extra_hosts, spec.dns,
                                       embedded=spec.endpoint is not None)
            self.rootdir = os.path.join(self.side, "root")
            os.mkdir(self.rootdir)
            self.lowers = [os.fspath(d) for d in spec.lowerdirs] + stubs   # what the command sees
            self.tree, self.snap = "", None   # native snapshotter: the copied rootfs, its snapshot
            if native:
                self.tree, self.snap = self._native_tree()
            self.plan = rootfs.MountPlan(rootdir=self.rootdir, lowerdirs=self.lowers,
                                         upperdir=self.upper, workdir=work, etc_files=etc_files,
                                         mounts=list(spec.mounts),
                                         new_netns=spec.network != "host", tree=self.tree,
                                         readonly=spec.readonly_rootfs, shm_size=spec.shm_size,
                                         sysctls=spec.sysctls,
                                         # a throw-away upper dir, or one its caller syncs
                                         volatile=spec.volatile or not self.keep)
        except BaseException:
            self.remove()
            raise

    def _native_tree(self):
        """The native snapshotter's rootfs: the layers (stub at the bottom, so mount points never
        reach the diff, as with overlay) copied into <run dir>/tree, and its snapshot when kept."""
        tree = os.path.join(self.path, "tree")
        os.mkdir(tree, 0o755)
        try:
            origins = snapshot.materialise(self.lowers, tree)
            if not self.keep:
                return tree, None
            snap = snapshot.Snapshot.take(tree, origins)
            snapshot.settle(snap, self.path)
        except OSError as e:
            raise SandboxError(f"cannot copy the image's layers for the native snapshotter: "
                               f"{e.strerror}: {os.fsdecode(e.filename or '')}") from None
        return tree, snap

    def finish(self, created: list, collect: bool) -> None:
        """After the tree exited: drop created mount points, record changes (when kept and
        collect), remove the run dir."""
        try:
            _remove_placeholders(self.tree or self.upper, self.rootdir, created)
            if self.keep and collect:
                self._collect()
        finally:
            self.remove()

    def remove(self) -> None:
        try:
            if self.net is not None:
                net, self.net = self.net, None
                net.release()
        finally:
            remove_tree(self.path)
            if self.side != self.path:
                remove_tree(self.side)

    def _collect(self) -> None:
        """Leave the command's changes in the upper dir in the one form both snapshotters give."""
        try:
            if self.tree:
                snapshot.diff(self.tree, self.snap, self.upper)
            else:
                snapshot.drop_redundant_opaque(self.upper, self.lowers)
        except OSError as e:
            raise SandboxError(f"cannot record the container's changes: {e.strerror}: "
                               f"{os.fsdecode(e.filename or '')}") from None


def _parent(path: str) -> str:
    """The directory holding path (pathlib's .parent, as a str: `a/b/` -> `a`, `b` -> `.`)."""
    return os.path.dirname(path.rstrip("/") or "/") or "."


def _remove_placeholders(upperdir: str, rootdir: str, created: list) -> None:
    """Remove mount points the sandbox had to create, from the upper dir, if still empty.

    Done by fd, refusing symlinks, and only for an empty dir or empty regular file, so a command
    that swapped a parent for a symlink cannot make us delete a host path (CVE-2024-23652).
    """
    if not created:
        return
    ufd = os.open(upperdir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for path, atime, mtime in reversed(created):
            rel = os.path.relpath(path, rootdir)
            if rel.startswith(".."):
                continue
            parent, name = os.path.split(rel)
            try:
                pfd = kernel.openat2(ufd, parent or ".", os.O_PATH | os.O_DIRECTORY,
                                     kernel.RESOLVE_BENEATH | kernel.RESOLVE_NO_SYMLINKS)
            except KernelCallError:
                continue
            try:
                st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    os.rmdir(name, dir_fd=pfd)
                elif stat.S_ISREG(st.st_mode) and st.st_size == 0:
                    os.unlink(name, dir_fd=pfd)
                else:
                    continue
                os.utime(f"/proc/self/fd/{pfd}", ns=(atime, mtime))
            except OSError:
                pass
            finally:
                os.close(pfd)
    finally:
        os.close(ufd)
