"""What a sandbox runs: the spec every caller fills in (RUN, `pybuild run`, a container's
supervisor) and the checks it must pass before anything is made on disk."""
from __future__ import annotations

import os

from runtime.errors import SandboxError

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"   # docker's and runc's
NETWORKS = ("bridge", "host", "none")   # user-defined networks: issue 11
MOUNT_TYPES = ("bind", "cache", "secret", "tmpfs")


class Record:
    """Plain data compared and shown field by field, as a dataclass is, without importing
    dataclasses (inspect, ast, dis, tokenize: ~23 ms on every run). A subclass names its fields
    in `_fields`, in its __init__'s order."""
    _fields: tuple[str, ...] = ()

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return (tuple(getattr(self, f) for f in self._fields)
                == tuple(getattr(other, f) for f in other._fields))

    __hash__ = None     # mutable, like a dataclass with eq

    def __repr__(self) -> str:
        return (f"{type(self).__qualname__}("
                + ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields) + ")")


class Mount(Record):
    """A mount in the container. type: bind (also cache/secret: the caller made the source) | tmpfs."""
    _fields = ("target", "type", "source", "readonly", "options")

    def __init__(self, target: str, type: str = "bind", source: str = "", readonly: bool = False,
                 options: list[str] | None = None):
        self.target = target
        self.type = type
        self.source = source
        self.readonly = readonly
        self.options = [] if options is None else options   # tmpfs: e.g. ["size=64m", "mode=1777"]


class Resources(Record):
    """docker run's resource limits (runtime.cgroups applies them); 0 = not set."""
    _fields = ("memory", "memory_swap", "nano_cpus", "cpu_shares", "pids_limit",
               "cpu_period", "cpu_quota", "memory_reservation", "cpuset_cpus", "cpuset_mems",
               "memory_swappiness", "oom_kill_disable")

    def __init__(self, memory: int = 0, memory_swap: int = 0, nano_cpus: int = 0,
                 cpu_shares: int = 0, pids_limit: int = 0, cpu_period: int = 0,
                 cpu_quota: int = 0, memory_reservation: int = 0, cpuset_cpus: str = "",
                 cpuset_mems: str = "", memory_swappiness: int = -1,
                 oom_kill_disable: bool = False):
        self.memory = memory                # bytes (-m)
        self.memory_swap = memory_swap      # bytes of memory + swap; -1 unlimited; 0 = docker's default
        self.nano_cpus = nano_cpus          # --cpus x 1e9
        self.cpu_shares = cpu_shares
        self.pids_limit = pids_limit        # <= 0 unlimited
        self.cpu_period = cpu_period        # --cpu-period, µs (0: the CFS default, 100 ms)
        self.cpu_quota = cpu_quota          # --cpu-quota, µs per period (<= 0 unlimited)
        self.memory_reservation = memory_reservation   # --memory-reservation: a soft limit
        self.cpuset_cpus = cpuset_cpus      # --cpuset-cpus "0-2,4" ("": every CPU)
        self.cpuset_mems = cpuset_mems      # --cpuset-mems (NUMA nodes)
        self.memory_swappiness = memory_swappiness     # 0-100; -1: the kernel's (not set)
        self.oom_kill_disable = oom_kill_disable       # v1's memory.oom_control

    def any(self) -> bool:
        return bool(self.memory or self.memory_swap or self.nano_cpus or self.cpu_shares
                    or self.pids_limit > 0 or self.cpu_period or self.cpu_quota > 0
                    or self.memory_reservation or self.cpuset_cpus or self.cpuset_mems
                    or self.memory_swappiness >= 0 or self.oom_kill_disable)

    def to_dict(self) -> dict[str, int]:
        """The limits as a container's record keeps them; `Resources(**d)` makes them again."""
        return {f: getattr(self, f) for f in self._fields}


class SandboxSpec(Record):
    """What to run and on which layers. upperdir/workdir None = a throw-away upper dir.
    Directories may be str or os.PathLike; the runtime reads them with os.fspath."""
    _fields = ("lowerdirs", "upperdir", "workdir", "argv", "env", "cwd", "user", "hostname",
               "network", "ports", "extra_hosts", "mounts", "stdin", "stdout", "stderr", "tty",
               "make_cwd", "readonly_rootfs", "resources", "init", "gid_in_groups",
               # --- seccomp helper's fields ---
               "security_opt",
               # --- caps: capabilities, --privileged, --device ---
               "privileged", "cap_add", "cap_drop", "devices",
               "endpoint",
               # --- dns: --dns/--dns-search/--dns-option, --mac-address ---
               "dns", "mac_address", "connected",
               "shm_size", "ulimits", "own_hosts",
               # --- cli-rest: --domainname, --group-add, --oom-score-adj ---
               "domainname", "group_add", "oom_score_adj", "sysctls", "device_cgroup_rules",
               "uts_host", "volatile")

    def __init__(self, lowerdirs: list | None = None, upperdir: str | os.PathLike | None = None,
                 workdir: str | os.PathLike | None = None, argv: list[str] | None = None,
                 env: list[str] | None = None, cwd: str = "/", user: str = "",
                 hostname: str = "buildkitsandbox", network: str = "host",
                 ports: list[dict] | None = None, extra_hosts: list[str] | None = None,
                 mounts: list[Mount] | None = None, stdin: int | None = None,
                 stdout: int | None = None, stderr: int | None = None, tty: bool = False,
                 make_cwd: bool = False, readonly_rootfs: bool = False,
                 resources: Resources | None = None, init: bool = False,
                 gid_in_groups: bool = False,
                 # --- seccomp helper's fields ---
                 security_opt: list[str] | None = None,
                 # --- caps: capabilities, --privileged, --device ---
                 privileged: bool = False, cap_add: list[str] | None = None,
                 cap_drop: list[str] | None = None, devices: list[dict] | None = None,
                 endpoint=None,
                 # --- dns: --dns/--dns-search/--dns-option, --mac-address ---
                 dns: dict | None = None, mac_address: str = "", connected: list | None = None,
                 shm_size: int = 0, ulimits: list[dict] | None = None, own_hosts: bool = False,
                 domainname: str = "", group_add: list[str] | None = None,
                 oom_score_adj: int | None = None, sysctls: dict | None = None,
                 device_cgroup_rules: list[str] | None = None, uts_host: bool = False,
                 volatile: bool = False):
        self.lowerdirs = [] if lowerdirs is None else lowerdirs   # layer dirs, top first
        self.shm_size = shm_size        # --shm-size: /dev/shm's bytes (0: docker's 64 MiB)
        self.ulimits = [] if ulimits is None else ulimits   # --ulimit (runtime.ulimits.parse)
        # RUN: BuildKit's /etc/hosts (the hostname on 127.0.0.1) also on the bridge, where a
        # container's file has docker's lines and its address last
        self.own_hosts = own_hosts
        # --- cli-rest: docker --domainname (the UTS namespace's), --group-add (names of the
        # image's /etc/group or gids, after the user's own), --oom-score-adj (None: inherited)
        self.domainname = domainname
        self.group_add = [] if group_add is None else group_add
        self.oom_score_adj = oom_score_adj
        self.sysctls = {} if sysctls is None else sysctls   # --sysctl K=V (namespaced ones)
        # --device-cgroup-rule "c 1:3 mr" lines, after the default rules; --uts host: the
        # host's UTS namespace (its hostname and domain name)
        self.device_cgroup_rules = [] if device_cgroup_rules is None else device_cgroup_rules
        self.uts_host = uts_host
        # the upper/work pair is used once and its keeper syncs what it keeps (a RUN's scratch:
        # cache.atomic.sync_tree at commit): no sync of the whole disk at the overlay's unmount
        self.volatile = volatile
        self.upperdir = upperdir
        self.workdir = workdir
        self.argv = [] if argv is None else argv
        self.env = [] if env is None else env          # "K=V"; PATH defaults to docker's
        self.cwd = cwd
        self.user = user                               # docker -u: name, uid, name:group, uid:gid
        self.hostname = hostname
        self.network = network                         # host | none | bridge
        self.ports = [] if ports is None else ports    # bridge: runtime.network.ports bindings
        self.extra_hosts = [] if extra_hosts is None else extra_hosts   # --add-host "name:ip" lines
        self.mounts = [] if mounts is None else mounts
        self.stdin = stdin                             # fds; None = inherit the caller's
        self.stdout = stdout
        self.stderr = stderr
        self.tty = tty                  # allocate a pty inside the container; its master is handed back
        self.make_cwd = make_cwd                       # create cwd if missing (docker run -w)
        self.readonly_rootfs = readonly_rootfs         # docker run --read-only: the root mount read-only
        self.resources = resources      # cgroup limits; None = stay in the caller's cgroups
        self.init = init                # docker --init: a forwarding, reaping init is pid 1, not the command
        self.gid_in_groups = gid_in_groups   # a container (docker's getUser): the gid heads groups; RUN: not
        # --- seccomp helper's fields ---
        # docker's --security-opt list as its CLI sends it (runtime.seccomp reads it): [] =
        # docker's default seccomp profile (RUN's too, as BuildKit's), no no_new_privs
        self.security_opt = [] if security_opt is None else security_opt
        # --- caps: capabilities, --privileged, --device (runtime.caps, runtime.cgroups) ---
        self.privileged = privileged    # docker --privileged: all caps, no masks, rw /sys, every device
        self.cap_add = [] if cap_add is None else cap_add     # docker --cap-add names, as given
        self.cap_drop = [] if cap_drop is None else cap_drop  # docker --cap-drop names, as given
        # docker --device: {"PathOnHost", "PathInContainer", "CgroupPermissions"} (HostConfig.Devices)
        self.devices = [] if devices is None else devices
        # --- end caps ---
        # a user-defined network's runtime.network.Endpoint (network is then "bridge", its
        # driver); None: the default bridge, host or none
        self.endpoint = endpoint
        # --- dns: {servers, search, options} of --dns/--dns-search/--dns-option (None: none
        # given): resolv.conf's, or on a user network its embedded DNS server's upstreams;
        # --mac-address: the container end of the veth (default: docker's 02:42:<ip>) ---
        self.dns = dns
        self.mac_address = mac_address
        # the user networks (runtime.network.Endpoint) it is on besides its eth0's, `network
        # connect`ed ones: eth1... made by holder processes (runtime.network.connect)
        self.connected = [] if connected is None else connected
        # --- end dns ---


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
