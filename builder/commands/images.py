"""CLI: image commands in docker's words — images, tag, rmi, inspect, history, import, save,
load, prune. Everything heavy is imported inside the handlers (start-up is a hot path)."""
from __future__ import annotations

import sys

from builder.units import human_size


def register(sub) -> None:
    p = sub.add_parser("images", help="list images", description="List images in the store.")
    p.add_argument("repository", nargs="?", metavar="REPOSITORY[:TAG]",
                   help="only this repository (and tag); wildcards as docker's: 'busy*', '*:1'")
    p.add_argument("-a", "--all", action="store_true",
                   help="show all images (pybuild keeps no intermediate images: the same list)")
    p.add_argument("--digests", action="store_true", help="show digests")
    p.add_argument("-f", "--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="dangling=true|false, label=K[=V], before=IMAGE, since=IMAGE, "
                        "reference=PATTERN")
    p.add_argument("--format", help="Go template: table, {{.Repository}} {{.Tag}} {{.ID}} "
                                    "{{.Digest}} {{.CreatedSince}} {{.CreatedAt}} {{.Size}}, json")
    p.add_argument("-q", "--quiet", action="store_true", help="only image IDs")
    p.add_argument("--no-trunc", action="store_true", help="full image IDs")
    p.set_defaults(func=cmd_images)

    p = sub.add_parser("tag", help="name an image", description="Create a tag TARGET for SOURCE.")
    p.add_argument("source", metavar="SOURCE_IMAGE[:TAG]")
    p.add_argument("target", metavar="TARGET_IMAGE[:TAG]")
    p.set_defaults(func=cmd_tag)

    p = sub.add_parser("rmi", help="remove images", description="Remove one or more images.")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-f", "--force", action="store_true", help="remove an image with several tags by ID")
    p.add_argument("--no-prune", action="store_true",
                   help="do not delete untagged parents (pybuild keeps no parent images: the same)")
    p.set_defaults(func=cmd_rmi)

    p = sub.add_parser("inspect", help="show container or image details as JSON",
                       description="Show low-level information on containers and images, as "
                                   "docker inspect does: a container of that name or ID first.")
    p.add_argument("images", nargs="+", metavar="NAME|ID")
    p.add_argument("-f", "--format", help="Go-template subset: {{.Id}}, {{.Config.Env}}, {{json .Config}}")
    p.add_argument("--type", choices=("container", "image"), help="only look for this type")
    p.add_argument("-s", "--size", action="store_true",
                   help="a container's SizeRw and SizeRootFs too (docker's total file sizes)")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("history", help="show the history of an image")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate output")
    p.add_argument("-q", "--quiet", action="store_true", help="only image IDs")
    p.add_argument("-H", "--human", default=True, type=_bool, metavar="BOOL",
                   help="sizes and dates in human-readable form (default true)")
    p.add_argument("--format", help="Go template: table, {{.ID}} {{.CreatedSince}} "
                                    "{{.CreatedAt}} {{.CreatedBy}} {{.Size}} {{.Comment}}")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("import", help="make an image from a rootfs tarball",
                       description="Import the contents of a tarball (plain, gzip or zstd) as a "
                                   "one-layer image, like docker import.")
    p.add_argument("file", metavar="FILE", help="the tarball (- for stdin)")
    p.add_argument("name", nargs="?", metavar="REPOSITORY[:TAG]")
    p.add_argument("-m", "--message", default="", help="commit message for the history entry")
    p.add_argument("-c", "--change", action="append", default=[], metavar="INSTR",
                   help="apply a Dockerfile instruction to the image's config (CMD, ENTRYPOINT, "
                        "ENV, EXPOSE, LABEL, ONBUILD, USER, VOLUME, WORKDIR, STOPSIGNAL)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("save", help="write images to an archive",
                       description="Save images to a tar archive: docker-archive in the dual "
                                   "form (OCI layout + manifest.json) by default.")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    p.add_argument("--format", choices=("docker", "oci"), default="docker",
                   help="docker (default: loads in docker, podman, skopeo) or oci (plain OCI archive)")
    p.add_argument("--compression", choices=("gzip", "zstd"), default="gzip",
                   help="layer compression (default gzip)")
    p.set_defaults(func=cmd_save)

    p = sub.add_parser("load", help="load images from an archive",
                       description="Load images from a docker-archive (old or new), an OCI "
                                   "archive or an OCI layout directory.")
    p.add_argument("-i", "--input", metavar="FILE", help="read FILE instead of stdin")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing")
    p.set_defaults(func=cmd_load)

    p = sub.add_parser("prune", help="remove garbage and unused data",
                       description="Remove leftovers of killed processes and every blob, layer "
                                   "and manifest no image or build-cache entry refers to. "
                                   "Tagged images, untagged images and the build cache stay "
                                   "unless -a is given.")
    p.add_argument("-a", "--all", action="store_true",
                   help="also remove untagged images and the whole build cache")
    p.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation (-a asks)")
    p.set_defaults(func=cmd_prune)


def _store():
    """The store the user chose (--root, $PYBUILD_ROOT); cache.store is loaded only when a
    command runs, not for `--help`."""
    from cache.store import Store

    return Store.open()


def human_ago(created: str) -> str:
    import time

    t = _created_seconds(created)
    if t is None:
        return "N/A"
    d = max(0, time.time() - t)
    for secs, unit in ((365 * 86400, "year"), (30 * 86400, "month"), (7 * 86400, "week"),
                       (86400, "day"), (3600, "hour"), (60, "minute")):
        if d >= 2 * secs:
            return f"{int(d // secs)} {unit}s ago"
        if d >= secs:
            return f"{'an' if unit == 'hour' else 'a'} {unit} ago"
    return "Less than a second ago" if d < 1 else f"{int(d)} seconds ago"


def _image_size(store, img, infos: dict | None = None) -> int:
    """The sum of its layers' sizes (`infos`: the layer index, read once by a listing)."""
    infos = store.layer_store.infos() if infos is None else infos
    return sum((infos.get(d) or {}).get("size") or 0 for d in img.diff_ids)


def container_sizes(c, store=None) -> tuple[int, int]:
    """(SizeRw, SizeRootFs) as docker's inspect -s and ps -s show them: the writable layer's
    file bytes, and those plus its image's (0 for an image no longer in the store)."""
    from cache.errors import StoreError
    from runtime.containers.state import rw_size

    rw = rw_size(c)
    store = store or _store()
    try:
        base = _image_size(store, store.image(c.config.get("image_id", "")))
    except StoreError:
        base = 0
    return rw, rw + base


def sized_doc(c, doc: dict, store=None) -> dict:
    """An inspect document with docker's SizeRw and SizeRootFs, after HostConfig (its order)."""
    rw, rootfs = container_sizes(c, store)
    out = {}
    for k, v in doc.items():
        out[k] = v
        if k == "HostConfig":
            out.update(SizeRw=rw, SizeRootFs=rootfs)
    return out


def _bool(text: str) -> bool:
    """Go's strconv.ParseBool words (-H=false)."""
    low = text.lower()
    if low in ("1", "t", "true"):
        return True
    if low in ("0", "f", "false"):
        return False
    raise ValueError(text)


# docker's image formatter fields and their table titles (cli/command/formatter/image.go)
IMAGE_HEADERS = {"ID": "IMAGE ID", "Repository": "REPOSITORY", "Tag": "TAG", "Digest": "DIGEST",
                 "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE",
                 "VirtualSize": "VIRTUAL SIZE", "SharedSize": "SHARED SIZE",
                 "UniqueSize": "UNIQUE SIZE", "Containers": "CONTAINERS"}


def _created_seconds(created: str) -> float | None:
    from runtime.containers.state import parse_time

    try:
        return parse_time(created)
    except ValueError:
        return None


def _image_filters(store, specs: list[str]):
    """docker images --filter: a predicate over (image ID, familiar repo, tag, config)."""
    if not specs:
        return lambda *_: True
    from builder.errors import BuildError
    from builder.filters import labels_match
    from builder.filters import parse as parse_filters
    from grammar.gomatch import compile_match, match

    f = parse_filters(specs, ("dangling", "label", "before", "since", "reference"))
    for v in f.get("dangling", []):
        if v not in ("true", "false"):
            raise BuildError(f"invalid filter 'dangling={v}'")
    for p in f.get("reference", []):
        try:
            compile_match(p)
        except ValueError:
            raise BuildError(f"invalid reference format: {p!r} is not a valid pattern") from None
    bounds = {}
    for key in ("before", "since"):
        for v in f.get(key, []):
            img = store.image(v)
            bounds[key] = (_created_seconds(img.config.get("created", "")) or 0, img.id)

    def ok(image_id: str, repo: str, tag: str, cfg: dict) -> bool:
        if "dangling" in f and (repo == "<none>") != (f["dangling"][-1] == "true"):
            return False
        labels = (cfg.get("config") or {}).get("Labels") or {}
        if "label" in f and not labels_match(f["label"], labels):
            return False
        created = _created_seconds(cfg.get("created", "")) or 0     # by time, not by text
        if "before" in bounds and not (created, image_id) < bounds["before"]:
            return False
        if "since" in bounds and not (created, image_id) > bounds["since"]:
            return False
        if "reference" in f:
            name = f"{repo}:{tag}"
            if repo == "<none>" or not any(match(p, name) or match(p, repo)
                                           for p in f["reference"]):
                return False
        return True
    return ok


class _Listed:
    """An image as a listing reads it: its config, no lease."""

    def __init__(self, config: dict):
        self.config = config
        self.diff_ids = tuple((config.get("rootfs") or {}).get("diff_ids") or ())


def cmd_images(args) -> int:
    """docker images: a row per tag (an untagged image as <none>), newest first; REPOSITORY[:TAG]
    and --filter choose, --format/-q/--digests/--no-trunc shape it (builder.formatter)."""
    from builder.formatter import go_time, render
    from cache import refs

    store = _store()
    by_image: dict[str, list[str]] = {}
    for full, image_id in store.tags().items():
        by_image.setdefault(image_id, []).append(full)
    specs = list(args.filter)
    if args.repository:
        specs.append(f"reference={args.repository}")
    keep = _image_filters(store, specs)
    users = container_images(store) if args.format and "Containers" in args.format else {}
    records = store.images()
    rows = []
    from cache.errors import StoreError
    from cache.jsonread import loads

    infos = store.layer_store.infos()
    for image_id, rec in records.items():
        names = sorted(by_image.get(image_id, [])) or [None]
        try:     # a listing holds no lease (store.image would write one per image)
            img = _Listed(loads(store.blob_store.read(image_id)))
        except (StoreError, OSError, ValueError):
            continue            # removed since the index was read
        digests = (rec or {}).get("repo_digests") or ()
        for full in names:
            repo, tag = refs.split_tag(full) if full else ("<none>", "<none>")
            digest = next((d.partition("@")[2] for d in digests
                           if full and d.partition("@")[0] == repo), "<none>")
            repo = refs.familiar_repo(repo) if full else repo
            if not keep(image_id, repo, tag, img.config):
                continue
            created = img.config.get("created", "")
            size = human_size(_image_size(store, img, infos))
            when = _created_seconds(created)
            rows.append(((when or 0, (rec or {}).get("added") or 0, repo, tag), {
                "ID": image_id if args.no_trunc else image_id[7:19], "Repository": repo,
                "Tag": tag, "Digest": digest, "CreatedSince": human_ago(created),
                "CreatedAt": go_time(when) if when is not None else "", "Size": size,
                "VirtualSize": size, "SharedSize": "N/A", "UniqueSize": "N/A",
                "Containers": str(len(users.get(image_id, []))) if users else "N/A",
                "_labels": (img.config.get("config") or {}).get("Labels") or {}}))
    rows.sort(key=lambda r: r[0], reverse=True)     # newest first, then newest stored
    if args.quiet and not args.format:
        seen = dict.fromkeys(r["ID"] for _, r in rows)     # an image once, in row order
        sys.stdout.write("".join(i + "\n" for i in seen))
        return 0
    fmt = args.format or ("table {{.Repository}}\t{{.Tag}}\t" + ("{{.Digest}}\t" if args.digests
                                                                 else "")
                          + "{{.ID}}\t{{.CreatedSince}}\t{{.Size}}")
    sys.stdout.write(render(fmt, [r for _, r in rows], IMAGE_HEADERS, "imageContext"))
    return 0


def cmd_tag(args) -> int:
    store = _store()
    store.tag(args.target, store.resolve(args.source))
    return 0


def container_images(store) -> dict[str, list]:
    """{image ID: the containers (any state, running first) made from it}: what rmi and prune
    must not take away (a container's layers are its image's)."""
    from runtime.containers.state import Containers

    users: dict[str, list] = {}
    for c in Containers(store.root).all():
        users.setdefault(c.config.get("image_id", ""), []).append(c)
    for cs in users.values():
        cs.sort(key=lambda c: c.status != "running")
    return users


def _short(ident: str) -> str:
    return ident.removeprefix("sha256:")[:12]


def cmd_rmi(args) -> int:
    from cache import gc, refs
    from cache.errors import StoreError
    store = _store()
    users = container_images(store)
    errors = 0
    for ref in args.images:
        try:
            image_id = store.resolve(ref)
            tags = store.tags_of(image_id)
            full = None
            try:
                full = refs.normalize(ref)
            except StoreError:
                pass
            if full in tags and len(tags) > 1:
                store.untag(ref)
                print(f"Untagged: {refs.familiar(full)}")
                continue
            using = users.get(image_id) or []
            if using and full in tags and not args.force:
                raise StoreError(f'conflict: unable to remove repository reference "{ref}" (must '
                                 f'force) - container {_short(using[0].id)} is using its '
                                 f'referenced image {_short(image_id)}')
            if using and full not in tags and using[0].status == "running":
                raise StoreError(f"conflict: unable to delete {_short(image_id)} (cannot be "
                                 f"forced) - image is being used by running container "
                                 f"{_short(using[0].id)}")
            if using and full not in tags and not args.force:
                raise StoreError(f"conflict: unable to delete {_short(image_id)} (must be "
                                 f"forced) - image is being used by stopped container "
                                 f"{_short(using[0].id)}")
            if full not in tags and len(tags) > 1 and not args.force:
                raise StoreError(f"conflict: unable to delete {ref} (must be forced) - image is "
                                 f"referenced in multiple repositories")
            for t in tags if (full not in tags or not using) else [full]:
                store.untag(t)
                print(f"Untagged: {refs.familiar(t)}")
            if using:       # -f: untagged, kept (dangling) while a container is made from it
                continue
            store.remove_image(image_id)
            print(f"Deleted: {image_id}")
        except StoreError as e:
            print(f"pybuild: error: {e}", file=sys.stderr)
            errors += 1
    gc.prune(store, pinned=users)
    return 1 if errors else 0


# docker's container.Config as `docker image inspect` shows it: its keys in docker's order, the
# omitempty ones only when set (an OCI image config's keys are its subset)
_CONFIG_KEYS = (("Hostname", ""), ("Domainname", ""), ("User", ""), ("AttachStdin", False),
                ("AttachStdout", False), ("AttachStderr", False), ("ExposedPorts", ...),
                ("Tty", False), ("OpenStdin", False), ("StdinOnce", False), ("Env", None),
                ("Cmd", None), ("Healthcheck", ...), ("ArgsEscaped", ...), ("Image", ""),
                ("Volumes", None), ("WorkingDir", ""), ("Entrypoint", None), ("OnBuild", None),
                ("Labels", None), ("StopSignal", ...), ("Shell", ...))


def docker_config(cfg: dict | None) -> dict:
    """An image config's `config` as docker's container.Config (every key docker shows)."""
    cfg = cfg or {}
    out = {}
    for key, empty in _CONFIG_KEYS:
        v = cfg.get(key)
        if empty is not ...:
            out[key] = v if key in cfg else empty
        elif v not in (None, "", [], {}, False):        # omitempty
            out[key] = v
    return out


def inspect_doc(store, img) -> dict:
    """What `docker inspect IMAGE` shows, from our records, in docker 20.10's shape: the keys
    a store of layer dirs has no value for (Container, DockerVersion) are empty as docker's are
    for an image it did not build; GraphDriver names the layer dirs (overlay format) of the
    layers that are unpacked, top first as overlay's lowerdir takes them."""
    import os

    from cache import layout, refs
    cfg = img.config
    size = _image_size(store, img)
    dirs = layout.layer_dirs(str(store.root), img.diff_ids)
    dirs = [d for d in dirs if os.path.isdir(d)]
    doc = {
        "Id": img.id,
        "RepoTags": [refs.familiar(t) for t in store.tags_of(img.id)],
        "RepoDigests": [f"{refs.familiar_repo(d.partition('@')[0])}@{d.partition('@')[2]}"
                        for d in (store.images().get(img.id) or {}).get("repo_digests") or ()],
        "Parent": "",
        "Comment": (cfg.get("history") or [{}])[-1].get("comment", "") if cfg.get("history") else "",
        "Created": cfg.get("created", ""),
        "Container": "",
        "ContainerConfig": docker_config(None),
        "DockerVersion": "",
        "Author": cfg.get("author", ""),
        "Config": docker_config(cfg.get("config")),
        "Architecture": cfg.get("architecture", ""),
        **({"Variant": cfg["variant"]} if cfg.get("variant") else {}),
        "Os": cfg.get("os", ""),
        "Size": size,
        "VirtualSize": size,
        "GraphDriver": {"Data": {"LowerDir": ":".join(dirs[1:]), "UpperDir": dirs[0]} if dirs
                        else None, "Name": "overlay"},
        "RootFS": {"Type": "layers", "Layers": list(img.diff_ids)},
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
    }
    if doc["GraphDriver"]["Data"] and not doc["GraphDriver"]["Data"]["LowerDir"]:
        del doc["GraphDriver"]["Data"]["LowerDir"]
    return doc


def render_format(fmt: str, doc: dict) -> str:
    """`inspect -f`: Go's text/template (builder.gotemplate) on the inspect document; a bad
    template is one line (StoreError), as docker's "template parsing error"."""
    from builder import gotemplate
    from cache.errors import StoreError

    try:
        return gotemplate.render(fmt, doc, missing_key_error=True)
    except gotemplate.TemplateError as e:
        raise StoreError(f"template parsing error: {e}") from None


def cmd_inspect(args) -> int:
    """docker inspect: each name as a container first, then as an image (docker's order); what
    is found is shown, each name not found is one line, and the exit is 1 if any was not."""
    import json

    from cache.errors import StoreError
    from runtime.containers import inspect
    from runtime.containers.state import Containers
    from runtime.errors import ContainerError

    store = _store()
    kind = getattr(args, "type", None)
    docs, missing = [], []
    for ref in args.images:
        if kind in (None, "container"):
            try:
                c = Containers(store.root).get(ref)
                if args.size:
                    docs.append(sized_doc(c, inspect.doc(c), store))
                else:
                    docs.append(inspect.doc(c))
                continue
            except ContainerError as e:
                if kind == "container" or "multiple IDs" in str(e):
                    missing.append(str(e))
                    continue
        try:
            docs.append(inspect_doc(store, store.image(ref)))
        except StoreError as e:
            missing.append(str(e) if kind == "image" else f"No such object: {ref}")
    if args.format:
        for d in docs:
            print(render_format(args.format, d))
    else:
        print(json.dumps(docs, indent=4))
    for line in missing:
        print(f"pybuild: error: {line}", file=sys.stderr)
    return 1 if missing else 0


def cmd_history(args) -> int:
    store = _store()
    img = store.image(args.image)
    hist = img.config.get("history") or []
    sizes = [(store.layer_info(d) or {}).get("size", 0) for d in img.diff_ids]
    rows = []
    li = 0
    for h in hist:
        size = 0
        if not h.get("empty_layer"):
            size = sizes[li] if li < len(sizes) else 0
            li += 1
        rows.append((h, size))
    rows.reverse()
    if args.quiet:
        for i, _ in enumerate(rows):
            print((img.id if args.no_trunc else img.id[7:19]) if i == 0 else "<missing>")
        return 0
    from builder.formatter import go_time, render

    out = []
    for i, (h, size) in enumerate(rows):
        by = h.get("created_by", "")
        if not args.no_trunc and len(by) > 45:
            by = by[:44] + "…"
        created = h.get("created", "")
        when = _created_seconds(created)
        out.append({"ID": (img.id if args.no_trunc else img.id[7:19]) if i == 0 else "<missing>",
                    "CreatedSince": human_ago(created) if args.human else created,
                    "CreatedAt": (go_time(when) if args.human else created) if when is not None
                    else "", "CreatedBy": by,
                    "Size": human_size(size) if args.human else str(size),
                    "Comment": h.get("comment", "")})
    fmt = args.format or "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"
    sys.stdout.write(render(fmt, out, HISTORY_HEADERS, "historyContext"))
    return 0


HISTORY_HEADERS = {"ID": "IMAGE", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT",
                   "CreatedBy": "CREATED BY", "Size": "SIZE", "Comment": "COMMENT"}


def cmd_import(args) -> int:
    import shutil

    from cache import image as im
    from cache.errors import StoreError
    from cache.layers import extract
    cfg = im.new_config(created=im.rfc3339())
    if args.change:                 # docker import --change, checked before anything is read
        from builder.commit import apply_changes

        apply_changes(cfg, args.change)
    store = _store()
    scratch = store.new_scratch()
    try:
        root = scratch / "rootfs"
        root.mkdir()
        src = sys.stdin.buffer if args.file == "-" else _open_named(args.file)
        try:
            with src:
                extract(src, root)
        except StoreError as e:
            raise StoreError(f"{'stdin' if args.file == '-' else args.file}: {e}") from None
        diff_id = store.commit_layer(root, epoch=None)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    cfg = im.add_step(cfg, "", diff_id=diff_id, created=cfg["created"],
                      comment=args.message or "Imported from " + args.file)
    image_id = store.put_image(cfg)
    if args.name:
        store.tag(args.name, image_id)
    print(image_id)
    return 0


def _open_named(path: str):
    """Open a file the user named for reading; failing to is the user's error, said so."""
    from cache.errors import StoreError
    try:
        return open(path, "rb")
    except OSError as e:
        raise StoreError(f"open {path}: {e.strerror}") from None


def save_to(store, names: list[str], dest: str, **kw) -> None:
    """`cache.archive.save` to a path the user named (save -o, build --output): an OSError
    about that file or the temporary file it is written to beside it is the user's."""
    from cache.archive import save
    from cache.errors import StoreError
    try:
        save(store, names, dest, **kw)
    except OSError as e:
        if not _about(e, dest):
            raise
        raise StoreError(f"failed to write {dest}: {e.strerror}") from None


def _about(e: OSError, path: str) -> bool:
    """Is `e` about the user's `path`, a file inside it or a file beside it (its tmp)?"""
    import os

    if e.filename is None:
        return False
    p, f = os.path.abspath(path), os.path.abspath(e.filename)
    return f == p or f.startswith(p + "/") or os.path.dirname(f) == os.path.dirname(p)


def cmd_save(args) -> int:
    from cache.archive import save
    from cache.errors import StoreError
    store = _store()
    if args.output:
        save_to(store, args.images, args.output, fmt=args.format, compression=args.compression)
        return 0
    if sys.stdout.isatty():
        raise StoreError("refusing to write an archive to a terminal: use -o FILE or redirect stdout")
    sys.stdout.flush()
    save(store, args.images, sys.stdout.buffer, fmt=args.format, compression=args.compression)
    sys.stdout.buffer.flush()
    return 0


def cmd_load(args) -> int:
    import os

    from cache import refs
    from cache.archive import load
    store = _store()
    tmp = None
    try:
        path = args.input
        if not path:
            if sys.stdin.isatty():
                from cache.errors import StoreError
                raise StoreError("no archive given: use -i FILE or pipe one to stdin")
            f, tmp = store.tmp_file("stdin")  # prune spares it while this process runs
            with f:
                while data := sys.stdin.buffer.read(1 << 20):
                    f.write(data)
            path = tmp
        try:
            loaded = load(store, path, label="stdin" if tmp else None)
        except OSError as e:
            if not args.input or not _about(e, args.input):
                raise
            from cache.errors import StoreError
            raise StoreError(f"failed to read {args.input}: {e.strerror}") from None
    finally:
        if tmp:
            os.unlink(tmp)
    if not args.quiet:
        for image_id, names in loaded:
            if names:
                for n in names:
                    print(f"Loaded image: {refs.familiar(n)}")
            else:
                print(f"Loaded image ID: {image_id}")
    return 0


def cmd_prune(args) -> int:
    import os

    from cache.gc import prune, stale_scratch
    from runtime.mountinfo import mounts, unmount_under

    if args.all and not args.force:
        from builder.prompt import confirm

        confirm("WARNING! This will remove:\n  - all images without at least one container "
                "associated to them\n  - all build cache", "prune has been cancelled")
    store = _store()
    # Mounts a killed build or an older pybuild left in this mount namespace under tmp/ go first
    # (builds now mount in a namespace of their own, runtime.mountns): gc's rmtree of a scratch
    # dir must not walk into a mounted overlay, and cannot remove a mount point. A live build's
    # mounts (its tmp/ entry names a live owner) are kept.
    tmp = os.path.realpath(store.tmp)
    dead = {os.path.basename(p) for p in stale_scratch(store)}
    unmount_under(tmp, keep=lambda p: os.path.relpath(p, tmp).split(os.sep, 1)[0] not in dead)
    # then gc removes the dead scratch dirs (any that still hold a mount are left)
    rep = prune(store, all_=args.all, mount_points=[m.mount_point for m in mounts()],
                pinned=container_images(store))
    parts = [f"{rep.tmp} leftover files", f"{rep.blobs} blobs", f"{rep.layers} layer dirs"]
    if args.all:
        parts += [f"{rep.images} untagged images", f"{rep.cache_entries} build-cache entries"]
    print("Deleted " + ", ".join(parts))
    print(f"Total reclaimed space: {human_size(rep.bytes)}")
    return 0
