"""CLI: the container lifecycle around `run -d` — `create`, `start`, `restart`, `ps`, `logs`,
`stop`, `kill`, `wait`, `rm`, `exec`, `container inspect` — in docker's words, columns and exit
codes. No daemon: each reads the container's files (runtime.containers.state) and signals its
process tree or waits for its supervisor directly.
A command given several containers goes on after one fails, says so on a line each, exits 1.
"""
from __future__ import annotations

import os
import sys
import time

from builder.filters import labels_match as _labels_match
from builder.filters import parse as _filters
from builder.formatter import go_time as _go_time
from builder.formatter import render
from builder.formatter import table as _table
from builder.units import human_size


def _stopping(p, func) -> None:
    """stop's and restart's flags (docker's: the same -t and -s)."""
    p.add_argument("-t", "--time", type=int, default=None, metavar="N",
                   help="seconds to wait before killing the container (default: its "
                        "--stop-timeout, else 10)")
    p.add_argument("-s", "--signal", metavar="SIG", help="signal to stop it with (default: the "
                   "image's StopSignal, else SIGTERM)")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(func=func)


def register(sub) -> None:
    # `create` in the top-level help; cli.main parses its command line with flag_command()
    sub.add_parser("create", help="create a new container", add_help=False)
    sub.add_parser("attach", help="attach to a running container's input, output and terminal",
                   add_help=False)     # attach: parsed by flag_command() too (pflag's bools)

    p = sub.add_parser("start", help="start one or more created or stopped containers")
    p.add_argument("-a", "--attach", action="store_true",
                   help="attach stdout/stderr and exit with the container's code")
    p.add_argument("-i", "--interactive", action="store_true",
                   help="attach stdin (a container made with -i: its stdin, with -t its terminal)")
    # --- attach: start's and exec's --detach-keys, the attach command ---
    p.add_argument("--detach-keys", metavar="KEYS", help=_DETACH_KEYS_HELP)
    # --- end attach ---
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(func=cmd_start)

    _stopping(sub.add_parser("restart", help="restart one or more containers"), cmd_restart)

    p = sub.add_parser("exec", help="run a command in a running container")
    p.add_argument("-d", "--detach", action="store_true", help="run the command in the background")
    p.add_argument("-i", "--interactive", action="store_true", help="keep stdin open")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-TTY")
    p.add_argument("-e", "--env", action="append", default=[], metavar="K=V",
                   help="set an environment variable (K alone: take it from this environment)")
    p.add_argument("--env-file", action="append", default=[], metavar="FILE",
                   help="read K=V lines from a file (before -e's)")
    p.add_argument("-w", "--workdir", metavar="DIR", help="working directory inside the container")
    p.add_argument("-u", "--user", metavar="USER", help="name|uid[:group|gid]")
    p.add_argument("--privileged", action="store_true",
                   help="give the command every capability (docker exec --privileged)")
    p.add_argument("--detach-keys", metavar="KEYS", help=_DETACH_KEYS_HELP)   # attach
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("command", nargs="...", metavar="COMMAND [ARG...]")
    p.set_defaults(func=cmd_exec)

    p = sub.add_parser("container", help="manage containers (ls, inspect, prune, rm, ...)")
    csub = p.add_subparsers(dest="container_command", metavar="COMMAND", required=True)
    q = csub.add_parser("inspect", help="display detailed information on one or more containers")
    q.add_argument("containers", nargs="+", metavar="CONTAINER")
    q.add_argument("-f", "--format", help="Go-template subset: {{.State.Status}}, {{json .Config}}")
    q.add_argument("-s", "--size", action="store_true",
                   help="add SizeRw (the writable layer's bytes) and SizeRootFs (with the image's)")
    q.set_defaults(func=cmd_container_inspect)

    p = sub.add_parser("ps", help="list containers", description="List containers (running only "
                       "unless -a).")
    p.add_argument("-a", "--all", action="store_true", help="show all containers")
    p.add_argument("-q", "--quiet", action="store_true", help="only display container IDs")
    p.add_argument("--no-trunc", action="store_true", help="don't truncate output")
    p.add_argument("-f", "--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="id=, name=, status=, label=K[=V], ancestor=IMAGE, exited=N")
    p.add_argument("--format", metavar="TEMPLATE",
                   help="Go-template subset: {{.ID}}\\t{{.Names}}, table ..., {{json .}}")
    p.add_argument("-n", "--last", type=int, default=-1, metavar="N",
                   help="show the N last created containers (all states)")
    p.add_argument("-l", "--latest", action="store_true",
                   help="show the latest created container (all states)")
    p.add_argument("-s", "--size", action="store_true",
                   help="display total file sizes: the writable layer's (and with the image's)")
    p.set_defaults(func=cmd_ps)

    p = sub.add_parser("logs", help="fetch the logs of a container")
    p.add_argument("-f", "--follow", action="store_true", help="follow log output until it exits")
    p.add_argument("-n", "--tail", default="all", metavar="N",
                   help='number of lines to show from the end of the logs (default "all")')
    p.add_argument("-t", "--timestamps", action="store_true", help="show timestamps")
    p.add_argument("--details", action="store_true",
                   help="show the extra details of each line (none are recorded: a space)")
    p.add_argument("--since", metavar="TIME", help="show logs since a time (2026-12-02T10:00:00Z, "
                   "a Unix time) or for a duration back (10m)")
    p.add_argument("--until", metavar="TIME", help="show logs before a time or a duration back")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(func=cmd_logs)

    _stopping(sub.add_parser("stop", help="stop one or more running containers"), cmd_stop)

    p = sub.add_parser("kill", help="kill one or more running containers")
    p.add_argument("-s", "--signal", default="KILL", metavar="SIG",
                   help='signal to send to the container (default "KILL")')
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(func=cmd_kill)

    p = sub.add_parser("wait", help="block until containers stop, then print their exit codes")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(func=cmd_wait)

    p = sub.add_parser("rm", help="remove one or more containers")
    p.add_argument("-f", "--force", action="store_true",
                   help="force the removal of a running container (uses SIGKILL)")
    p.add_argument("-v", "--volumes", action="store_true",
                   help="remove the anonymous volumes of the container")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(func=cmd_rm)

    for word, what in (("pause", "pause all processes within one or more containers"),
                       ("unpause", "unpause all processes within one or more containers")):
        p = sub.add_parser(word, help=what)
        p.add_argument("containers", nargs="+", metavar="CONTAINER")
        p.set_defaults(func=cmd_pause, pause=word == "pause")

    p = sub.add_parser("update", help="update configuration of one or more containers")
    for flags, dest, what in ((("-m", "--memory"), "memory", "memory limit"),
                              (("--memory-swap",), "memory_swap",
                               "memory + swap limit: -1 unlimited"),
                              (("--memory-reservation",), "memory_reservation", "memory soft limit"),
                              (("--cpus",), "cpus", "number of CPUs"),
                              (("-c", "--cpu-shares"), "cpu_shares", "CPU shares (relative weight)"),
                              (("--cpu-period",), "cpu_period", "limit the CPU CFS period"),
                              (("--cpu-quota",), "cpu_quota", "limit the CPU CFS quota"),
                              (("--pids-limit",), "pids_limit", "maximum number of processes"),
                              (("--cpuset-cpus",), "cpuset_cpus", "CPUs it may use (0-3, 0,1)"),
                              (("--cpuset-mems",), "cpuset_mems", "memory nodes it may use"),
                              (("--restart",), "restart", "restart policy: no, on-failure[:N], "
                                                          "always, unless-stopped")):
        p.add_argument(*flags, dest=dest, metavar="VALUE", help=what)
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    p.set_defaults(func=cmd_update)

    p = sub.add_parser("rename", help="rename a container")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("new_name", metavar="NEW_NAME")
    p.set_defaults(func=cmd_rename)

    p = sub.add_parser("top", help="display the running processes of a container")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("ps_args", nargs="...", metavar="[ps OPTIONS]", help='default "-ef"')
    p.set_defaults(func=cmd_top)

    p = sub.add_parser("port", help="list port mappings for the container")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("private", nargs="?", metavar="PRIVATE_PORT[/PROTO]")
    p.set_defaults(func=cmd_port)

    q = csub.add_parser("diff", help="inspect changes to files or directories on a container's "
                                     "filesystem")
    q.add_argument("container", metavar="CONTAINER")
    q.set_defaults(func=cmd_container_diff)

    for parent in (sub, csub):      # docker's top-level `export` and `container export`
        q = parent.add_parser("export", help="export a container's filesystem as a tar archive")
        q.add_argument("-o", "--output", metavar="FILE", help="write to a file, instead of STDOUT")
        q.add_argument("container", metavar="CONTAINER")
        q.set_defaults(func=cmd_export)

    q = csub.add_parser("prune", help="remove all stopped containers")
    q.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    q.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="until=TIME|DURATION, label=K[=V], label!=K[=V]")
    q.set_defaults(func=cmd_container_prune)

    # docker's management form: `container ls|rm|stop|...` are the same parsers as the commands
    # (`container run|create` only listed here: cli.main parses them as `run`, `create`)
    for name, aliases in _CONTAINER_ALIASES:
        if name in sub.choices:
            parent = sub.choices[name]
            csub.add_parser(aliases[0] if aliases else name, aliases=aliases[1:],
                            parents=[parent], add_help=False, help=_help_of(sub, name),
                            description=parent.description)


_CONTAINER_ALIASES = (("attach", ()), ("create", ()), ("exec", ()), ("kill", ()), ("logs", ()),
                      ("pause", ()), ("ps", ("ls", "list", "ps")), ("port", ()), ("rename", ()),
                      ("restart", ()), ("rm", ("rm", "remove")), ("run", ()), ("start", ()),
                      ("stop", ()), ("top", ()), ("unpause", ()), ("update", ()), ("wait", ()))


def _help_of(sub, name: str) -> str | None:
    for action in sub._choices_actions:
        if action.dest == name:
            return action.help
    return None


def _containers():
    from cache.layout import default_root
    from runtime.containers.state import Containers

    return Containers(default_root())


def _each(refs, action) -> int:
    """Run action(container, ref) for each ref; errors as one line each, exit 1 if any."""
    from runtime.errors import SandboxError

    cs, rc = _containers(), 0
    for ref in refs:
        try:
            action(cs, cs.get(ref), ref)
        except SandboxError as e:
            print(f"pybuild: error: {e}", file=sys.stderr)
            rc = 1
    return rc


# ---- time and text as docker shows them ---------------------------------------------------

def human_duration(seconds: float) -> str:
    """go-units HumanDuration, as `docker ps` uses it."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    m = s // 60
    if m == 1:
        return "About a minute"
    if m < 60:
        return f"{m} minutes"
    h = round(s / 3600)
    if h == 1:
        return "About an hour"
    if h < 48:
        return f"{h} hours"
    if h < 24 * 7 * 2:
        return f"{h // 24} days"
    if h < 24 * 30 * 2:
        return f"{h // 24 // 7} weeks"
    if h < 24 * 365 * 2:
        return f"{h // 24 // 30} months"
    return f"{h // 24 // 365} years"


def status_text(c, now: float) -> str:
    from runtime.containers.health import status_suffix
    from runtime.containers.state import parse_time

    st = c.state
    status = c.status
    if status == "running":
        from runtime.containers.inspect import paused
        up = "Up " + human_duration(now - parse_time(st["started"]))
        return up + (" (Paused)" if paused(c) else status_suffix(st.get("health")))
    if status == "restarting":
        ago = human_duration(now - parse_time(st["finished"])) if st.get("finished") else ""
        return f"Restarting ({st.get('exit_code')}) {ago} ago"
    if status == "exited":
        ago = human_duration(now - parse_time(st["finished"])) if st.get("finished") else ""
        return f"Exited ({st.get('exit_code')}) {ago} ago".replace("  ", " ")
    if status == "dead":
        return "Dead (supervisor gone)"
    return "Created"


def _ellipsis(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


# docker's `ps --format` fields and their `table` headers (cli/command/formatter/container.go)
_PS_HEADERS = {"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND",
               "CreatedAt": "CREATED AT", "RunningFor": "CREATED", "Ports": "PORTS",
               "State": "STATE", "Status": "STATUS", "Size": "SIZE", "Names": "NAMES",
               "Labels": "LABELS", "Mounts": "MOUNTS", "Networks": "NETWORKS",
               "LocalVolumes": "LOCAL VOLUMES"}
_PS_DEFAULT = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t" \
              "{{.Ports}}\t{{.Names}}"


def _networks_text(c) -> str:
    """ps's NETWORKS: the networks of the container's record, in docker's order (its user
    networks, `network connect`ed ones included, stopped or not)."""
    # --- dns: the record's networks (runtime.network.defs.endpoints_of) ---
    name = c.config.get("network") or ""
    if name in ("host", "none") or not (c.config.get("network_id") or c.config.get("endpoints")):
        return name
    from runtime.network.defs import endpoints_of
    names = [e["name"] for e in endpoints_of(c.config)]
    return ",".join(names if c.config.get("network_id") else [name, *names])
    # --- end dns ---


def ps_fields(c, now: float, trunc: bool) -> dict:
    """One container as docker's formatter.ContainerContext shows it: every field a string."""
    from grammar.goquote import go_quote
    from runtime.containers.state import parse_time
    from runtime.network.ports import of_container, ps_text

    command = " ".join(c.config.get("argv") or [])
    labels = c.config.get("labels") or {}
    created = parse_time(c.config["created"])
    return {"Command": go_quote(_ellipsis(command, 20) if trunc else command),
            "CreatedAt": _go_time(created), "ID": c.id[:12] if trunc else c.id,
            "Image": c.config.get("image", ""),
            "Labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
            "LocalVolumes": "0", "Mounts": "", "Names": c.name,
            "Networks": _networks_text(c), "Ports": ps_text(*of_container(c)),
            "RunningFor": human_duration(now - created) + " ago", "Size": "0B",
            "State": _state(c), "Status": status_text(c, now)}


def _state(c) -> str:
    """docker's State word: paused for a running container whose cgroup is frozen."""
    from runtime.containers.inspect import paused

    return "paused" if paused(c) else c.status


def render_ps(fmt: str, rows: list[dict], headers: dict | None = None,
              context: str = "ContainerContext") -> str:
    """builder.formatter.render with ps's fields as the default."""
    return render(fmt, rows, _PS_HEADERS if headers is None else headers, context)


def _matches(values: list[str], source: str) -> bool:
    """docker's filters.Match: equal, or the value is a regexp found in `source`."""
    import re

    for v in values:
        if v == source:
            return True
        try:
            if re.search(v, source):
                return True
        except re.error:
            continue
    return False


_STATUSES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")


def ps_filter(specs: list[str]):
    """A predicate for `ps --filter`: values of one key are OR'ed, keys AND'ed (docker)."""
    from builder.errors import BuildError

    f = _filters(specs, ("id", "name", "status", "label", "ancestor", "exited", "before", "since",
                         "health"))
    for v in f.get("status", []):
        if v not in _STATUSES:
            raise BuildError(f"invalid filter 'status={v}'")
    for v in f.get("health", []):
        if v not in _HEALTH:
            raise BuildError(f"Unrecognised filter value for health: {v}")
    exited = set()
    for v in f.get("exited", []):
        try:
            exited.add(int(v))
        except ValueError:
            raise BuildError(f"invalid filter 'exited={v}': not a number") from None
    images = set()
    for v in f.get("ancestor", []):
        images.update(_image_ids(v))
    cs = _containers()
    before = [cs.get(v).config["created"] for v in f.get("before", [])]
    since = [cs.get(v).config["created"] for v in f.get("since", [])]

    def keep(c) -> bool:
        created = c.config.get("created", "")
        if "id" in f and not _matches(f["id"], c.id):
            return False
        if "name" in f and not (_matches(f["name"], c.name) or _matches(f["name"], "/" + c.name)):
            return False
        if "status" in f and _state(c) not in f["status"]:
            return False
        if "label" in f and not _labels_match(f["label"], c.config.get("labels") or {}):
            return False
        if "ancestor" in f and c.config.get("image_id") not in images \
                and c.config.get("image") not in f["ancestor"]:
            return False
        if exited and not (c.status == "exited" and c.state.get("exit_code") in exited):
            return False
        if "health" in f and _health(c) not in f["health"]:
            return False
        return not (any(created >= b for b in before) or any(created <= s for s in since))
    return keep


_HEALTH = ("starting", "healthy", "unhealthy", "none")


def _health(c) -> str:
    """ps --filter health=: a running container's Health.Status, "none" without a check."""
    h = c.state.get("health") if c.status == "running" else None
    return (h or {}).get("Status") or "none"


def _image_ids(ref: str) -> set[str]:
    """The image ID `ref` (a name or an ID or its prefix) names in the store, if any."""
    from builder.commands.images import _store
    from cache.errors import StoreError

    try:
        return {_store().image(ref).id}
    except StoreError:
        return set()


def cmd_ps(args) -> int:
    now = time.time()
    keep = ps_filter(args.filter)
    last = 1 if args.latest else args.last
    keys = {s.partition("=")[0].strip().lower() for s in args.filter}
    # docker: -n/-l and a filter on status, exit code or creation order show every state
    every = args.all or last != -1 or bool(keys & {"status", "exited", "before", "since"})
    shown = [c for c in _containers().all()
             if (every or c.status in ("running", "restarting")) and keep(c)]
    if last > 0:                 # docker: 0 is no limit (but every state)
        shown = shown[:last]
    if args.quiet:
        sys.stdout.write("".join((c.id if args.no_trunc else c.id[:12]) + "\n" for c in shown))
        return 0
    fmt = args.format or (_PS_DEFAULT + "\t{{.Size}}" if args.size else _PS_DEFAULT)
    sized = args.size or ".Size" in fmt        # docker: a format naming .Size sizes too
    store = None
    if sized and shown:
        from builder.commands.images import _store, container_sizes
        store = _store()
    rows = []
    for c in shown:
        r = ps_fields(c, now, not args.no_trunc)
        r["_labels"] = c.config.get("labels") or {}
        if sized:
            rw, rootfs = container_sizes(c, store)
            r["Size"] = f"{human_size(rw)} (virtual {human_size(rootfs)})"
        rows.append(r)
    sys.stdout.write(render_ps(fmt, rows))
    return 0


# ---- logs -----------------------------------------------------------------------------------

def cmd_logs(args) -> int:
    from builder.errors import BuildError

    tail = None
    if args.tail != "all":
        try:
            tail = int(args.tail)
        except ValueError:
            raise BuildError(f'invalid value for "tail": {args.tail!r} (a number or "all")') from None
    now = time.time()
    since = docker_time(args.since, now, "since") if args.since else None
    until = docker_time(args.until, now, "until") if args.until else None
    c = _containers().get(args.container)
    if c.config.get("log_driver") == "none":
        raise BuildError("configured logging driver does not support reading")
    return _show_log(c, 0, tail, args.follow, args.timestamps, since, until, args.details)


def docker_time(value: str, now: float, what: str) -> float:
    """docker's timetypes.GetTimestamp: a Go duration back from now (10m, 1h30m), an RFC3339
    time (a zone-less one is local, as docker reads it), a date, or Unix seconds[.frac]."""
    import datetime
    import re

    from builder.errors import BuildError
    from grammar.goduration import DurationError, parse_duration

    try:
        if value != "0":              # docker: "0" is the Unix epoch, not a duration
            return now - parse_duration(value) / 1e9
    except DurationError:
        pass
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    m = re.fullmatch(r"(\d{4}-\d\d-\d\d(?:T\d\d(?::\d\d(?::\d\d)?)?)?)(\.\d+)?"
                     r"(Z|[+-]\d\d:\d\d)?", value)
    if m:
        whole, frac, zone = m.groups()
        try:       # a zone out of range (+25:00) is a bad value like any other
            t = datetime.datetime.fromisoformat(whole + ("" if len(whole) != 13 else ":00"))
            if zone:
                t = t.replace(tzinfo=datetime.UTC if zone == "Z" else
                              datetime.datetime.strptime(zone.replace(":", ""), "%z").tzinfo)
        except ValueError:
            t = None
        if t is not None:
            return t.timestamp() + (float(frac) if frac else 0.0)
    raise BuildError(f"invalid value for --{what}: {value!r} (a time like 2026-12-02T10:00:00Z, a "
                     f"Unix time, or a duration like 10m)")


def _show_log(c, offset: int, tail, follow: bool, timestamps: bool, since: float | None = None,
              until: float | None = None, details: bool = False) -> int:
    """Write the json-file log from byte `offset` (its last `tail` lines) to stdout/stderr as
    the streams it came from, only entries timed in [since, until] when given; with `follow`,
    until the container's supervisor has exited (or `until` has passed). `details`: docker's
    --details, the entry's attributes (--log-opt labels/env: none are kept) and a space."""
    import json

    from runtime.containers.state import parse_time

    outs = {"stdout": sys.stdout.buffer, "stderr": sys.stderr.buffer}

    def show(lines: list[bytes]) -> None:
        for raw in lines:
            try:
                entry = json.loads(raw)
            except ValueError:
                continue    # a line cut short by a full disk
            if since is not None or until is not None:
                try:
                    t = parse_time(entry.get("time", ""))
                except ValueError:
                    continue
                if (since is not None and t < since) or (until is not None and t > until):
                    continue
            out = outs.get(entry.get("stream"), sys.stdout.buffer)
            text = entry.get("log", "")
            if details:
                attrs = entry.get("attrs") or {}
                text = ",".join(f"{k}={v}" for k, v in sorted(attrs.items())) + " " + text
            if timestamps:
                text = f"{entry.get('time', '')} {text}"
            out.write(text.encode())
        for out in outs.values():
            out.flush()

    try:
        f = open(c.log_path, "rb")  # noqa: SIM115 - read to the end, maybe followed
    except FileNotFoundError:
        if not follow:
            return 0
        f = open(os.devnull, "rb")  # noqa: SIM115
    old = b""
    if offset == 0:             # --log-opt max-file: the rotated files, oldest first
        for i in range(int(c.config.get("log_max_file") or 1) - 1, 0, -1):
            try:
                with open(f"{c.log_path}.{i}", "rb") as rf:
                    old += rf.read()
            except FileNotFoundError:
                continue
    try:
        f.seek(offset)
        lines = (old + f.read()).splitlines(keepends=True)
        rest = lines.pop() if lines and not lines[-1].endswith(b"\n") else b""
        show(lines[-tail:] if tail else ([] if tail == 0 else lines))
        while follow:
            done = not c.reload().supervisor_alive   # checked before the read: nothing is missed
            chunk = f.read()
            if not chunk and _rotated(f, c.log_path):
                f.close()
                f = open(c.log_path, "rb")  # noqa: SIM115 - the new file after a rotation
                chunk = f.read()
            elif not chunk and os.fstat(f.fileno()).st_size < f.tell():
                f.seek(0)                   # max-file 1: truncated in place
                chunk = f.read()
            if chunk:
                lines = (rest + chunk).splitlines(keepends=True)
                rest = lines.pop() if not lines[-1].endswith(b"\n") else b""
                show(lines)
            elif done or (until is not None and time.time() > until):
                break
            else:
                time.sleep(0.05)
    finally:
        f.close()
    return 0


def _rotated(f, path: str) -> bool:
    """Whether `path` is no longer the file `f` reads (the log was rotated away)."""
    try:
        return os.stat(path).st_ino != os.fstat(f.fileno()).st_ino
    except FileNotFoundError:
        return False


# ---- signals, stop, wait, rm ----------------------------------------------------------------

def signal_number(text: str) -> int:
    """grammar.values.parse_signal with docker's error as a container error (one line, exit 1)."""
    from grammar.values import parse_signal
    from runtime.errors import ContainerError

    try:
        return parse_signal(text)
    except ValueError as e:
        raise ContainerError(str(e)) from None


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rfind(b")") + 2:].split()[1])


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def send(c, sig: int) -> None:
    """Signal a running container: through its process tree's keeper (which relays docker's
    usual signals to pid 1; SIGKILL takes the whole tree), else straight to the command: pid 1
    itself, or the child of the init with --init. As pid 1 the command gets only the signals
    it has a handler for (the kernel's rule, as under docker)."""
    from runtime.containers import inspect
    from runtime.errors import ContainerError
    from runtime.process import FORWARDED_SIGNALS

    pid = c.state.get("pid")
    sup = str(c.state.get("supervisor", "")).partition(".")[0]
    if c.status != "running" or not pid or str(_ppid(pid)) != sup:
        raise ContainerError(f"cannot kill container: {c.name}: container {c.id} is not running")
    target = pid
    if sig != 9 and sig not in FORWARDED_SIGNALS:
        target = inspect.init_pid(c) or pid
        if c.config.get("init"):
            cmds = _children(target)
            target = cmds[0] if cmds else pid
    # a paused container: v1's frozen tasks die only once thawed (its cgroup is found from
    # pid 1, the keeper's child: before the keeper is killed)
    where = inspect.freezer(c) if sig == 9 else None
    try:
        os.kill(target, sig)
    except ProcessLookupError:
        pass
    if where is not None:
        from runtime import cgroups
        from runtime.errors import SandboxError
        try:
            if cgroups.frozen(*where):
                cgroups.freeze(*where, False)
        except (OSError, SandboxError):
            pass        # gone meanwhile


def wait_supervisor(c, timeout: float | None) -> bool:
    """Wait until the container's supervisor has exited; False when timeout passed first."""
    import select

    from cache import owner

    tok = c.state.get("supervisor")
    if not tok or not owner.alive(tok):
        return True
    try:
        fd = os.pidfd_open(int(str(tok).partition(".")[0]))
    except OSError:
        return True
    try:
        if not owner.alive(tok):     # the pid was reused between the check and the open
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            select.select([fd], [], [], left)
            if not owner.alive(tok):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
    finally:
        os.close(fd)


def stop(c, signal_name: str | None, timeout: int | None) -> None:
    """docker stop: the stop signal, then SIGKILL after `timeout` seconds (default: the
    container's --stop-timeout, else 10; -1 for ever); returns once the supervisor has recorded
    the exit. The restart policy does not bring a stopped container back (even `always`)."""
    from runtime.errors import ContainerError

    sig = signal_number(signal_name or c.config.get("stop_signal") or "SIGTERM")   # before the request
    if c.status in ("running", "restarting"):
        c.request_stop()
    if c.status == "restarting" and not wait_supervisor(c, 1):
        c.reload()          # it was starting the command again as we asked: stop that run
    if c.status == "running":
        t = timeout if timeout is not None else c.config.get("stop_timeout", 10)
        try:
            send(c, sig)
        except ContainerError:
            pass                 # it ended between the look and the signal
        if not wait_supervisor(c, t if t >= 0 else None):   # docker: -1 waits for ever
            try:
                send(c.reload(), 9)
            except ContainerError:
                pass
            wait_supervisor(c, 10)
    else:
        wait_supervisor(c, 5)    # an exited one's supervisor may still be on its way out
    c.reload()


def cmd_stop(args) -> int:
    def _stop(cs, c, ref):
        stop(c, args.signal, args.time)
        print(ref)
    return _each(args.containers, _stop)


def cmd_container_inspect(args) -> int:
    import json

    from builder.commands.images import render_format, sized_doc
    from runtime.containers import inspect

    docs: list = []
    rc = _each(args.containers, lambda cs, c, ref: docs.append(
        sized_doc(c, inspect.doc(c)) if args.size else inspect.doc(c)))
    if args.format:
        for d in docs:
            print(render_format(args.format, d))
    else:
        print(json.dumps(docs, indent=4))
    return rc


def cmd_exec(args) -> int:
    """docker exec: the container's env, user and workdir unless given; its command's exit code;
    1 when the container does not run, 126 when the command cannot be set up (docker's codes)."""
    from runtime import tty
    from runtime.containers import config, exec, inspect
    from runtime.errors import ContainerError, SandboxError
    from runtime.privileges import require_root

    require_root()
    if not args.command:
        raise ContainerError('"pybuild exec" requires at least 2 arguments: CONTAINER COMMAND')
    if args.tty and args.interactive and not args.detach and not os.isatty(0):
        print("pybuild: error: the input device is not a TTY", file=sys.stderr)
        return 1                  # docker's CheckTty
    keys = _detach_keys(args.detach_keys) if args.detach_keys is not None or (
        args.tty and args.interactive) else None        # attach
    from builder.commands.run import read_env_file
    from runtime.errors import ConfigError

    try:            # docker reads them first: a missing file is its one line, exit 1
        given = [e for f in args.env_file
                 for e in config.env_file(read_env_file(f), os.environ, f)]
    except ConfigError as e:
        raise ContainerError(str(e)) from None
    c = _containers().get(args.container)
    pid1 = inspect.init_pid(c)
    if not pid1:
        raise ContainerError(f"Container {c.id} is not running")
    if inspect.paused(c):
        raise ContainerError(f"Container {c.id} is paused, unpause the container before exec")
    cfg = c.config
    try:
        env = list(cfg.get("env") or []) + given + config.user_env(args.env, os.environ)
        cwd = args.workdir or cfg.get("cwd") or "/"
        if not cwd.startswith("/"):
            raise ContainerError(f"the working directory '{cwd}' is invalid, it needs to be an "
                                 f"absolute path")
        user = args.user if args.user is not None else cfg.get("user", "")
        if args.tty and not any(e.startswith("TERM=") for e in env):
            env.append("TERM=xterm")          # docker exec -t, as run -t
        from runtime import caps
        capmask = caps.mask(cfg.get("cap_add") or [], cfg.get("cap_drop") or [],
                            bool(cfg.get("privileged") or args.privileged))
        return exec.run(pid1, args.command, env, cwd, user, detach=args.detach,
                        stdin=0 if args.interactive else None, terminal=args.tty,
                        security_opt=cfg.get("security_opt"), capmask=capmask,
                        privileged=bool(cfg.get("privileged") or args.privileged),
                        detach_keys=keys, ulimits=cfg.get("ulimits"),
                        group_add=cfg.get("group_add"), oom_score_adj=cfg.get("oom_score_adj"))
    except tty.Detached as e:   # --- attach: the command runs on (docker exec's line, exit 1)
        print(e, file=sys.stderr)
        return 1
    except ContainerError:
        raise
    except SandboxError as e:
        print(f"pybuild: error: {e}", file=sys.stderr)
        return 126


def flag_command(word: str = "create"):
    """create's command line for builder.flags: run's flag table, so the two cannot drift;
    attach's (docker's --sig-proxy=false is a pflag bool)."""
    from builder.commands import run
    from builder.flags import Command, Flag

    if word == "attach":        # --- attach ---
        return Command("pybuild attach", "[OPTIONS] CONTAINER",
                       "Attach this terminal's input and output to a running container.",
                       (Flag("detach-keys", metavar="string", help=_DETACH_KEYS_HELP),
                        Flag("no-stdin", "bool", help="do not attach stdin"),
                        Flag("sig-proxy", "bool", default=True,
                             help="send the signals this process gets to the container (not "
                                  "with a tty: ^C is typed; default true)")),
                       positionals=("container",), defaults={"func": cmd_attach})

    return Command("pybuild create", run.USAGE,
                   "Create a new container from IMAGE and print its ID; `start` runs it.",
                   tuple(f for f in run.FLAGS if f.long not in run.RUN_ONLY),
                   positionals=("image",), rest="command",
                   defaults={"func": cmd_create, "failure_exit": 125})


def cmd_create(args) -> int:
    from builder.commands.run import cmd_run

    args.detach, args.create_only = True, True
    return cmd_run(args)


def start(root: str, c, client: int | None = None, winsize: bytes | None = None) -> None:
    """Run a created or exited container again under a new supervisor, its upper dir kept;
    client: an attach connection it serves from the start (start -a), winsize: its pty's."""
    from runtime.containers import supervisor
    from runtime.errors import ContainerError

    if c.status in ("running", "restarting"):
        return                   # docker: starting a running container is a no-op
    wait_supervisor(c, 5)
    error = supervisor.spawn(root, c.id, client=client, winsize=winsize)
    if error is not None:
        raise ContainerError(error)


def cmd_start(args) -> int:
    from runtime.errors import ContainerError

    if args.attach and len(args.containers) > 1:
        from builder.errors import BuildError
        raise BuildError("you cannot start and attach multiple containers at once")
    keys = _detach_keys(args.detach_keys) if args.attach else None

    def _start(cs, c, ref):
        if not args.attach:
            start(cs.root, c)
            print(ref)
            return
        cfg = c.config
        stdin = bool(args.interactive and cfg.get("interactive"))
        if args.interactive and cfg.get("tty") and not os.isatty(0):
            raise ContainerError("the input device is not a TTY")
        if c.status in ("running", "restarting"):   # docker: start -a of a running one attaches
            attached.append(_attach(c, stdin, keys, True))
            return
        import socket

        from runtime.containers import attach

        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:        # attached before it starts: nothing it writes is missed (docker's order)
            size = _term_size() if cfg.get("tty") else None
            mine.sendall(attach.hello(stdin, size))
            start(cs.root, c, theirs.fileno(), size)
            theirs.close()
            attached.append(_session(c, mine, stdin, keys, True))
        finally:
            theirs.close()
            mine.close()

    attached: list = []
    rc = _each(args.containers, _start)      # it reports each one's error itself
    if rc == 0 and attached and attached[0] is _DETACHED:
        return 0                 # docker start -a -i: the keys leave it running, silently
    return attached[0] if attached and rc == 0 else rc


# --- attach: `pybuild attach`, and start -a's side of the attach socket ----------------------
_DETACH_KEYS_HELP = ("the keys that detach, leaving the container running: ctrl-<a-z@[\\]^_>, "
                     "DEL or a character, comma-separated (default ctrl-p,ctrl-q)")
_DETACHED = object()


def _detach_keys(text: str | None) -> bytes:
    """--detach-keys as bytes (else docker's config.json `detachKeys`, else ctrl-p,ctrl-q);
    docker's error line for a bad one."""
    from runtime import tty
    from runtime.errors import ContainerError

    try:
        return tty.chosen_detach_keys(text)
    except ValueError as e:
        raise ContainerError(str(e)) from None


def _term_size() -> bytes | None:
    """This terminal's struct winsize, None when stdout is no terminal (docker sizes the pty
    only when its output is one)."""
    from runtime import tty

    return tty.stdio_size() if os.isatty(1) else None


def cmd_attach(args) -> int:
    """docker attach: a running container's output live (stdout and stderr apart without a tty),
    this stdin into its stdin when it was made with -i (its terminal with -t), until it ends
    (its exit code) or the detach keys are typed ("read escape sequence", exit 1: docker 20.10)."""
    from runtime.errors import ContainerError
    from runtime.privileges import require_root

    require_root()
    keys = _detach_keys(args.detach_keys)
    c = _containers().get(args.container)
    if c.status == "restarting":
        raise ContainerError("You cannot attach to a restarting container, wait until it is "
                             "running")
    if c.status != "running":
        raise ContainerError("You cannot attach to a stopped container, start it first")
    cfg = c.config
    if cfg.get("tty") and not args.no_stdin and not os.isatty(0):
        raise ContainerError("the input device is not a TTY")        # docker's CheckTty
    stdin = bool(cfg.get("interactive")) and not args.no_stdin
    code = _attach(c, stdin, keys, args.sig_proxy, nudge=True)
    if code is _DETACHED:
        print("read escape sequence", file=sys.stderr)      # docker's (moby/term EscapeError)
        return 1
    return code


def _attach(c, stdin: bool, keys: bytes, sig_proxy: bool, nudge: bool = False):
    """Connect to a running container's attach socket and relay (see _session)."""
    from runtime.containers import attach
    from runtime.errors import ContainerError

    try:
        s = attach.connect(c.path)
    except FileNotFoundError:   # a supervisor of a pybuild before attach (only -it had one)
        raise ContainerError(f"cannot attach to container {c.id}: its supervisor has no attach "
                             f"socket (restart the container to attach to it)") from None
    except OSError:
        raise ContainerError(f"cannot attach to container {c.id}: it is not running") from None
    try:
        s.sendall(attach.hello(stdin, _term_size() if c.config.get("tty") else None, nudge))
        return _session(c, s, stdin, keys, sig_proxy)
    finally:
        s.close()


def _session(c, s, stdin: bool, keys: bytes, sig_proxy: bool):
    """Relay this process's stdio over the connection s: the container's exit code, or
    _DETACHED after the detach keys. --sig-proxy: a signal to us goes to the container (as
    `kill -s` sends it) unless it has a tty."""
    from runtime import tty
    from runtime.containers import attach
    from runtime.errors import ContainerError

    def proxy(sig: int) -> None:
        try:
            _kill(c.reload(), sig)
        except ContainerError:
            pass
    try:
        code = attach.session(s, stdin=stdin, tty=bool(c.config.get("tty")),
                              keys=keys if stdin else None, on_signal=proxy if sig_proxy else None)
    except tty.Detached:
        return _DETACHED
    if code is None:            # let go before the end: too slow a reader, or its supervisor died
        c.reload()
        if c.status == "running":
            raise ContainerError(f"container {c.name}: this client fell too far behind its "
                                 f"output and was let go (it runs on; `pybuild logs` has it all)")
        if c.status != "exited":
            raise ContainerError(f"container {c.name}: its supervisor is gone")
        code = c.state.get("exit_code", 0)
    return code
# --- end attach ---


def cmd_restart(args) -> int:
    def _restart(cs, c, ref):
        stop(c, args.signal, args.time)
        start(cs.root, c)
        print(ref)
    return _each(args.containers, _restart)


def cmd_kill(args) -> int:
    from runtime.errors import ContainerError

    try:
        sig = signal_number(args.signal)
    except ContainerError as e:
        print(f"pybuild: error: {e}", file=sys.stderr)
        return 1

    def kill(cs, c, ref):
        _kill(c, sig)
        print(ref)
    return _each(args.containers, kill)


def _kill(c, sig: int) -> None:
    """docker's ContainerKill: SIGKILL or the stop signal is docker's ExitOnNext (no restart
    after this end); `kill` and attach's --sig-proxy."""
    if sig == 9 or sig == signal_number(c.config.get("stop_signal") or "SIGTERM"):
        c.request_stop()
    send(c, sig)


def cmd_wait(args) -> int:
    from runtime.errors import ContainerError

    def wait(cs, c, ref):
        if c.status == "created" and not c.supervisor_alive:
            raise ContainerError(f"container {ref} has not been started")
        wait_supervisor(c, None)
        c.reload()
        if c.status != "exited":
            raise ContainerError(f"container {ref}: its exit code is unknown (its supervisor is gone)")
        print(c.state.get("exit_code"))
    return _each(args.containers, wait)


def cmd_rm(args) -> int:
    import signal

    from runtime.errors import ContainerError

    def rm(cs, c, ref):
        if c.status in ("running", "restarting"):
            if not args.force:
                from runtime.containers.inspect import paused
                if paused(c):
                    raise ContainerError(f"You cannot remove a paused container {c.id}. Unpause "
                                         f"and then stop the container before attempting removal "
                                         f"or force remove")
                raise ContainerError(f"You cannot remove a running container {c.id}. Stop the "
                                     f"container before attempting removal or force remove")
            c.request_stop()
            try:
                send(c, 9)
            except ContainerError:
                pass
            if not wait_supervisor(c, 10):
                try:
                    os.kill(int(str(c.state["supervisor"]).partition(".")[0]), signal.SIGKILL)
                except ProcessLookupError:
                    pass             # it ended between the wait and the kill
                wait_supervisor(c, 10)
        else:
            wait_supervisor(c, 5)    # an exited one's supervisor may still be on its way out
        cs.remove(c)
        if c.config.get("network") not in ("host", "none"):   # a killed supervisor's lease
            from runtime.network.defs import sweep  # and bridge
            sweep(cs.root, c.config)
        if args.volumes:
            from runtime.containers.volumes import Volumes
            Volumes(cs.root).remove_anonymous(c.config.get("mounts"))
        print(ref)
    return _each(args.containers, rm)


def cmd_pause(args) -> int:
    """docker pause/unpause: the container's freezer cgroup frozen or thawed (docker's lines
    for one that does not run, is already paused, or is not)."""
    from runtime import cgroups
    from runtime.containers import inspect
    from runtime.errors import ContainerError

    def pause(cs, c, ref):
        where = inspect.freezer(c) if c.status == "running" else None
        if where is None:
            raise ContainerError(f"Container {c.id} is not running")
        if cgroups.frozen(*where) == args.pause:
            raise ContainerError(f"Container {c.id} is " + ("already paused" if args.pause
                                                             else "not paused"))
        cgroups.freeze(*where, args.pause)
        print(ref)
    return _each(args.containers, pause)


def cmd_container_diff(args) -> int:
    """docker diff CONTAINER (`container diff`: pybuild's own `diff` compares two images). A
    running container is frozen meanwhile (builder.commit.paused), as for commit: its upper dir
    is walked by path."""
    from builder.commit import paused
    from runtime.containers.state import changes

    c = _containers().get(args.container)
    with paused(c, True, "diffed"):
        found = changes(c)
    sys.stdout.write("".join(f"{kind} {path}\n" for kind, path in found))
    return 0


def cmd_export(args) -> int:
    """docker export: the container's filesystem (its writable layer over its image's) as a
    tar, to -o FILE or stdout, never to a terminal (docker's line)."""
    from builder import outputs
    from builder.errors import BuildError
    from runtime.privileges import require_root

    if not args.output and sys.stdout.isatty():
        raise BuildError("cowardly refusing to save to a terminal. Use the -o flag or redirect")
    require_root()
    c = _containers().get(args.container)
    from builder.commit import paused
    from cache.layout import TMP_DIR

    tmp = os.path.join(os.path.dirname(os.path.dirname(c.path)), TMP_DIR)
    upper = os.path.join(c.path, "upper")
    with paused(c, True, "exported"):  # frozen: its upper dir is read while it cannot write
        layers = [upper] if os.path.isdir(upper) else []  # created, never started: none yet
        outputs.tar_of([*layers, *(c.config.get("lowerdirs") or [])], tmp, args.output or "-")
    return 0


_LIMITS = ("memory", "memory_swap", "cpus", "cpu_shares", "pids_limit", "cpu_period",
           "cpu_quota", "memory_reservation", "cpuset_cpus", "cpuset_mems")


def cmd_update(args) -> int:
    """docker update: new limits in the record and, while it runs, in its cgroups; --restart
    in the record, which the supervisor reads at the command's end."""
    from runtime import cgroups
    from runtime.containers import inspect
    from runtime.errors import ContainerError
    from runtime.privileges import require_root
    from runtime.spec import Resources

    given = {k: getattr(args, k) for k in _LIMITS if getattr(args, k) is not None}
    if not given and args.restart is None:
        raise ContainerError("you must provide one or more flags when using this command")
    require_root()

    def update(cs, c, ref):
        change: dict = {}
        if args.restart is not None:
            from builder.commands.run import _restart_policy
            if c.config.get("auto_remove") and args.restart != "no":
                raise ContainerError("Restart policy cannot be updated because AutoRemove is "
                                     "enabled for the container")
            change["restart"] = _restart_policy(args.restart, False)
        if given:
            base = Resources(**(c.config.get("resources") or {}))
            try:
                new = cgroups.resources(**given, base=base)
            except ContainerError:
                raise
            except Exception as e:
                if "cannot be updated" in str(e):
                    raise ContainerError(f"Cannot update container {c.id}: {e}") from None
                raise
            pid = inspect.init_pid(c)
            if pid:
                cgroups.update(pid, new)
            change["resources"] = new.to_dict()
        cs.update_config(c, lambda cfg: cfg.update(change))
        print(ref)
    return _each(args.containers, update)


def cmd_rename(args) -> int:
    """docker rename: the record's name, under the containers' lock; docker's lines."""
    from runtime.errors import ContainerError

    cs = _containers()
    try:
        cs.rename(cs.get(args.container), args.new_name)
    except ContainerError as e:
        print(f"pybuild: error: {e}", file=sys.stderr)
        return 1
    return 0


# ---- top, port, container prune -------------------------------------------------------------

def _proc_stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name (field 3, the state, is index 0)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2:].decode().split()


def namespace_pids(pid1: int) -> list[int]:
    """Every host pid whose pid namespace is that of `pid1` (the container's processes)."""
    try:
        ns = os.readlink(f"/proc/{pid1}/ns/pid")
    except OSError:
        return []
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.readlink(f"/proc/{name}/ns/pid") == ns:
                    out.append(int(name))
            except OSError:
                continue
    return sorted(out)


def _tty_name(nr: int) -> str:
    major, minor = (nr >> 8) & 0xFFF, (nr & 0xFF) | ((nr >> 12) & 0xFFF00)
    if nr == 0:
        return "?"
    if 136 <= major <= 143:
        return f"pts/{(major - 136) * 256 + minor}"
    if major == 4:
        return f"tty{minor}" if minor < 64 else f"ttyS{minor - 64}"
    return "?"


def ps_ef(pids: list[int], now: float) -> list[list[str]]:
    """`ps -ef` from /proc: UID PID PPID C STIME TTY TIME CMD, procps's spellings (a user's
    name when the host knows it, STIME HH:MM today else MonDD else the year, CMD [comm] for a
    kernel-less argv)."""
    import pwd

    hz = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        btime = next(int(ln.split()[1]) for ln in f if ln.startswith("btime "))
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    rows = [["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]]
    today = time.localtime(now)
    for pid in pids:
        st = _proc_stat(pid)
        try:
            uid = os.stat(f"/proc/{pid}").st_uid
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().rstrip(b"\0").split(b"\0")
            with open(f"/proc/{pid}/comm", "rb") as f:
                comm = f.read().strip().decode(errors="replace")
        except OSError:
            continue
        if st is None:
            continue
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = str(uid)
        cpu = (int(st[11]) + int(st[12])) / hz
        started = int(st[19]) / hz
        elapsed = max(uptime - started, 1e-9)
        start = time.localtime(btime + started)
        if start[:3] == today[:3]:
            stime = time.strftime("%H:%M", start)
        elif start.tm_year == today.tm_year:
            stime = time.strftime("%b%d", start)
        else:
            stime = str(start.tm_year)
        t = int(cpu)
        days, t = divmod(t, 86400)
        cputime = (f"{days}-" if days else "") + f"{t // 3600:02d}:{t // 60 % 60:02d}:{t % 60:02d}"
        cmd = b" ".join(argv).decode(errors="replace") if argv != [b""] else f"[{comm}]"
        rows.append([user, str(pid), st[1], str(min(99, int(cpu * 100 / elapsed))), stime,
                     _tty_name(int(st[4])), cputime, cmd])
    return rows


def cmd_top(args) -> int:
    """docker top: the container's processes with their host pids; `ps -ef`'s columns read from
    /proc by default, other ps options run the host's ps and keep the container's rows (docker's
    way: its PID column)."""
    import subprocess

    from runtime.containers import inspect
    from runtime.errors import ContainerError

    c = _containers().get(args.container)
    pid1 = inspect.init_pid(c)
    if not pid1:
        raise ContainerError(f"Container {c.id} is not running")
    pids = namespace_pids(pid1)
    if not args.ps_args or args.ps_args == ["-ef"]:
        rows = ps_ef(pids, time.time())
    else:
        try:
            out = subprocess.run(["ps", *args.ps_args], capture_output=True, text=True,
                                 check=False)
        except OSError as e:
            raise ContainerError(f"cannot run ps: {e.strerror}") from None
        if out.returncode:
            said = (out.stderr or out.stdout).strip().splitlines()
            raise ContainerError(f"ps {' '.join(args.ps_args)}: "
                                 f"{said[-1] if said else f'exit status {out.returncode}'}")
        lines = out.stdout.splitlines()
        head = lines[0].split() if lines else []
        if "PID" not in head:
            raise ContainerError("Couldn't find PID field in ps output")
        col, wanted = head.index("PID"), {str(p) for p in pids}
        rows = [head]
        for ln in lines[1:]:
            cells = ln.split(None, len(head) - 1)
            if len(cells) > col and cells[col] in wanted:
                rows.append(cells)
    sys.stdout.write(_table(rows, minwidth=20))
    return 0


def cmd_port(args) -> int:
    """docker port: every published port as `80/tcp -> 127.0.0.1:8800`, or one port's host
    addresses; a port not published is docker's error."""
    from runtime.errors import ContainerError
    from runtime.network.ports import host_port, of_container

    c = _containers().get(args.container)
    published, _ = of_container(c)
    if args.private:
        port, _, proto = args.private.partition("/")
        want = f"{port}/{proto or 'tcp'}"
        hits = [b for b in published if f"{b['port']}/{b['proto']}" == want]
        if not hits:
            raise ContainerError(f"No public port '{want}' published for {c.name}")
        for b in hits:
            print(f"{host_port(b)}")
        return 0
    for b in published:
        print(f"{b['port']}/{b['proto']} -> {host_port(b)}")
    return 0


def prune_filter(specs: list[str]):
    """The prunes' --filter (docker's until=, label=, label!=: containers, images, networks)
    as a predicate on (created RFC 3339 time, labels); None when none is given."""
    if not specs:
        return None
    from runtime.containers.state import parse_time

    f = _filters(specs, ("until", "label", "label!"))
    now = time.time()
    until = [docker_time(v, now, "filter until") for v in f.get("until", [])]

    def keep(created: str, labels: dict) -> bool:
        if until:
            try:
                t = parse_time(created)
            except ValueError:
                return False
            if not all(t < u for u in until):
                return False
        if "label" in f and not _labels_match(f["label"], labels):
            return False
        return not any(_labels_match([v], labels) for v in f.get("label!", []))
    return keep


def cmd_container_prune(args) -> int:
    """docker container prune: every container not running (created, exited, dead) goes, after
    a [y/N] question unless -f; filters until= (created before) and label[!]=."""
    from runtime.containers.state import rw_size
    from runtime.errors import ContainerError

    keep = prune_filter(args.filter)
    if not args.force:
        from builder.prompt import confirm

        confirm("WARNING! This will remove all stopped containers.",
                "container prune has been cancelled")
    deleted, reclaimed, rc = [], 0, 0
    cs = _containers()
    for c in cs.all():
        if c.status in ("running", "restarting") or (c.status == "created" and c.supervisor_alive):
            continue                 # running, or being started right now
        if keep is not None and not keep(c.config["created"], c.config.get("labels") or {}):
            continue
        wait_supervisor(c, 5)        # an exited one's supervisor may still be on its way out
        size = rw_size(c)
        try:
            cs.remove(c)
        except ContainerError as e:
            print(f"pybuild: error: {e}", file=sys.stderr)
            rc = 1
            continue
        deleted.append(c.id)
        reclaimed += size
    if deleted:
        sys.stdout.write("Deleted Containers:\n" + "".join(i + "\n" for i in deleted) + "\n")
    sys.stdout.write(f"Total reclaimed space: {human_size(reclaimed, 4)}\n")
    return rc
