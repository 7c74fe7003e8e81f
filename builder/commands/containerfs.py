"""CLI: a container's filesystem and resources — `commit` (builder.commit), `cp`
(runtime.containers.copy) and `stats` (runtime.containers.stats), in docker's words, output and
exit codes. Imports happen only when a command runs.
"""
from __future__ import annotations

import os
import sys

from builder.units import bytes_size, human_size


def register(sub) -> None:
    from builder.commands.registry import parse_bool

    p = sub.add_parser("commit", help="create a new image from a container's changes")
    p.add_argument("-a", "--author", default="", metavar="AUTHOR",
                   help='author (e.g. "John Hannibal Smith <hannibal@a-team.com>")')
    p.add_argument("-m", "--message", default="", metavar="MSG", help="commit message")
    p.add_argument("-c", "--change", action="append", default=[], metavar="INSTR",
                   help="apply a Dockerfile instruction (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, "
                        "ONBUILD, USER, VOLUME, WORKDIR, STOPSIGNAL) to the image")
    p.add_argument("-p", "--pause", default=True, type=parse_bool, metavar="BOOL",
                   help="pause the container during the commit (default true)")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("repository", nargs="?", metavar="[REPOSITORY[:TAG]]")
    p.set_defaults(func=cmd_commit)

    p = sub.add_parser("cp", help="copy files/folders between a container and the local filesystem",
                       description="cp CONTAINER:SRC DEST|-  or  cp SRC|- CONTAINER:DEST; "
                                   "'-' is a tar stream on stdin/stdout.")
    p.add_argument("-a", "--archive", action="store_true",
                   help="archive mode (copy all uid/gid information)")
    p.add_argument("-L", "--follow-link", action="store_true",
                   help="always follow symbol link in SRC_PATH")
    p.add_argument("-q", "--quiet", action="store_true", help="suppress progress output (none yet)")
    p.add_argument("src", metavar="SRC")
    p.add_argument("dest", metavar="DEST")
    p.set_defaults(func=cmd_cp)

    p = sub.add_parser("stats", help="display a live stream of container resource usage")
    p.add_argument("-a", "--all", action="store_true", help="show all containers (running only "
                   "by default)")
    p.add_argument("--no-stream", action="store_true", help="print one sample and exit")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate output")
    p.add_argument("--format", metavar="TEMPLATE",
                   help="Go-template subset: table {{.Name}}\\t{{.CPUPerc}}, {{json .}}")
    p.add_argument("containers", nargs="*", metavar="CONTAINER")
    p.set_defaults(func=cmd_stats)


def cmd_commit(args) -> int:
    from runtime.privileges import require_root

    require_root()
    from builder.commit import commit
    from cache.store import Store
    from runtime.containers.state import Containers

    store = Store.open()
    c = Containers(store.root).get(args.container)
    image_id = commit(store, c, author=args.author, message=args.message, changes=args.change,
                      pause=args.pause, tag=args.repository)
    print(image_id)
    return 0


def _split(arg: str) -> tuple[str | None, str]:
    """docker's splitCpArg: CONTAINER:PATH, unless the argument is a path (starts with / or .,
    or has no colon)."""
    if os.path.isabs(arg) or arg.startswith(".") or ":" not in arg:
        return None, arg
    name, _, path = arg.partition(":")
    return name, path


def cmd_cp(args) -> int:
    from runtime.errors import ContainerError
    from runtime.privileges import require_root

    src_ctr, src = _split(args.src)
    dst_ctr, dst = _split(args.dest)
    if src_ctr is not None and dst_ctr is not None:
        raise ContainerError("copying between containers is not supported")
    if src_ctr is None and dst_ctr is None:
        raise ContainerError("must specify at least one container source")
    require_root()
    from builder.commands.containers import _containers
    from runtime.containers import copy

    cs = _containers()          # the records' root, without opening (and making) a store
    root, c = cs.root, cs.get(src_ctr or dst_ctr)
    if src_ctr is not None:
        if not src:
            raise ContainerError("source can not be empty")
        copy.copy_out(root, c, src, dst, follow=args.follow_link)
    else:
        if not dst:
            raise ContainerError("destination can not be empty")
        copy.copy_in(root, c, src, dst, archive=args.archive, follow=args.follow_link)
    return 0


# docker's `stats --format` fields and their `table` headers (cli/command/container/formatter_stats.go)
STATS_HEADERS = {"Container": "CONTAINER", "ID": "CONTAINER ID", "Name": "NAME",
                 "CPUPerc": "CPU %", "MemUsage": "MEM USAGE / LIMIT", "MemPerc": "MEM %",
                 "NetIO": "NET I/O", "BlockIO": "BLOCK I/O", "PIDs": "PIDS"}
STATS_DEFAULT = ("table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t"
                 "{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}")


def stats_fields(ref: str, c, s: dict | None, trunc: bool) -> dict:
    """One row as docker's formatter.statsContext shows it."""
    row = {"Container": ref, "ID": c.id[:12] if trunc else c.id, "Name": c.name}
    if s is None:
        return {**row, "CPUPerc": "0.00%", "MemUsage": "0B / 0B", "MemPerc": "0.00%",
                "NetIO": "0B / 0B", "BlockIO": "0B / 0B", "PIDs": "0"}
    mem_perc = s["mem"] / s["limit"] * 100 if s["limit"] else 0.0
    return {**row, "CPUPerc": f"{s['cpu_percent']:.2f}%",
            "MemUsage": f"{bytes_size(s['mem'])} / {bytes_size(s['limit'])}",
            "MemPerc": f"{mem_perc:.2f}%",
            "NetIO": f"{human_size(s['rx'])} / {human_size(s['tx'])}",
            "BlockIO": f"{human_size(s['blk_read'])} / {human_size(s['blk_write'])}",
            "PIDs": str(s["pids"])}


def cmd_stats(args) -> int:
    import time

    from builder.commands.containers import _containers, render_ps
    from runtime.containers import inspect, stats

    every = _containers()

    def chosen():
        if args.containers:
            return [(ref, every.get(ref)) for ref in args.containers]
        return [(c.name, c) for c in every.all() if args.all or c.status == "running"]

    fmt = args.format or STATS_DEFAULT
    if fmt == "table":
        fmt = STATS_DEFAULT

    def render(pairs, readings) -> str:
        rows = [stats_fields(ref, c, s, not args.no_trunc)
                for (ref, c), s in zip(pairs, readings, strict=True)]
        return render_ps(fmt, rows, STATS_HEADERS, "statsContext")

    pairs = chosen()
    pids = [inspect.init_pid(c) for _, c in pairs]
    readings = stats.measure(pids)
    if args.no_stream:
        sys.stdout.write(render(pairs, readings))
        return 0
    try:
        while True:
            sys.stdout.write("\033[2J\033[H" + render(pairs, readings))
            sys.stdout.flush()
            time.sleep(1.0)
            new = chosen()
            if [c.id for _, c in new] != [c.id for _, c in pairs]:
                pairs = new
                pids = [inspect.init_pid(c) for _, c in pairs]
                readings = stats.measure(pids)
            else:
                pids = [inspect.init_pid(c.reload()) for _, c in pairs]
                readings = stats.measure(pids, readings)
    except KeyboardInterrupt:
        return 0
