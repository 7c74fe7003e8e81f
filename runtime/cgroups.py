"""cgroup resource limits for a sandbox: docker run's -m/--memory-swap/--cpus/--cpu-shares/
--pids-limit, on cgroup v1 (also the hybrid layout: v1 controllers beside an empty v2 mount) and
on v2 (one unified hierarchy), as runc's cgroupfs driver does with a cgroup parent.

A container's cgroup is `<this process's cgroup>/pybuild/<name>` in each hierarchy a limit
needs, where `<name>` is a cache.owner temporary name of the process that made it: `create`
removes the empty ones a dead owner left (a kill -9 of pybuild), `remove` kills what is still
inside and rmdirs it. The sandbox's keeper moves its pid 1 in (`move`, writing pid 1's pid
to the cgroup.procs files it `opened` before pid 1 could hide them) while pid 1 sets up its
rootfs, and pid 1 waits for that before the command runs, so every descendant is inside; the
keeper stays out, so --pids-limit counts pid 1 and the command's processes.
Every container gets its cgroup, limits or not (as docker gives one): with none set it is made
only in the accounting hierarchies (`ACCOUNTING`) `pybuild stats` reads and the freezer
`pybuild commit` pauses it with; a hierarchy that refuses it is then skipped, not an error.
Every sandbox, a RUN step's too, gets a cgroup in the v1 `devices` hierarchy with docker's
device rules (`DEVICE_RULES`: what runc's default list and docker's spec leave allowed; `a`
denied first), written before the fork, so a device node the command mknods (CAP_MKNOD is one
of docker's 14) or finds in a loaded layer cannot be opened unless it is a rule's; --device
adds its node's rule, --privileged allows all. v2 has no devices files: there the same rules
are an eBPF program attached to the container's cgroup (runtime.devicefilter).
Errors a user can cause (a bad flag value) are SandboxError with docker's one-line message.
"""
from __future__ import annotations

import errno
import os
import sys
import time

from runtime.errors import SandboxError
from runtime.mountinfo import unescape
from runtime.spec import Resources

PARENT = "pybuild"
CFS_PERIOD = 100000                  # docker's and runc's cpu.cfs_period_us
MIN_MEMORY = 6 * 1024 * 1024         # docker's linuxMinMemory
_SIZE = r"^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$"   # docker units.RAMInBytes (re: lazily)
_SWAP_FILES = ("memory.memsw.limit_in_bytes", "memory.swap.max")
ACCOUNTING = ("memory", "cpu", "pids", "cpuacct", "blkio", "freezer")   # v1 names; v2: one dir
DEVICES = "devices"                  # v1 only
# docker's spec rules, then runc's AllowedDevices appended, as devices.list shows them in a
# docker container: mknod of any node; null, zero, full, random, urandom, tty, console, ptmx,
# tun and the pts ptys used.
DEVICE_RULES = ("c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm",
                "c 1:9 rwm", "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 10:200 rwm", "c 136:* rwm")
_SWITCH_INTERVAL = sys.getswitchinterval()   # Python's, which `prime`'s thread puts back
_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


# --- docker's flag values ------------------------------------------------------------------

def _flag_error(value: str, flag: str, why: str) -> SandboxError:
    return SandboxError(f'invalid argument "{value}" for "{flag}" flag: {why}')


def parse_size(value: str, flag: str | None = "-m, --memory", *, decimal: bool = False) -> int:
    """go-units' size parser: units.RAMInBytes (binary: 512, 64k, 32m, 1.5g, optional i/b
    suffix) or, with `decimal`, units.FromHumanSize (k = 1000: --log-opt max-size). The error
    is docker's flag line for `flag`, or the bare ``invalid size: '...'`` without one."""
    import re

    why = f"invalid size: '{value}'"
    m = re.match(_SIZE, value)
    try:
        number = float(m.group(1)) if m else None
    except ValueError:
        number = None
    if number is None:
        raise _flag_error(value, flag, why) if flag else SandboxError(why)
    unit = (m.group(2) or "").lower()
    return int(number * (1000 ** (" kmgtp".index(unit)) if decimal and unit else _UNITS.get(unit, 1)))


def _parse_int(value: str, flag: str) -> int:
    try:
        return int(value, 10)
    except ValueError:
        raise _flag_error(value, flag, f'strconv.ParseInt: parsing "{value}": invalid syntax') from None


def resources(memory: str | None = None, memory_swap: str | None = None, cpus: str | None = None,
              cpu_shares: str | None = None, pids_limit: str | None = None,
              cpu_period: str | None = None, cpu_quota: str | None = None,
              memory_reservation: str | None = None, cpuset_cpus: str | None = None,
              cpuset_mems: str | None = None, memory_swappiness: int | None = None,
              oom_kill_disable: bool = False, base: Resources | None = None) -> Resources:
    """docker run's limit flags (strings as given, None = absent) as Resources, checked as
    docker's client and daemon check them; `base`: the limits they change (docker update)."""
    r = Resources(**base.to_dict()) if base is not None else Resources()
    if memory is not None:
        r.memory = parse_size(memory)
        if r.memory and r.memory < MIN_MEMORY:
            raise SandboxError("Minimum memory limit allowed is 6MB")
    if memory_swap is not None:
        r.memory_swap = -1 if memory_swap == "-1" else parse_size(memory_swap, "--memory-swap")
        if r.memory_swap and not r.memory:
            raise SandboxError("You should always set the Memory limit when using Memoryswap "
                               "limit, see usage")
        if r.memory_swap > 0 and r.memory_swap < r.memory:
            raise SandboxError("Minimum memoryswap limit should be larger than memory limit, see usage")
    if cpus is not None:
        try:
            value = float(cpus)
        except ValueError:
            raise _flag_error(cpus, "--cpus", f"failed to parse {cpus} as a rational number") from None
        n = os.cpu_count() or 1
        r.nano_cpus = int(value * 1e9)
        if r.nano_cpus < 0 or r.nano_cpus > n * 10**9 or 0 < r.nano_cpus < 10**7:
            raise SandboxError(f"Range of CPUs is from 0.01 to {n}.00, as there are only {n} CPUs available")
    if cpu_shares is not None:
        r.cpu_shares = _parse_int(cpu_shares, "-c, --cpu-shares")
        if r.cpu_shares < 0:
            raise SandboxError("invalid CPU shares (must be >= 0)")
    if pids_limit is not None:
        r.pids_limit = _parse_int(pids_limit, "--pids-limit")
    if cpu_period is not None:
        r.cpu_period = _parse_int(cpu_period, "--cpu-period")
    if cpu_quota is not None:
        r.cpu_quota = _parse_int(cpu_quota, "--cpu-quota")
    if memory_reservation is not None:
        r.memory_reservation = parse_size(memory_reservation, "--memory-reservation")
    if cpuset_cpus is not None:
        r.cpuset_cpus = _cpuset(cpuset_cpus, "cpus", sorted(os.sched_getaffinity(0)), "CPUs")
    if cpuset_mems is not None:
        r.cpuset_mems = _cpuset(cpuset_mems, "mems", _mem_nodes(), "memory nodes")
    if memory_swappiness is not None:
        if not -1 <= memory_swappiness <= 100:
            raise SandboxError(f"invalid value: {memory_swappiness}. Valid memory swappiness "
                               "range is 0-100")
        r.memory_swappiness = memory_swappiness
    if oom_kill_disable:
        r.oom_kill_disable = True
    _check(r, base)
    return r


def _cpuset(text: str, what: str, have: list[int], words: str) -> str:
    """docker's --cpuset-cpus/--cpuset-mems: a list like 0-2,4 (parsers.ParseUintList), each
    available here (its lines)."""
    want: set[int] = set()
    for part in text.split(",") if text else []:
        lo, dash, hi = part.partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()) or (dash and int(hi) < int(lo)):
            raise SandboxError(f"Invalid value {text} for cpuset {what}: invalid format: {text}")
        want.update(range(int(lo), int(hi if dash else lo) + 1))
    if want - set(have):
        raise SandboxError(f"Requested {words} are not available - requested {text}, "
                           f"available: {_ranges(have)}")
    return text


def _ranges(ns: list[int]) -> str:
    """0,1,2,4 as the kernel's list format: 0-2,4."""
    out, start = [], None
    for i, n in enumerate(ns):
        if start is None:
            start = n
        if i + 1 == len(ns) or ns[i + 1] != n + 1:
            out.append(str(start) if start == n else f"{start}-{n}")
            start = None
    return ",".join(out)


def _mem_nodes() -> list[int]:
    """The memory (NUMA) nodes the kernel has online (0 alone without NUMA)."""
    try:
        with open("/sys/devices/system/node/online") as f:
            text = f.read().strip()
    except OSError:
        return [0]
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def _check(r: Resources, base: Resources | None) -> None:
    """The daemon's checks of limits that go together (moby verifyPlatformContainerResources
    and, for `update`, what may not change once another is set)."""
    if base is not None and r.nano_cpus != base.nano_cpus and (base.cpu_period or base.cpu_quota):
        raise SandboxError("Conflicting options: Nano CPUs cannot be updated as CPU Period has "
                           "already been set")
    if r.nano_cpus and r.cpu_period:
        raise SandboxError("Conflicting options: Nano CPUs and CPU Period cannot both be set")
    if r.nano_cpus and r.cpu_quota:
        raise SandboxError("Conflicting options: Nano CPUs and CPU Quota cannot both be set")
    if r.cpu_period and not 1000 <= r.cpu_period <= 1000000:
        raise SandboxError("CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s "
                           "(i.e. 1000000)")
    if 0 < r.cpu_quota < 1000:
        raise SandboxError("CPU cfs quota can not be less than 1ms (i.e. 1000)")
    if 0 < r.memory_reservation < MIN_MEMORY:
        raise SandboxError("Minimum memory reservation allowed is 6MB")
    if r.memory and r.memory_reservation and r.memory < r.memory_reservation:
        raise SandboxError("Minimum memory limit can not be less than memory reservation limit, "
                           "see usage")


# --- where the hierarchies are ---------------------------------------------------------------

def _mountinfo() -> list[tuple[str, str, str, set[str]]]:
    """(root, mount point, fstype, super options) of each cgroup/cgroup2 mount."""
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            a, b = left.split(), right.split()
            if len(b) >= 3 and b[0] in ("cgroup", "cgroup2"):
                unesc = [unescape(x) for x in a[3:5]]
                out.append((unesc[0], unesc[1], b[0], set(b[2].split(","))))
    return out


def _own_cgroups(pid: int | str = "self") -> dict[str, str]:
    """{controller or "" for v2: the process's cgroup path} from /proc/<pid>/cgroup."""
    out = {}
    with open(f"/proc/{pid}/cgroup", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for c in (controllers.split(",") if controllers else [""]):
                out[c] = path
    return out


def _under(mount: str, root: str, path: str) -> str:
    rel = os.path.relpath(path, root) if root != "/" else path.lstrip("/")
    return mount if rel in (".", "") else os.path.join(mount, rel)


def hierarchies(proc: str = "self") -> tuple[int, dict[str, str]]:
    """(1 or 2, {controller: the dir of this (or process proc's) cgroup}; v2: "" names the one
    dir, with or without controllers). v1 whenever a v1 hierarchy holds the memory, cpu or pids
    controller (hybrid hosts included), else v2."""
    own = _own_cgroups(proc)
    mounts = _mountinfo()
    v1 = {}
    for root, point, fstype, opts in mounts:
        if fstype != "cgroup":
            continue
        for c in (*ACCOUNTING, DEVICES, "cpuset"):
            if c in opts and c in own and c not in v1:
                v1[c] = _under(point, root, own[c])
    if any(c in v1 for c in ("memory", "cpu", "pids")):
        return 1, v1
    for root, point, fstype, _ in mounts:
        if fstype == "cgroup2" and "" in own:
            base = _under(point, root, own[""])
            try:
                with open(os.path.join(base, "cgroup.controllers")) as f:
                    have = f.read().split()
            except OSError:
                continue
            return 2, {"": base, **{c: base for c in ("memory", "cpu", "pids", "io", "cpuset")
                                    if c in have}}
    return 1, {}


def of_pid(pid: int) -> tuple[int, dict[str, str]]:
    """(1 or 2, {controller: dir}) of a running process's cgroups, as this process sees the
    hierarchies (v2: every controller and "" name the one dir)."""
    ver, dirs = hierarchies(pid)
    if ver == 2 and dirs:
        base = next(iter(dirs.values()))
        return 2, dict.fromkeys(("", "memory", "cpu", "pids", "io", "freezer"), base)
    return ver, dirs


def of_process(pid: int) -> list[str]:
    """The container cgroup dirs (made by `create`, below PARENT) process pid is in: what a
    process `exec`'d into its container joins. Empty when it is in none."""
    try:
        _, dirs = of_pid(pid)
    except OSError:
        return []
    return sorted({d for d in dirs.values()
                   if os.path.basename(os.path.dirname(d)) == PARENT and os.path.isdir(d)})


def freeze(ver: int, path: str, frozen: bool, timeout: float = 5.0) -> None:
    """Freeze (or thaw) every process of a cgroup: v1's freezer.state, v2's cgroup.freeze;
    returns once the kernel says it is done (docker pause's mechanism)."""
    if ver == 1:
        _write(os.path.join(path, "freezer.state"), "FROZEN" if frozen else "THAWED")
        want, file = ("FROZEN" if frozen else "THAWED"), "freezer.state"
    else:
        _write(os.path.join(path, "cgroup.freeze"), "1" if frozen else "0")
        want, file = ("frozen 1" if frozen else "frozen 0"), "cgroup.events"
    end = time.monotonic() + timeout
    while True:
        with open(os.path.join(path, file)) as f:
            text = f.read()
        if (want in text.splitlines()) if ver == 2 else text.strip() == want:
            return
        if time.monotonic() > end:
            raise SandboxError(f"cgroup {path} did not become {want.lower()} in {timeout:g}s")
        time.sleep(0.001)


def frozen(ver: int, path: str) -> bool:
    """Whether the cgroup is frozen (a `pause`d container's, or one a commit holds still)."""
    try:
        if ver == 1:
            with open(os.path.join(path, "freezer.state")) as f:
                return f.read().strip() == "FROZEN"
        with open(os.path.join(path, "cgroup.events")) as f:
            return "frozen 1" in f.read().splitlines()
    except OSError:
        return False


# --- a container's cgroup ---------------------------------------------------------------------

def _write(path: str, value) -> None:
    with open(path, "w") as f:
        f.write(str(value))


def _settings(ver: int, r: Resources) -> dict[str, list[tuple[str, str]]]:
    """{controller: [(file, value), ...]} in the order they must be written; the swap file is
    skipped where the kernel has no swap accounting (docker then limits memory only)."""
    out: dict[str, list[tuple[str, str]]] = {}
    if r.memory_reservation:
        out["memory"] = [("memory.soft_limit_in_bytes" if ver == 1 else "memory.low",
                          str(r.memory_reservation))]
    if ver == 1 and r.memory_swappiness >= 0:   # v2 has neither: docker discards them there
        out.setdefault("memory", []).append(("memory.swappiness", str(r.memory_swappiness)))
    if ver == 1 and r.oom_kill_disable:
        out.setdefault("memory", []).append(("memory.oom_control", "1"))
    if r.memory:
        swap = r.memory_swap
        if swap == 0:
            swap = 2 * r.memory                  # docker's default: as much swap as memory
        mem = out.setdefault("memory", [])
        if ver == 1:
            mem.append(("memory.limit_in_bytes", str(r.memory)))
            mem.append(("memory.memsw.limit_in_bytes", str(swap)))
        else:
            mem.append(("memory.max", str(r.memory)))
            mem.append(("memory.swap.max", "max" if swap < 0 else str(swap - r.memory)))
    cpu = []
    if r.nano_cpus:
        quota = r.nano_cpus * CFS_PERIOD // 10**9
        cpu += ([("cpu.cfs_period_us", str(CFS_PERIOD)), ("cpu.cfs_quota_us", str(quota))]
                if ver == 1 else [("cpu.max", f"{quota} {CFS_PERIOD}")])
    if r.cpu_period or r.cpu_quota:     # --cpu-period/--cpu-quota (never with --cpus)
        period, quota = r.cpu_period or CFS_PERIOD, r.cpu_quota if r.cpu_quota > 0 else -1
        cpu += ([("cpu.cfs_period_us", str(period)), ("cpu.cfs_quota_us", str(quota))]
                if ver == 1 else [("cpu.max", f"{quota if quota > 0 else 'max'} {period}")])
    if r.cpu_shares:
        shares = max(2, min(r.cpu_shares, 262144))
        cpu.append(("cpu.shares", str(shares)) if ver == 1
                   else ("cpu.weight", str(1 + (shares - 2) * 9999 // 262142)))   # runc's mapping
    if cpu:
        out["cpu"] = cpu
    if r.pids_limit > 0:
        out["pids"] = [("pids.max", str(r.pids_limit))]
    if r.cpuset_cpus or r.cpuset_mems:  # v1 needs both before a task may join: "" = the parent's
        out["cpuset"] = [("cpuset.cpus", r.cpuset_cpus), ("cpuset.mems", r.cpuset_mems)]
    return out


def update(pid: int, r: Resources) -> None:
    """Write r's limits into the cgroups of a running container's pid 1 (docker update); on
    v1 memory and memsw each must stay below the other's old value, so a refused order is
    tried the other way round."""
    ver, dirs = of_pid(pid)
    for controller, values in _settings(ver, r).items():
        path = dirs.get(controller)
        if not path or os.path.basename(os.path.dirname(path)) != PARENT:
            raise SandboxError(f"cannot update the {controller} limit: the container has no "
                               f"{controller} cgroup of its own")
        writes = [(os.path.join(path, f), v) for f, v in values
                  if (f not in _SWAP_FILES or os.path.exists(os.path.join(path, f)))
                  and (v or controller != "cpuset")]
        try:
            for f, v in writes:
                _write(f, v)
        except OSError:
            try:
                for f, v in reversed(writes):
                    _write(f, v)
            except OSError as e:
                raise SandboxError(f"cannot update the {controller} limit: "
                                   f"{(e.strerror or '').lower()}") from None


def create(r: Resources | None, device_rules: tuple[str, ...] | list[str] | None = DEVICE_RULES
           ) -> list[str]:
    """Make the cgroup dirs r needs, limits written, and the devices one with `device_rules`
    (after `a` is denied; None: left as the parent's, --privileged); return them (for `opened`
    and `remove`). r None (a RUN step): only the devices cgroup."""
    from cache import owner

    ver, own = hierarchies()
    name = owner.temp_name("ctr")
    made: list[str] = []

    settings = _settings(ver, r) if r is not None else {}
    try:
        for controller, values in settings.items():
            if controller not in own:
                raise SandboxError(f"cannot apply the {controller} limit: no cgroup {controller} "
                                   f"controller on this host (mount it or drop the flag)")
            parent = os.path.join(own[controller], PARENT)
            path = os.path.join(parent, name)
            if ver == 2:                 # one dir for every controller: let it have this one
                _enable(own[controller], controller)
                os.makedirs(parent, exist_ok=True)
                _enable(parent, controller)
            if path not in made:
                os.makedirs(parent, exist_ok=True)
                sweep(parent)
                if controller == "cpuset" and ver == 1:
                    _inherit_cpuset(own[controller], parent)
                os.mkdir(path, 0o755)
                made.append(path)
            for file, value in values:
                f = os.path.join(path, file)
                if file in _SWAP_FILES and not os.path.exists(f):
                    continue
                if controller == "cpuset" and not value:
                    if ver == 2:
                        continue            # v2: empty is the parent's already
                    value = _read_value(os.path.join(parent, file))
                _write(f, value)
        for controller in ((*ACCOUNTING, "io") if r is not None else ()):  # stats, pause read it
            if controller in settings or controller not in own:
                continue
            path = os.path.join(own[controller], PARENT, name)
            try:
                if ver == 2:            # one dir: each controller enabled for it
                    _enable(own[controller], controller)
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    _enable(os.path.dirname(path), controller)
                if path in made:
                    continue
                os.makedirs(os.path.dirname(path), exist_ok=True)
                sweep(os.path.dirname(path))
                os.mkdir(path, 0o755)
            except (OSError, SandboxError):
                continue
            made.append(path)
        if ver == 1 and DEVICES in own:
            parent = os.path.join(own[DEVICES], PARENT)
            path = os.path.join(parent, name)
            os.makedirs(parent, exist_ok=True)
            sweep(parent)
            os.mkdir(path, 0o755)
            made.append(path)
            if device_rules is not None:
                write_device_rules(path, device_rules)
        elif ver == 2 and "" in own:        # the same rules as a BPF program (devicefilter)
            path = os.path.join(own[""], PARENT, name)
            if path not in made:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                sweep(os.path.dirname(path))
                os.mkdir(path, 0o755)
                made.append(path)
            if device_rules is not None:
                from runtime import devicefilter
                devicefilter.attach(path, device_rules)
    except OSError as e:
        remove(made)
        raise SandboxError(f"cannot set up the container's cgroup: {e.strerror}: {e.filename}") from None
    except BaseException:
        remove(made)
        raise
    return made


def write_device_rules(path: str, rules) -> None:
    """v1 devices cgroup `path`: deny every device, then allow each rule ("c 1:3 rwm"); one
    write per rule, as the kernel reads them."""
    for file, lines in (("devices.deny", ("a",)), ("devices.allow", rules)):
        fd = os.open(os.path.join(path, file), os.O_WRONLY | os.O_CLOEXEC)
        try:
            for line in lines:
                try:
                    os.write(fd, line.encode())
                except OSError as e:
                    raise SandboxError(f"cannot set the device rule {line!r} of the container's "
                                       f"cgroup: {e.strerror}") from None
        finally:
            os.close(fd)


def device_rule(node: dict) -> str | None:
    """The devices.allow line of a --device node (runtime.rootfs.device_nodes); None for a
    FIFO, which the devices cgroup does not govern."""
    if node["type"] not in ("c", "b"):
        return None
    return f'{node["type"]} {node["major"]}:{node["minor"]} {node["perms"]}'


def _read_value(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _inherit_cpuset(top: str, parent: str) -> None:
    """v1: a new cpuset dir starts with no CPUs and no memory nodes, and a task cannot join one
    like that: PARENT gets its own parent's (once)."""
    for file in ("cpuset.cpus", "cpuset.mems"):
        if not _read_value(os.path.join(parent, file)):
            _write(os.path.join(parent, file), _read_value(os.path.join(top, file)))


def _enable(path: str, controller: str) -> None:
    """v2: let the children of path have controller (cgroup.subtree_control)."""
    with open(os.path.join(path, "cgroup.subtree_control")) as f:
        if controller in f.read().split():
            return
    try:
        _write(os.path.join(path, "cgroup.subtree_control"), f"+{controller}")
    except OSError as e:
        if e.errno == errno.EBUSY:
            raise SandboxError(f"cannot enable the {controller} controller below {path}: it holds "
                               f"processes (run pybuild from a cgroup of its own, e.g. systemd-run "
                               f"--scope)") from None
        raise


def _join_error(path: str, e: OSError) -> SandboxError:
    return SandboxError(f"cannot move the container's process into its cgroup {path}: {e.strerror}")


def opened(paths: list[str]) -> list[tuple[str, int]]:
    """(dir, fd) of each cgroup's cgroup.procs, open for writing (close-on-exec): what `move`
    writes to, opened while the hierarchies are in sight (a pivot_root in a mount namespace the
    opener shares hides them)."""
    out: list[tuple[str, int]] = []
    try:
        for p in paths:
            out.append((p, os.open(os.path.join(p, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)))
    except OSError as e:
        for _, fd in out:
            os.close(fd)
        raise _join_error(p, e) from None
    return out


def move(procs: list[tuple[str, int]], pid: int = 0) -> None:
    """Move process pid (0: the writer) into each cgroup of `opened`, closing the files; children
    it forks after this are inside. A refusal is one SandboxError line naming the cgroup (e.g.
    EINVAL: a real-time process and a v1 cpu cgroup without cpu.rt_runtime_us)."""
    value = str(pid).encode()
    try:
        for p, fd in procs:
            try:
                os.write(fd, value)
            except OSError as e:
                raise _join_error(p, e) from None
    finally:
        for _, fd in procs:
            os.close(fd)


def prime(path: str) -> None:
    """Take the kernel's cgroup migration lock once, from a short thread, moving this process
    into the cgroup it is already in (the one above container cgroup `path`'s PARENT): the
    first migration after a quiet spell waits out an RCU grace period (~8 ms here, 11-20 ms
    under load), the ones that follow within it do not. Called once the container's cgroups
    exist and their cgroup.procs are open (the waiting write holds the cgroup mutex, which
    mkdir needs), so the grace period runs while the caller makes the run dir and forks, and
    has mostly passed by the keeper's `move` of pid 1. Best effort (a refusal, e.g. v2's
    EBUSY, comes after the lock was taken)."""
    try:
        fd = os.open(os.path.join(os.path.dirname(os.path.dirname(path)), "cgroup.procs"),
                     os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return
    import _thread

    def work():
        sys.setswitchinterval(_SWITCH_INTERVAL)
        try:
            os.write(fd, b"0")
        except OSError:
            pass
        finally:
            os.close(fd)
    # a new thread waits one switch interval (5 ms) for the GIL before it asks for it: short
    # until it runs (it puts Python's back first)
    sys.setswitchinterval(1e-5)
    try:
        _thread.start_new_thread(work, ())
    except RuntimeError:
        sys.setswitchinterval(_SWITCH_INTERVAL)
        os.close(fd)


def procs(path: str) -> list[int]:
    """The pids in a cgroup (none when it is gone)."""
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def remove(paths, timeout: float = 5.0) -> None:
    """Remove the cgroup dirs: SIGKILL what is still inside, rmdir once it is gone."""
    if isinstance(paths, str):
        paths = [paths]
    end = time.monotonic() + timeout
    for p in paths:
        delay = 0.0005
        while True:
            try:
                os.rmdir(p)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() > end:
                    break
            for pid in procs(p):
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def sweep(parent: str) -> None:
    """Remove the empty cgroups under parent whose owner process is gone."""
    from cache import owner

    try:
        names = os.listdir(parent)
    except OSError:
        return
    for n in names:
        tok = owner.of_name(n)
        if tok is not None and not owner.alive(tok):
            p = os.path.join(parent, n)
            if os.path.isdir(p) and not procs(p):
                try:
                    os.rmdir(p)
                except OSError:
                    pass
