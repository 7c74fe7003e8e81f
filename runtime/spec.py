"""What a sandbox runs: the spec every caller fills in (RUN, `pybuild run`, a container's
supervisor) and the checks it must pass before anything is made on disk."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from runtime.errors import SandboxError

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"   # docker's and runc's
NETWORKS = ("bridge", "host", "none")   # user-defined networks: issue 11
MOUNT_TYPES = ("bind", "cache", "secret", "tmpfs")


@dataclass
class Mount:
    """A mount in the container. type: bind (also cache/secret: the caller made the source) | tmpfs."""
    target: str
    type: str = "bind"
    source: str = ""
    readonly: bool = False
    options: list[str] = field(default_factory=list)   # tmpfs: e.g. ["size=64m", "mode=1777"]


@dataclass
class Resources:
    """docker run's resource limits (runtime.cgroups applies them); 0 = not set."""
    memory: int = 0            # bytes (-m)
    memory_swap: int = 0       # bytes of memory + swap; -1 unlimited; 0 = docker's default
    nano_cpus: int = 0         # --cpus x 1e9
    cpu_shares: int = 0
    pids_limit: int = 0        # <= 0 unlimited

    def any(self) -> bool:
        return bool(self.memory or self.memory_swap or self.nano_cpus or self.cpu_shares
                    or self.pids_limit > 0)


@dataclass
class SandboxSpec:
    """What to run and on which layers. upperdir/workdir None = a throw-away upper dir."""
    lowerdirs: list[Path] = field(default_factory=list)   # layer dirs, top first
    upperdir: Path | None = None
    workdir: Path | None = None
    argv: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)          # "K=V"; PATH defaults to docker's
    cwd: str = "/"
    user: str = ""                                        # docker -u: name, uid, name:group, uid:gid
    hostname: str = "buildkitsandbox"
    network: str = "host"                                 # host | none | bridge
    ports: list[dict] = field(default_factory=list)       # bridge: runtime.network.ports bindings
    extra_hosts: list[str] = field(default_factory=list)  # --add-host "name:ip" lines for /etc/hosts
    mounts: list[Mount] = field(default_factory=list)
    stdin: int | None = None                              # fds; None = inherit the caller's
    stdout: int | None = None
    stderr: int | None = None
    tty: bool = False          # allocate a pty inside the container; its master is handed back
    make_cwd: bool = False                                # create cwd if missing (docker run -w)
    readonly_rootfs: bool = False       # docker run --read-only: the root mount read-only
    resources: Resources | None = None    # cgroup limits; None = stay in the caller's cgroups
    init: bool = False         # docker --init: a forwarding, reaping init is pid 1, not the command
    gid_in_groups: bool = False   # a container (docker's getUser): the gid heads the groups; RUN: not


def check_network(mode: str) -> None:
    """The network modes a sandbox has; callers check a user's flag early with this (docker's
    line for a network that does not exist)."""
    if mode in NETWORKS:
        return
    if mode.startswith("container:"):
        raise SandboxError(f"network mode {mode} is not supported yet (use bridge, host or none)")
    raise SandboxError(f"network {mode} not found")


def validate(spec: SandboxSpec) -> None:
    """Raise SandboxError for a spec the sandbox cannot run, before anything is made."""
    if not spec.argv:
        raise SandboxError("no command given to run")
    check_network(spec.network)
    if not spec.cwd.startswith("/"):
        raise SandboxError(f"the working directory must be an absolute path, not {spec.cwd!r}")
    for m in spec.mounts:
        if m.type not in MOUNT_TYPES:
            raise SandboxError(f"unknown mount type {m.type!r} for {m.target}")
        if not m.target.startswith("/"):
            raise SandboxError(f"mount target must be an absolute path, not {m.target!r}")
        if m.type != "tmpfs" and not os.path.exists(m.source):
            raise SandboxError(f"mount source {m.source} does not exist")
    if (spec.upperdir is None) != (spec.workdir is None) and spec.upperdir is None:
        raise SandboxError("a work dir was given without an upper dir")
