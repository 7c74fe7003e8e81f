"""CLI: a container's filesystem and resources — `commit` (builder.commit), `cp`
(runtime.containers.copy) and `stats` (runtime.containers.stats), in docker's words, output and
exit codes. Imports happen only when a command runs.
"""
from __future__ import annotations

import os
import sys


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


def _root() -> str:
    from cache.store import Store

    return os.fspath(Store.open().root)


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
    from runtime.containers import copy
    from runtime.containers.state import Containers

    root = _root()
    c = Containers(root).get(src_ctr or dst_ctr)
    if src_ctr is not None:
        if not src:
            raise ContainerError("source can not be empty")
        copy.copy_out(root, c, src, dst, follow=args.follow_link)
    else:
        if not dst:
            raise ContainerError("destination can not be empty")
        copy.copy_in(root, c, src, dst, archive=args.archive, follow=args.follow_link)
    return 0


def cmd_stats(args) -> int:
    from runtime.containers import stats

    return stats.main(_root(), args, sys.stdout)
