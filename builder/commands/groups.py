"""docker's management groups over the top-level commands, and what only they have.

`image ls|rm|inspect|history|tag|save|load|import|pull|push|build` are the top-level parsers
under docker's group names (as `container ...` in builder.commands.containers); `image prune`
removes dangling images (-a: every image no container uses), `builder prune` the build cache,
`system df` sums what the store holds, `system prune` runs the container, network, image and
builder prunes in docker's order after one question. `version` and `info` (also `system
info`) say what pybuild is and what this machine gives it. Registered after every other
command module (cli.NEEDS), since the aliases copy their parsers.
"""
from __future__ import annotations

import argparse
import os
import sys

_IMAGE_ALIASES = (("build", ()), ("history", ()), ("import", ()), ("inspect", ()), ("load", ()),
                  ("images", ("ls", "list")), ("rmi", ("rm", "remove")), ("pull", ()),
                  ("push", ()), ("save", ()), ("tag", ()))


def _alias(group_sub, sub, name: str, aliases: tuple = (), **defaults) -> None:
    """The top-level parser `name` again under a group (its flags, help and command). Its
    actions are the top-level parser's own objects: `defaults` may name only what is not a
    flag (func), or the top-level command would change too."""
    parent = sub.choices.get(name)
    if parent is None:
        return
    q = group_sub.add_parser(aliases[0] if aliases else name, aliases=list(aliases[1:]),
                             parents=[parent], add_help=False, description=parent.description,
                             help=next((a.help for a in sub._choices_actions if a.dest == name), None))
    if defaults:
        q.set_defaults(**defaults)


def register(sub) -> None:
    import argparse as _argparse

    group = sub.choices.get("container")
    if group is not None:       # docker's container commit|cp|stats (builder.commands.containerfs)
        csub = next(a for a in group._actions if isinstance(a, _argparse._SubParsersAction))
        for name in ("commit", "cp", "stats"):
            if name not in csub.choices:
                _alias(csub, sub, name)
    p = sub.add_parser("image", help="manage images (ls, rm, inspect, prune, ...)")
    isub = p.add_subparsers(dest="image_command", metavar="COMMAND", required=True)
    for name, aliases in _IMAGE_ALIASES:
        _alias(isub, sub, name, aliases,
               **({"func": cmd_image_inspect} if name == "inspect" else {}))
    q = isub.add_parser("prune", help="remove unused images")
    q.add_argument("-a", "--all", action="store_true",
                   help="remove all unused images, not just dangling ones")
    q.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    q.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="until=TIME|DURATION (created before), label=K[=V], label!=K[=V]")
    q.set_defaults(func=cmd_image_prune)

    p = sub.add_parser("builder", help="manage builds (build, prune)")
    bsub = p.add_subparsers(dest="builder_command", metavar="COMMAND", required=True)
    _alias(bsub, sub, "build")
    q = bsub.add_parser("prune", help="remove build cache")
    q.add_argument("-a", "--all", action="store_true", help="remove all build cache (the "
                   "default: pybuild's cache has no shared entries to keep)")
    q.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    q.set_defaults(func=cmd_builder_prune)

    p = sub.add_parser("system", help="manage pybuild (df, prune, info)")
    ssub = p.add_subparsers(dest="system_command", metavar="COMMAND", required=True)
    q = ssub.add_parser("df", help="show disk usage")
    q.add_argument("-v", "--verbose", action="store_true", help="accepted; the summary only")
    q.add_argument("--format", metavar="TEMPLATE",
                   help="Go-template: {{.Type}} {{.TotalCount}} {{.Active}} {{.Size}} "
                        "{{.Reclaimable}}, table ..., {{json .}}")
    q.set_defaults(func=cmd_df)
    q = ssub.add_parser("prune", help="remove unused data")
    q.add_argument("-a", "--all", action="store_true", help="remove all unused images, not just "
                   "dangling ones")
    q.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    q.add_argument("--volumes", action="store_true", help="prune anonymous volumes")
    q.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="until=TIME|DURATION, label=K[=V], label!=K[=V] (for containers, "
                        "networks and images)")
    q.set_defaults(func=cmd_system_prune)
    for parent in (ssub, sub):
        q = parent.add_parser("info", help="display system-wide information")
        q.add_argument("-f", "--format", help="Go template (builder.gotemplate) over the info")
        q.set_defaults(func=cmd_info)
    q = sub.add_parser("version", help="show the pybuild version information")
    q.add_argument("-f", "--format", help="Go template over the version information")
    q.set_defaults(func=cmd_version)


def cmd_image_inspect(args) -> int:
    from builder.commands.images import cmd_inspect

    args.type = "image"
    return cmd_inspect(args)


def _store():
    from cache.store import Store

    return Store.open()


def _confirm(warning: str, what: str, force: bool) -> None:
    if not force:
        from builder.prompt import confirm

        confirm(warning, f"{what} has been cancelled")


def cmd_image_prune(args) -> int:
    """Images no container is made from and no other process holds: untagged ones, or with -a
    every one (its tags go first, as docker's `untagged:` lines say)."""
    from builder.commands.containers import prune_filter
    from builder.commands.images import container_images
    from builder.units import human_size
    from cache import gc, refs

    keep = prune_filter(getattr(args, "filter", []))
    _confirm("WARNING! This will remove all images without at least one container associated "
             "to them." if args.all else "WARNING! This will remove all dangling images.",
             "image prune", args.force)
    store = _store()
    users = container_images(store)
    held = set(store.leases.held_by_others())
    tagged = set(store.tags().values())
    lines, removed = [], 0
    for image_id in list(store.images()):
        if image_id in users or image_id in held or (image_id in tagged and not args.all):
            continue
        config = store.image(image_id).config
        if keep is not None and not keep(config.get("created") or "",
                                         (config.get("config") or {}).get("Labels") or {}):
            continue
        for t in store.tags_of(image_id):
            lines.append(f"untagged: {refs.familiar(t)}")
        store.remove_image(image_id)
        lines.append(f"deleted: {image_id}")
        removed += 1
    rep = gc.prune(store, pinned=users)
    if lines:
        sys.stdout.write("Deleted Images:\n" + "".join(ln + "\n" for ln in lines) + "\n")
    sys.stdout.write(f"Total reclaimed space: {human_size(rep.bytes)}\n")
    return 0


def cmd_builder_prune(args) -> int:
    from builder.units import human_size
    from cache import gc

    _confirm("WARNING! This will remove all dangling build cache.", "builder prune", args.force)
    store = _store()
    from builder.commands.images import container_images

    rep = gc.prune(store, build_cache=True, pinned=container_images(store))
    sys.stdout.write(f"Deleted build cache objects: {rep.cache_entries}\n")
    sys.stdout.write(f"Total reclaimed space: {human_size(rep.bytes)}\n")
    return 0


def cmd_system_prune(args) -> int:
    """docker system prune: one question, then stopped containers, unused networks, (with
    --volumes anonymous volumes,) dangling images (-a: unused ones) and the build cache."""
    from builder.commands import containers, network, volumes

    what = ["all stopped containers", "all networks not used by at least one container"]
    if args.volumes:
        what.append("all anonymous volumes not used by at least one container")
    what.append("all images without at least one container associated to them" if args.all
                else "all dangling images")
    what.append("all build cache" if args.all else "all dangling build cache")
    _confirm("WARNING! This will remove:\n" + "".join(f"  - {w}\n" for w in what),
             "system prune", args.force)
    ns = argparse.Namespace
    if args.filter:             # checked before anything goes (docker's keys for each prune)
        containers.prune_filter(args.filter)
    rc = containers.cmd_container_prune(ns(force=True, filter=args.filter))
    rc |= network.cmd_prune(ns(force=True, filter=args.filter))
    if args.volumes:            # docker: volumes take no until
        rc |= volumes.cmd_prune(ns(force=True, all=False,
                                   filter=[f for f in args.filter if not f.startswith("until")]))
    rc |= cmd_image_prune(ns(force=True, all=args.all, filter=args.filter))
    rc |= cmd_builder_prune(ns(force=True, all=True))
    return rc


def _usage(store) -> list[list[str]]:
    """system df's rows: TYPE, TOTAL, ACTIVE, SIZE, RECLAIMABLE (sizes as docker prints)."""
    from builder.commands.images import container_images
    from builder.units import human_size
    from cache.fspath import tree_bytes
    from runtime.containers.state import Containers, rw_size

    users = container_images(store)
    layer_size: dict[str, int] = {}
    used_layers: set[str] = set()
    images = store.images()
    for image_id in images:
        try:
            img = store.image(image_id)
        except Exception:  # noqa: BLE001 - a broken record is prune's to find, not df's
            continue
        for d in img.diff_ids:
            layer_size[d] = (store.layer_info(d) or {}).get("size", 0)
            if image_id in users:
                used_layers.add(d)
    size = sum(layer_size.values())
    unused = sum(s for d, s in layer_size.items() if d not in used_layers)
    cs = Containers(store.root).all()
    c_size = sum(rw_size(c) for c in cs)
    c_idle = sum(rw_size(c) for c in cs if c.status not in ("running", "restarting"))
    vol_rows = _volume_usage(store, tree_bytes)
    cache = store.build_cache.entries()

    def pct(part: int, whole: int) -> str:
        return f"{human_size(part)} ({100 * part // whole if whole else 0}%)"

    return [
        ["Images", str(len(images)), str(sum(1 for i in images if i in users)), human_size(size),
         pct(unused, size)],
        ["Containers", str(len(cs)), str(sum(1 for c in cs if c.status == "running")),
         human_size(c_size), pct(c_idle, c_size)],
        ["Local Volumes", *vol_rows],
        ["Build Cache", str(len(cache)), "0", "0B", "0B"],
    ]


def _volume_usage(store, tree_bytes) -> list[str]:
    from builder.units import human_size
    from runtime.containers.volumes import Volumes

    vols = Volumes(str(store.root))
    names = vols.names()
    sizes = {n: tree_bytes(vols.mountpoint(n)) for n in names}
    idle = sum(s for n, s in sizes.items() if not vols.users(n))
    total = sum(sizes.values())
    return [str(len(names)), str(sum(1 for n in names if vols.users(n))), human_size(total),
            f"{human_size(idle)} ({100 * idle // total if total else 0}%)"]


# docker's disk usage formatter fields and their table titles
_DF_HEADERS = {"Type": "TYPE", "TotalCount": "TOTAL", "Active": "ACTIVE", "Size": "SIZE",
               "Reclaimable": "RECLAIMABLE"}


def cmd_df(args) -> int:
    from builder.formatter import render, table

    usage = _usage(_store())
    if args.format:
        rows = [dict(zip(_DF_HEADERS, (str(v) for v in r), strict=True)) for r in usage]
        sys.stdout.write(render(args.format, rows, _DF_HEADERS, "diskUsageImagesContext"))
        return 0
    sys.stdout.write(table([list(_DF_HEADERS.values()), *usage]))
    return 0


def _info_doc() -> dict:
    from cache.layout import default_root
    from cache.version import VERSION
    from runtime import cgroups

    root = default_root()
    counts = {"Containers": 0, "ContainersRunning": 0, "ContainersPaused": 0,
              "ContainersStopped": 0, "Images": 0}
    if os.path.isdir(root):
        store = _store()
        from runtime.containers.inspect import paused
        from runtime.containers.state import Containers

        cs = Containers(store.root).all()
        frozen = sum(paused(c) for c in cs)  # docker counts a paused one only as paused
        counts.update(Containers=len(cs),
                      ContainersRunning=sum(c.status == "running" for c in cs) - frozen,
                      ContainersPaused=frozen,
                      ContainersStopped=sum(c.status != "running" for c in cs),
                      Images=len(store.images()))
    u = os.uname()
    return {"ID": "", **counts, "Driver": "overlay", "DockerRootDir": root,
            "LoggingDriver": "json-file", "CgroupDriver": "cgroupfs",
            "CgroupVersion": str(cgroups.hierarchies()[0]),
            "KernelVersion": u.release, "OperatingSystem": _os_name(), "OSType": "linux",
            "Architecture": u.machine, "NCPU": os.cpu_count() or 1,
            "MemTotal": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
            "Name": u.nodename, "ServerVersion": VERSION, "SecurityOptions": ["name=seccomp,profile=default"],
            "Runtimes": {"pybuild": {"path": sys.executable}}, "DefaultRuntime": "pybuild"}


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.partition("=")[2].strip().strip('"')
    except OSError:
        pass
    return "Linux"


def _render(fmt: str, doc: dict) -> str:
    from builder import gotemplate
    from builder.errors import BuildError

    try:
        return gotemplate.render(fmt, doc) + "\n"
    except gotemplate.TemplateError as e:
        raise BuildError(f"template parsing error: {e}") from None


def cmd_info(args) -> int:
    doc = _info_doc()
    if args.format:
        sys.stdout.write(_render(args.format, doc))
        return 0
    mem = doc["MemTotal"] / (1 << 30)
    sys.stdout.write(
        "Server:\n"
        f" Containers: {doc['Containers']}\n  Running: {doc['ContainersRunning']}\n"
        f"  Paused: {doc['ContainersPaused']}\n  Stopped: {doc['ContainersStopped']}\n"
        f" Images: {doc['Images']}\n Server Version: pybuild {doc['ServerVersion']} (no daemon)\n"
        f" Storage Driver: {doc['Driver']}\n Logging Driver: {doc['LoggingDriver']}\n"
        f" Cgroup Driver: {doc['CgroupDriver']}\n Cgroup Version: {doc['CgroupVersion']}\n"
        " Security Options:\n  seccomp\n   Profile: default\n"
        f" Kernel Version: {doc['KernelVersion']}\n Operating System: {doc['OperatingSystem']}\n"
        f" OSType: {doc['OSType']}\n Architecture: {doc['Architecture']}\n CPUs: {doc['NCPU']}\n"
        f" Total Memory: {mem:.2f}GiB\n Name: {doc['Name']}\n"
        f" Docker Root Dir: {doc['DockerRootDir']}\n")
    return 0


def cmd_version(args) -> int:
    import platform

    from cache.version import VERSION

    u = os.uname()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(u.machine, u.machine)
    doc = {"Client": {"Version": VERSION, "ApiVersion": "1.41", "GoVersion": "",
                      "PythonVersion": platform.python_version(), "Os": "linux", "Arch": arch,
                      "Platform": {"Name": "pybuild"}}}
    if args.format:
        sys.stdout.write(_render(args.format, doc))
        return 0
    c = doc["Client"]
    sys.stdout.write(f"Client: pybuild\n Version:           {c['Version']}\n"
                     f" API version:       {c['ApiVersion']}\n"
                     f" Python version:    {c['PythonVersion']}\n"
                     f" OS/Arch:           {c['Os']}/{c['Arch']}\n"
                     " Server:            none (pybuild has no daemon)\n")
    return 0
