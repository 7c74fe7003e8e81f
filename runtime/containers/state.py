"""Containers on disk: `<store root>/containers/<64-hex id>/` holds config.json (what to run,
fixed at create), state.json (what it is doing) and `<id>-json.log`, plus the upper/work dirs.

No daemon: every pybuild command reads these files, and the supervisor that owns a detached
container writes its state.json (cache.atomic: a reader sees the old state or the new one). A
record is made complete in the store's tmp/ and renamed into place, and removed by renaming it
back out, so a reader never sees half a container. Creating, naming and removing happen under
one lock (layout.CONTAINERS_LOCK), which is what keeps names unique. Lookup follows docker: a
full ID, then a name, then a unique ID prefix.

config.json's "mounts" are runtime.containers.volumes' dicts (type bind|volume|tmpfs, source,
target, readonly, options, anonymous); volumes read them to tell which volumes are in use.

state.json: status created|running|restarting|exited (again running after a `start`: the
upper dir is kept, so a container's changes survive its restarts); supervisor (cache.owner token,
pid.start), pid (the process tree's keeper in the host's pid namespace), exit_code, error,
started/finished (RFC3339, nanoseconds), restart_count (restarts by the --restart policy since
the last `start`), health (docker's State.Health: Status, FailingStreak, Log) when the container
has a healthcheck. A "running" or "restarting" container whose supervisor is gone reads as
status "dead": the container died with it (its process tree has PR_SET_PDEATHSIG), but nobody
recorded how. `stop`, `kill` and `rm -f` leave a STOP_REQUEST file first, so the supervisor does
not apply the restart policy to an end they asked for (docker's ExitOnNext/manually stopped).
FROZEN_BY is there, flocked, while `commit` holds the container frozen; a reader that finds
it unlocked (a commit killed with -9) thaws the container.
"""
from __future__ import annotations

import json
import os
import time

from cache import atomic, layout, owner
from runtime.containers.names import valid_name
from runtime.errors import ContainerError

CONFIG = "config.json"
STATE = "state.json"
STOP_REQUEST = "stop-requested"
FROZEN_BY = "frozen-by"     # "<cgroup version> <freezer dir>", flocked while commit freezes it

# a few of docker's namesgenerator words (moby pkg/namesgenerator)
_LEFT = ("admiring", "adoring", "affectionate", "agitated", "amazing", "angry", "awesome",
         "blissful", "bold", "brave", "charming", "clever", "cool", "compassionate", "confident",
         "dazzling", "determined", "eager", "ecstatic", "elastic", "elegant", "epic", "festive",
         "focused", "friendly", "gallant", "gifted", "goofy", "happy", "hopeful", "jolly",
         "keen", "kind", "laughing", "loving", "lucid", "magical", "modest", "nifty", "nostalgic",
         "optimistic", "peaceful", "pensive", "quirky", "relaxed", "serene", "sharp", "stoic",
         "sweet", "tender", "trusting", "upbeat", "vibrant", "vigilant", "wizardly", "zealous")
_RIGHT = ("albattani", "allen", "archimedes", "babbage", "bardeen", "bell", "bhabha", "borg",
          "bose", "cannon", "curie", "darwin", "dijkstra", "einstein", "euclid", "euler",
          "fermat", "feynman", "galileo", "gauss", "goldberg", "hamilton", "hawking", "hopper",
          "hypatia", "johnson", "kepler", "knuth", "lamarr", "leakey", "lovelace", "mayer",
          "mccarthy", "meitner", "mendel", "newton", "noether", "pascal", "pike", "ritchie",
          "shannon", "thompson", "torvalds", "turing", "volhard", "wiles", "wright", "yalow")


def now() -> str:
    """The current time as RFC3339 with nanoseconds in UTC (docker's RFC3339Nano)."""
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"


def parse_time(text: str) -> float:
    """Seconds since the epoch of an RFC 3339 time: what `now()` writes, and an image's
    `created` (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`). Plain arithmetic, not strptime (its
    first call compiles regexes: ~30 ms of an `images`); ValueError for anything else."""
    if not isinstance(text, str) or len(text) < 19 or text[4] + text[7] + text[10] + text[13] \
            + text[16] not in ("--T::", "--t::"):
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    y, mo, d = int(text[0:4]), int(text[5:7]), int(text[8:10])
    h, mi, s = int(text[11:13]), int(text[14:16]), int(text[17:19])
    rest, frac = text[19:], 0.0
    if rest.startswith("."):
        digits = len(rest) - len(rest[1:].lstrip("0123456789"))
        frac, rest = float("0" + rest[:digits]), rest[digits:]
    offset = 0
    if rest and rest not in ("Z", "z"):
        if len(rest) != 6 or rest[0] not in "+-" or rest[3] != ":":
            raise ValueError(f"not an RFC 3339 time: {text!r}")
        offset = (int(rest[1:3]) * 3600 + int(rest[4:6]) * 60) * (1 if rest[0] == "+" else -1)
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h < 24 and mi < 60 and s < 61):
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    # days from 1970-01-01 of the civil date (H. Hinnant's days_from_civil)
    y -= mo <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (mo + (-3 if mo > 2 else 9)) + 2) // 5 + d - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    return days * 86400 + h * 3600 + mi * 60 + s + frac - offset


def random_name(taken) -> str:
    """adjective_surname as docker gives, never boring_wozniak; a digit is added on a clash."""
    for attempt in range(100):
        a, b = os.urandom(2)
        name = f"{_LEFT[a % len(_LEFT)]}_{_RIGHT[b % len(_RIGHT)]}"
        if attempt:
            name += str(attempt % 10)
        if name not in taken:
            return name
    return f"{name}_{os.urandom(4).hex()}"


def _is_id(s: str) -> bool:
    return len(s) == 64 and layout.is_hex(s)


class Container:
    """One container's record as read; `state` is re-read by `reload`."""

    def __init__(self, path: str, config: dict, state: dict):
        self.path = path
        self.id = os.path.basename(path)
        self.config = config
        self.state = state

    @property
    def name(self) -> str:
        return self.config["name"]

    @property
    def log_path(self) -> str:
        return os.path.join(self.path, f"{self.id}-json.log")

    @property
    def status(self) -> str:
        """created | running | restarting | exited | dead (marked running or restarting, but its
        supervisor is gone)."""
        s = self.state.get("status", "created")
        if s in ("running", "restarting") and not self.supervisor_alive:
            return "dead"
        return s

    @property
    def supervisor_alive(self) -> bool:
        return owner.alive(self.state.get("supervisor"))

    @property
    def stop_requested(self) -> bool:
        return os.path.exists(os.path.join(self.path, STOP_REQUEST))

    def request_stop(self) -> None:
        """Tell the supervisor that the coming end is asked for: no restart by the policy."""
        try:
            os.close(os.open(os.path.join(self.path, STOP_REQUEST), os.O_WRONLY | os.O_CREAT, 0o600))
        except FileNotFoundError:
            pass        # removed meanwhile

    def clear_stop_request(self) -> None:
        try:
            os.unlink(os.path.join(self.path, STOP_REQUEST))
        except FileNotFoundError:
            pass

    def freezing(self, ver: int, path: str) -> int:
        """Say, before a freeze, where it is, in FROZEN_BY flocked by this process until
        `thawed(fd)`: should it die (kill -9) with the container frozen, the next reader gets
        the lock and thaws it (frozen processes cannot even be killed on v1)."""
        import fcntl

        marker = os.path.join(self.path, FROZEN_BY)
        while True:
            fd = os.open(marker, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_nlink:   # not unlinked by a reader thawing a dead one's freeze
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{ver} {path}\n".encode())
        return fd

    def thawed(self, fd: int) -> None:
        try:
            os.unlink(os.path.join(self.path, FROZEN_BY))
        except FileNotFoundError:
            pass
        os.close(fd)

    def thaw_if_orphaned(self) -> None:
        """Thaw a container whose freezer (commit's pause) died without thawing it: FROZEN_BY
        is there but nobody holds its lock."""
        import fcntl

        marker = os.path.join(self.path, FROZEN_BY)
        try:
            fd = os.open(marker, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return          # its commit is alive and holds it frozen
            if not os.fstat(fd).st_nlink:
                return          # another reader thawed it
            ver, _, path = os.pread(fd, 4096, 0).decode(errors="replace").strip().partition(" ")
            if path:            # empty: the commit died before it froze anything
                from runtime import cgroups
                from runtime.errors import SandboxError
                try:
                    cgroups.freeze(int(ver), path, False)
                except (OSError, ValueError, SandboxError):
                    pass        # the container (and its cgroup) is gone, or will not thaw
            os.unlink(marker)
        finally:
            os.close(fd)

    def reload(self) -> Container:
        self.state = _read(os.path.join(self.path, STATE)) or self.state
        return self

    def write_state(self, **changes) -> None:
        """Merge `changes` into state.json (only the container's supervisor writes it)."""
        self.state = {**self.state, **changes}
        atomic.write_json(os.path.join(self.path, STATE), self.state)


def _read(path: str) -> dict | None:
    try:
        with open(path, "rb") as f:
            value = json.load(f)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


class Containers:
    """The containers of one store root."""

    def __init__(self, root):
        self.root = os.fspath(root)
        self.dir = os.path.join(self.root, layout.CONTAINERS_DIR)
        self.tmp = os.path.join(self.root, layout.TMP_DIR)

    def _lock(self) -> atomic.Lock:
        os.makedirs(self.dir, exist_ok=True)
        return atomic.Lock(os.path.join(self.root, layout.CONTAINERS_LOCK))

    def load(self, cid: str) -> Container | None:
        path = os.path.join(self.dir, cid)
        config = _read(os.path.join(path, CONFIG))
        if config is None:
            return None
        c = Container(path, config, _read(os.path.join(path, STATE)) or {"status": "created"})
        if os.path.exists(os.path.join(path, FROZEN_BY)):
            c.thaw_if_orphaned()
        return c

    def all(self) -> list[Container]:
        """Every container, newest first."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        out = [c for c in (self.load(n) for n in names if _is_id(n)) if c is not None]
        out.sort(key=lambda c: c.config.get("created", ""), reverse=True)
        return out

    def get(self, ref: str) -> Container:
        """docker's lookup: full ID, then name (a leading / allowed), then unique ID prefix."""
        if _is_id(ref):
            c = self.load(ref)
            if c is not None:
                return c
        every = self.all()
        name = ref.removeprefix("/")
        for c in every:
            if c.name == name:
                return c
        if ref and all(ch in "0123456789abcdef" for ch in ref):
            hits = [c for c in every if c.id.startswith(ref)]
            if len(hits) > 1:
                raise ContainerError(f"multiple IDs found with provided prefix: {ref}")
            if hits:
                return hits[0]
        raise ContainerError(f"No such container: {ref}")

    def create(self, config: dict, name: str | None = None, per_id=None) -> Container:
        """A new container record (status created) with a fresh 64-hex ID and a unique name:
        `name`, or a random one; `per_id(id)` adds what depends on the ID (the hostname).
        ContainerError (docker's words) when the name is taken."""
        if name is not None and not valid_name(name.removeprefix("/")):
            raise ContainerError(f"Invalid container name ({name}), only "
                                 f"[a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        os.makedirs(self.tmp, exist_ok=True)
        with self._lock().held():
            every = self.all()
            taken = {c.name: c.id for c in every}
            ids = {c.id for c in every}
            if name is not None:
                name = name.removeprefix("/")
                if name in taken:
                    raise ContainerError(
                        f'Conflict. The container name "/{name}" is already in use by container '
                        f'"{taken[name]}". You have to remove (or rename) that container to be '
                        f'able to reuse that name.')
            else:
                name = random_name(taken)
            cid = os.urandom(32).hex()
            while cid in ids:
                cid = os.urandom(32).hex()
            config = {**config, **(per_id(cid) if per_id else {}), "id": cid, "name": name,
                      "created": now()}
            staging = owner.temp_dir(self.tmp, "ctr")
            try:
                atomic.write_json(os.path.join(staging, CONFIG), config)
                atomic.write_json(os.path.join(staging, STATE), {"status": "created"})
                os.chmod(staging, 0o710)
                os.rename(staging, os.path.join(self.dir, cid))
            except BaseException:
                import shutil
                shutil.rmtree(staging, ignore_errors=True)
                raise
            atomic.fsync_dir(self.dir)
        return self.load(cid)

    # --- dns: `network connect|disconnect` change a record's networks ---
    def update_config(self, c: Container, change) -> dict:
        """config.json read again, `change(config)` applied and written whole, under the lock
        (two connects at once lose neither); c.config is the new one."""
        with self._lock().held():
            config = _read(os.path.join(c.path, CONFIG))
            if config is None:
                raise ContainerError(f"No such container: {c.id}")
            change(config)
            atomic.write_json(os.path.join(c.path, CONFIG), config)
        c.config = config
        return config
    # --- end dns ---

    def rename(self, c: Container, new: str) -> None:
        """docker rename: a valid name no other container has (docker's lines)."""
        name = new.removeprefix("/")
        if not valid_name(name):
            raise ContainerError(f"Error when allocating new name: Invalid container name "
                                 f"(/{name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        if name == c.name:
            raise ContainerError("Renaming a container with the same name as its current name")
        with self._lock().held():
            taken = {o.name: o.id for o in self.all() if o.id != c.id}
            if name in taken:
                raise ContainerError(
                    f'Error when allocating new name: Conflict. The container name "/{name}" is '
                    f'already in use by container "{taken[name]}". You have to remove (or rename) '
                    f'that container to be able to reuse that name.')
            config = _read(os.path.join(c.path, CONFIG))
            if config is None:
                raise ContainerError(f"No such container: {c.id}")
            config["name"] = name
            atomic.write_json(os.path.join(c.path, CONFIG), config)
        c.config = config

    def remove(self, c: Container) -> None:
        """Remove every trace of a container that no longer runs (its dir: config, state,
        log, upper and work dirs, a run dir left by a killed supervisor)."""
        gone = os.path.join(self.tmp, owner.temp_name("rmctr"))
        with self._lock().held():
            try:
                os.rename(c.path, gone)
            except FileNotFoundError:
                raise ContainerError(f"No such container: {c.id}") from None
        import shutil  # lazily: the supervisor imports this module and stays small

        shutil.rmtree(gone, ignore_errors=True)


def changes(c: Container) -> list[tuple[str, str]]:
    """docker diff: (kind, path) of what the container's writable layer changed over its image,
    sorted by path: A added, C changed (a copied-up file or a dir holding changes), D deleted
    (a whiteout; an opaque dir's lower entries it does not have again)."""
    import stat

    from cache.overlayfmt import dir_layers, is_opaque, is_whiteout, lookup

    upper = os.path.join(c.path, "upper")
    lowers = list(c.config.get("lowerdirs") or [])
    out: list[tuple[str, str]] = []

    def walk(rel: str, lower_there: bool) -> None:
        try:
            names = sorted(os.listdir(os.path.join(upper, rel) if rel else upper))
        except OSError:
            return
        for name in names:
            sub = f"{rel}/{name}" if rel else name
            st = os.lstat(os.path.join(upper, sub))
            if is_whiteout(st):
                out.append(("D", "/" + sub))
                continue
            below = lower_there and lookup(lowers, sub) is not None
            out.append(("C" if below else "A", "/" + sub))
            if stat.S_ISDIR(st.st_mode):
                if below and is_opaque(os.path.join(upper, sub)):
                    seen = set(os.listdir(os.path.join(upper, sub)))
                    gone = {n for d in dir_layers(lowers, sub) for n in os.listdir(os.path.join(d, sub))
                            if n not in seen and lookup(lowers, f"{sub}/{n}") is not None}
                    out.extend(("D", f"/{sub}/{n}") for n in gone)
                walk(sub, below)

    walk("", True)
    out.sort(key=lambda kp: kp[1])
    return out


def rw_size(c: Container) -> int:
    """Bytes in the container's writable layer (docker's SizeRw): its upper dir's files."""
    from cache.fspath import tree_bytes

    return tree_bytes(os.path.join(c.path, "upper"))
