"""CLI: `pybuild volume create|ls|inspect|rm|prune`, docker's volume commands over the volumes
under the store root (runtime.containers.volumes). Imports happen only when a command runs."""
from __future__ import annotations

import json
import sys


def register(sub) -> None:
    v = sub.add_parser("volume", help="manage volumes",
                       description="Manage the named and anonymous volumes `run` mounts.")
    vsub = v.add_subparsers(dest="volume_command", metavar="COMMAND")
    v.set_defaults(func=lambda args: (v.print_help(), 0)[1])

    p = vsub.add_parser("create", help="create a volume")
    p.add_argument("name", nargs="?", metavar="VOLUME", help="default: a random 64-hex name")
    p.add_argument("--label", action="append", default=[], metavar="K=V", help="set metadata")
    p.add_argument("-d", "--driver", default="local", help='volume driver (only "local")')
    p.set_defaults(func=cmd_create)

    p = vsub.add_parser("ls", aliases=["list"], help="list volumes")
    p.add_argument("-q", "--quiet", action="store_true", help="only display volume names")
    p.set_defaults(func=cmd_ls)

    p = vsub.add_parser("inspect", help="display detailed information on one or more volumes")
    p.add_argument("names", nargs="+", metavar="VOLUME")
    p.set_defaults(func=cmd_inspect)

    p = vsub.add_parser("rm", aliases=["remove"], help="remove one or more volumes")
    p.add_argument("-f", "--force", action="store_true",
                   help="no error for a volume that does not exist (one a container uses is "
                        "kept, as docker does)")
    p.add_argument("names", nargs="+", metavar="VOLUME")
    p.set_defaults(func=cmd_rm)

    p = vsub.add_parser("prune", help="remove all volumes no container uses")
    p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    p.add_argument("-a", "--all", action="store_true",
                   help="named volumes too (by default only anonymous ones, as docker 23+)")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="label=K[=V], label!=K[=V]")
    p.set_defaults(func=cmd_prune)


def _volumes():
    from cache.layout import default_root
    from runtime.containers.volumes import Volumes

    return Volumes(default_root())


def cmd_create(args) -> int:
    from runtime.errors import ConfigError

    if args.driver != "local":
        raise ConfigError(f"volume driver {args.driver!r} is not supported (only local)")
    from builder.flags import kv_map

    name, _new = _volumes().create(args.name, labels=kv_map(args.label),
                                   anonymous=args.name is None)
    print(name)
    return 0


def cmd_ls(args) -> int:
    names = _volumes().names()
    if args.quiet:
        sys.stdout.write("".join(n + "\n" for n in names))
        return 0
    sys.stdout.write("DRIVER    VOLUME NAME\n" + "".join(f"local     {n}\n" for n in names))
    return 0


def cmd_inspect(args) -> int:
    from runtime.errors import SandboxError

    vols, docs, rc = _volumes(), [], 0
    for n in args.names:
        try:
            docs.append(vols.doc(n))
        except SandboxError as e:
            print(f"pybuild: error: {e}", file=sys.stderr)
            rc = 1
    print(json.dumps(docs, indent=4))
    return rc


def cmd_rm(args) -> int:
    from runtime.errors import SandboxError

    vols, rc = _volumes(), 0
    for n in args.names:
        try:
            vols.remove(n)
        except SandboxError as e:
            if args.force and vols.meta(n) is None:
                continue
            print(f"pybuild: error: {e}", file=sys.stderr)
            rc = 1
            continue
        print(n)
    return rc


def cmd_prune(args) -> int:
    from builder.units import human_size
    from cache.fspath import tree_bytes

    keep = None
    if getattr(args, "filter", None):
        from builder.commands.containers import _filters, prune_filter
        _filters(args.filter, ("label", "label!"))      # docker: no until for volumes
        keep = prune_filter(args.filter)
    if not args.force:
        from builder.prompt import confirm

        which = "all local volumes" if args.all else "anonymous local volumes"
        confirm(f"WARNING! This will remove {which} not used by at least one container.",
                "volume prune has been cancelled")
    vols = _volumes()
    deleted, reclaimed = [], 0
    for n in vols.names():
        meta = vols.meta(n) or {}
        if vols.users(n) or not (args.all or meta.get("Anonymous")):
            continue
        if keep is not None and not keep(meta.get("CreatedAt") or "", meta.get("Labels") or {}):
            continue
        size = tree_bytes(vols.mountpoint(n))
        vols.remove(n)
        deleted.append(n)
        reclaimed += size
    if deleted:
        sys.stdout.write("Deleted Volumes:\n" + "".join(n + "\n" for n in deleted) + "\n")
    sys.stdout.write(f"Total reclaimed space: {human_size(reclaimed, 4)}\n")
    return 0
