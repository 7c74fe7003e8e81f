"""CLI: `pybuild build` — docker build's flags, BuildKit's semantics.

The whole Dockerfile is parsed and validated before any step runs, so a mistake on line 40
fails in milliseconds. Tags are applied only after every step succeeded: nothing half-built is
tagged.
"""
from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # for annotations only: importing pathlib is ~10% of `pybuild --help`
    from pathlib import Path


def register(sub) -> None:
    from builder.commands.registry import parse_bool

    p = sub.add_parser("build", help="build an image from a Dockerfile",
                       description="Build an image from a Dockerfile and a context directory.")
    p.add_argument("context", metavar="CONTEXT",
                   help="the build context: a directory, - (a tar archive on stdin, or a "
                        "Dockerfile alone), a git URL (REPO.git#REF:DIR) or an http(s) URL of "
                        "a tarball or Dockerfile")
    p.add_argument("-t", "--tag", action="append", default=[], metavar="NAME[:TAG]",
                   help="name the image (repeatable)")
    p.add_argument("-f", "--file", metavar="FILE",
                   help="the Dockerfile (default: CONTEXT/Dockerfile; - reads stdin; inside the "
                        "context when it is not a local directory)")
    p.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="set a build-time ARG (KEY alone takes it from the environment)")
    p.add_argument("--target", metavar="STAGE", help="build only up to this stage")
    p.add_argument("--no-cache", action="store_true", help="do not use the build cache")
    p.add_argument("--no-cache-filter", action="append", default=[], metavar="STAGE",
                   help="do not use the cache for these stages (comma list, repeatable)")
    from builder.replay import PROGRESS_MODES, default_progress

    p.add_argument("--progress", choices=PROGRESS_MODES, default=default_progress(),
                   help="progress output: auto (a live view on a terminal, else plain), tty, "
                        "plain, json or quiet (none); default $BUILDKIT_PROGRESS, else auto")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="set a label on the final image")
    p.add_argument("--network", default="default", metavar="default|bridge|host|none",
                   help="network of RUN steps: default (a network namespace of its own on the "
                        "bridge, NAT'd out, as BuildKit in dockerd; bridge is the same), host "
                        "(the host's) or none (only lo)")
    p.add_argument("--allow", action="append", default=[], metavar="ENTITLEMENT",
                   help="grant RUN steps an extra privilege: network.host (RUN --network=host); "
                        "security.insecure is not granted")
    p.add_argument("--secret", action="append", default=[], metavar="id=ID,src=FILE",
                   help="a secret for RUN --mount=type=secret")
    p.add_argument("--add-host", action="append", default=[], metavar="HOST:IP",
                   help="add a line to RUN steps' /etc/hosts (IP may be host-gateway)")
    p.add_argument("--shm-size", metavar="bytes", help="size of RUN steps' /dev/shm (default 64m)")
    p.add_argument("--ulimit", action="append", default=[], metavar="NAME=SOFT[:HARD]",
                   help="a resource limit for RUN steps (nofile, nproc, core, ...)")
    p.add_argument("--ssh", action="append", default=[], metavar="default|ID[=SOCKET|KEY,...]",
                   help="an SSH agent for RUN --mount=type=ssh: default ($SSH_AUTH_SOCK), an "
                        "agent socket, or private key files (served by an ssh-agent of its own)")
    p.add_argument("--output", "-o", metavar="DIR | - | type=TYPE[,dest=PATH]",
                   help="also write the result: DIR or type=local,dest=DIR (the filesystem), - "
                        "or type=tar,dest=FILE|- (it as a tar), type=oci|docker,dest=FILE (the "
                        "image as an archive), type=registry[,name=REF] (push it)")
    p.add_argument("--pull", action="store_true",
                   help="always check the registry for a newer version of base images")
    p.add_argument("--push", action="store_true",
                   help="push the image to its registry (every -t name) after the build")
    p.add_argument("--tls-verify", default=True, metavar="BOOL", type=parse_bool,
                   help="verify registries' TLS certificates (default true)")
    p.add_argument("--iidfile", metavar="FILE", help="write the image ID to FILE")
    from builder.commands.registry import content_trust_flag

    content_trust_flag(p, "skip image verification (always: pybuild has no content trust)")
    p.add_argument("--compression", choices=("gzip", "zstd"), default="gzip",
                   help="layer compression for --output (default gzip)")
    p.add_argument("--platform", metavar="PLATFORM",
                   help="target platform (only the host's platform is supported)")
    p.add_argument("--cache-to", action="append", default=[], metavar="SPEC",
                   help="export the build cache: type=local,dest=DIR or type=registry,ref=REF "
                        "[,mode=min|max] (repeatable)")
    p.add_argument("--cache-from", action="append", default=[], metavar="SPEC",
                   help="use a build cache exported by --cache-to: type=local,src=DIR or "
                        "type=registry,ref=REF or REF (repeatable)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image ID")
    # --- reprodiff: check-reproducible ---
    p.add_argument("--check-reproducible", action="store_true",
                   help="build again from scratch in a throw-away store (other temp path, "
                        "hostname, umask, environment order) and fail (exit 1) naming the "
                        "layer, file and attribute if the digests differ")
    # --- end reprodiff ---
    # --- reprotime: the epoch and why steps rebuilt ---
    p.add_argument("--timestamp", metavar="now|EPOCH",
                   help="the build's epoch: image and history 'created', and file times newer "
                        "than it in new layers are clamped to it; RUN sees it as "
                        "SOURCE_DATE_EPOCH. Default: SOURCE_DATE_EPOCH (--build-arg, then the "
                        "environment), else the commit time of HEAD when CONTEXT is in a git "
                        "work tree, else 0 (1970). 'now': wall-clock dates, real file times")
    p.add_argument("--explain-cache", action="store_true",
                   help="say in full, for every step that missed the cache, which input changed "
                        "since the last build of this Dockerfile and tag")
    # --- end reprotime ---
    p.set_defaults(func=run_build)


def _key_values(items: list[str], flag: str, *, from_env: bool = False) -> dict[str, str]:
    from builder.errors import BuildError

    out: dict[str, str] = {}
    for item in items:
        k, eq, v = item.partition("=")
        if not k:
            raise BuildError(f"{flag} {item!r}: expected KEY=VALUE")
        if not eq:
            if not from_env:
                raise BuildError(f"{flag} {item!r}: expected KEY=VALUE")
            if k not in os.environ:
                continue
            v = os.environ[k]
        out[k] = v
    return out


def _network(mode: str) -> str:
    """--network as BuildKit's RUN modes: default (bridge, docker's classic builder's word for
    it, is the same), host, none; anything else is refused before a step runs, as dockerd does
    ("not supported by buildkit"), and a bridge a killed build left behind is swept now."""
    from builder.errors import BuildError

    mode = "default" if mode in ("", "bridge") else mode
    if mode not in ("default", "host", "none"):
        raise BuildError(f'network mode "{mode}" not supported (use default, bridge, host or none)')
    from builder.commands.run import sweep_stale_networks

    sweep_stale_networks()
    return mode


def _secrets(items: list[str], store, cleanup) -> dict[str, Path]:
    """--secret id=ID,src=FILE|env=VAR -> {id: file}. A secret from the environment is written
    to a 0600 file in an owner-named dir under the store's tmp/, removed when the build ends
    (`cleanup`, an ExitStack) and by `pybuild prune` after a kill, never left in /tmp."""
    from pathlib import Path

    from builder.errors import BuildError
    from cache import owner

    out: dict[str, Path] = {}
    env_dir = None
    for item in items:
        fields = dict(f.partition("=")[::2] for f in item.split(","))
        sid = fields.get("id")
        src = fields.get("src") or fields.get("source")
        env = fields.get("env")
        if not sid:
            raise BuildError(f"--secret {item!r}: expected id=ID,src=FILE")
        if env and not src:
            if env not in os.environ:
                raise BuildError(f"--secret {item!r}: environment variable {env} is not set")
            if env_dir is None:
                import shutil

                env_dir = owner.temp_dir(store.tmp, "secret")
                cleanup.callback(shutil.rmtree, env_dir, ignore_errors=True)
            src = os.path.join(env_dir, str(len(out)))
            fd = os.open(src, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, os.environ[env].encode())
            finally:
                os.close(fd)
        if not src or not Path(src).is_file():
            raise BuildError(f"--secret {item!r}: file {src!r} not found")
        out[sid] = Path(src).resolve()
    return out


def _extra_hosts(values: list[str]) -> list[str]:
    """--add-host HOST:IP as /etc/hosts lines (runtime.etcfiles' parser, run's too)."""
    from builder.errors import BuildError
    from runtime import etcfiles
    from runtime.errors import SandboxError

    try:
        return [etcfiles.parse_add_host(v) for v in values]
    except SandboxError as e:
        raise BuildError(str(e)) from None


def _run_limits(args) -> dict:
    """--shm-size and --ulimit for every RUN: run's parser (builder.commands.run), as
    BuildOptions fields."""
    from builder.commands.run import process_limits
    from builder.errors import BuildError
    from runtime.errors import SandboxError

    try:
        return process_limits(args.shm_size, args.ulimit)
    except SandboxError as e:
        raise BuildError(str(e)) from None


def _required_ssh(the_plan, given: set[str], filename: str) -> None:
    """A `RUN --mount=type=ssh,required` whose id no --ssh gives fails before step 1 (not when
    the step is reached), as BuildKit's solve does. Mounts with variables are left to the step."""
    from builder.errors import BuildError
    from grammar import ast
    from grammar.mountspec import MountError, parse_mount

    for i in the_plan.order:      # the stages this build builds (not those --target skips)
        for ins in the_plan.stages[i].instructions:
            if not isinstance(ins, ast.Run):
                continue
            for text in ins.flag_values("mount"):
                if not text or "$" in text:
                    continue
                try:
                    spec = parse_mount(text)
                except MountError:
                    continue            # the step's own check says what is wrong
                sid = spec.id or "default"
                if spec.type == "ssh" and spec.required and sid not in given:
                    raise BuildError(f'{filename}:{ins.line}: no SSH key "{sid}" forwarded from '
                                     f"the client: pass --ssh {sid}[=SOCKET|KEY]")


def _entitlements(the_plan, args, filename: str) -> bool:
    """--allow as buildx's: network.host is granted (also by `--network host`, as dockerd does);
    security.insecure never is. A `RUN --network=host` without the grant fails before step 1,
    as BuildKit's solve does. Returns whether the build may use the host's network."""
    from builder.errors import BuildError
    from builder.steps.run import host_network_refused
    from grammar import ast

    allow = [e.strip() for a in args.allow for e in a.split(",") if e.strip()]  # buildx: a,b
    for e in allow:
        if e == "security.insecure":
            raise BuildError("--allow security.insecure: pybuild grants no security.insecure "
                             "entitlement")
        if e != "network.host":
            raise BuildError(f'--allow: invalid entitlement "{e}" (use network.host)')
    allowed = bool(allow) or args.network == "host"
    for i in the_plan.order:
        for ins in the_plan.stages[i].instructions:
            refused = isinstance(ins, ast.Run) and host_network_refused(ins, allowed)
            if refused:
                raise BuildError(f"{filename}:{ins.line}: {refused}")
    return allowed


def _push(store, args) -> None:
    """--push / --output type=registry: every -t name, as `pybuild push` would."""
    from builder.transferview import TransferView
    from cache.registry.push import push

    for name in args.tag:
        view = TransferView("plain" if args.progress in ("auto", "tty") else args.progress,
                            quiet=args.quiet)
        try:
            got = push(store, name, tls_verify=args.tls_verify, progress=view,
                       compression=args.compression)
        finally:
            view.close()
        if not args.quiet:
            print(f"pushing {got.name} done: {got.digest}", file=sys.stderr)


def read_dockerfile(args) -> tuple[str, str, Path | None]:
    """(text, display name, path) of the Dockerfile the user asked for."""
    from pathlib import Path

    from builder.errors import BuildError

    if args.file == "-":
        return sys.stdin.read(), "Dockerfile", None
    if getattr(args, "dockerfile_text", None) is not None:  # a Dockerfile alone on stdin or at a URL
        return args.dockerfile_text, "Dockerfile", None
    path = Path(args.file) if args.file else Path(args.context) / "Dockerfile"
    if not args.file and not os.path.lexists(path) and os.path.lexists(path.with_name("dockerfile")):
        path = path.with_name("dockerfile")     # docker's fallback to the lowercase name
    try:
        text = path.read_bytes().decode("utf-8", "replace")
    except FileNotFoundError:
        raise BuildError(f"failed to read Dockerfile: {path}: no such file (use -f to name another)") \
            from None
    except IsADirectoryError:
        raise BuildError(f"failed to read Dockerfile: {path} is a directory") from None
    except OSError as e:  # EACCES, ENOTDIR, ELOOP...: about the path the user gave
        raise BuildError(f"failed to read Dockerfile: {path}: {e.strerror}") from None
    return text, path.name, path


def run_build(args) -> int:
    from runtime.privileges import require_root

    require_root()  # before anything is read or written: one line saying what is needed
    from runtime.mountns import enter_private

    enter_private()  # before any thread: the overlays COPY mounts die with this process
    # --- reprotime: the caller's umask never reaches a layer ---
    os.umask(0o022)  # what runc gives every BuildKit RUN; COPY's parent dirs are made under it
    # --- end reprotime ---

    build_args = _key_values(args.build_arg, "--build-arg", from_env=True)
    # --- lead: a context that is not a local directory (builder.contextsource) ---
    from builder import contextsource

    store = None
    if not contextsource.is_local(args.context):
        from cache.store import Store

        store = Store.open()
    prepared = contextsource.prepare(args.context, args.file, store.tmp if store else "",
                                     build_args)
    try:
        args.context, args.file = prepared.context, prepared.dockerfile
        args.dockerfile_text = prepared.dockerfile_text
        args.context_made = prepared.made is not None   # not the user's: no git epoch from it
        return _build(args, build_args, store)
    finally:
        prepared.remove()
    # --- end lead ---


def _build(args, build_args: dict, store) -> int:
    from pathlib import Path

    from builder.errors import BuildError
    from builder.parsecache import parse_and_validate
    from builder.plan import plan

    context = Path(args.context)
    if not args.disable_content_trust:
        raise BuildError("content trust (Notary) is not supported: drop "
                         "--disable-content-trust=false")
    if args.platform:
        from builder.commands.run import only_host_platform

        try:
            only_host_platform(args.platform)
        except ValueError as e:
            raise BuildError(str(e)) from None
    labels = _key_values(args.label, "--label")
    text, name, path = read_dockerfile(args)
    df = parse_and_validate(text, name, build_args)
    the_plan = plan(df, build_args, args.target)
    _required_ssh(the_plan, {s.partition("=")[0] for s in args.ssh}, name)
    allow_host_network = _entitlements(the_plan, args, name)
    from builder import outputs

    output = outputs.parse(args.output) if args.output else None
    push = args.push or (output is not None and output["type"] == "registry")
    if output is not None and output["type"] == "registry":
        args.tag = [*args.tag, *([output["name"]] if output.get("name") else [])]
        output = None
    from cache import refs
    from cache.errors import StoreError

    for t in args.tag:  # before the build: a bad name fails in milliseconds, not at the end
        try:
            refs.normalize(t)
        except StoreError as e:
            raise BuildError(f"invalid tag {t!r}: {e}") from None
    if push and not args.tag:
        raise BuildError("--push needs a name to push to: add -t REGISTRY/NAME:TAG")
    import contextlib

    from cache.store import Store

    store = store or Store.open()
    with contextlib.ExitStack() as cleanup:
        secrets = _secrets(args.secret, store, cleanup)
        ssh = {}
        if args.ssh:
            from builder.sshagent import forward

            ssh = forward(args.ssh, store.tmp, cleanup)
        # --- reprotime: the build's epoch ---
        from builder.sourcedate import resolve as resolve_epoch

        try:
            epoch = resolve_epoch(str(context), build_args, os.environ, args.timestamp,
                                  git=not getattr(args, "context_made", False)).value
        except ValueError as e:
            raise BuildError(str(e)) from None
        # --- end reprotime ---

        from builder.baseimage import PullOptions
        from builder.cacheopts import build_options
        from builder.progress import make_progress
        from builder.solve import BuildOptions, build

        opts = BuildOptions(
            context=context.resolve(), dockerfile=df, dockerfile_path=path.resolve() if path else None,
            tags=args.tag, build_args=build_args, target=args.target, no_cache=args.no_cache,
            no_cache_filter=[s.strip().lower() for f in args.no_cache_filter for s in f.split(",")
                             if s.strip()],
            labels=labels, network=_network(args.network), allow_host_network=allow_host_network,
            secrets=secrets, ssh=ssh, epoch=epoch,
            extra_hosts=_extra_hosts(args.add_host), **_run_limits(args),
            explain_cache=args.explain_cache,  # --- reprotime ---
            dockerfile_bytes=len(text.encode("utf-8", "surrogateescape")),
            pull=PullOptions("always" if args.pull else "missing", args.tls_verify),
            **build_options(args.cache_to, args.cache_from))
        pending = getattr(args, "replay", None)  # builder.replay.Pending: record this build
        recorder = None
        if pending is not None and not args.no_cache:
            from builder.replay import Recorder

            recorder = Recorder()
            recorder.prestat = pending.stats
        with open(os.devnull, "w") as devnull:
            hush = args.quiet or args.progress == "quiet"
            progress = make_progress("plain" if hush else args.progress,
                                     devnull if hush else None)
            try:
                image_id = build(store, the_plan, opts, progress, recorder)
            finally:
                progress.close()
        # --- reprodiff: check-reproducible (before anything is written or pushed) ---
        if args.check_reproducible:
            from builder.reprocheck import check

            made = output is not None or push  # a manifest is made: its digest is compared too
            rc = check(store, the_plan, opts, image_id, progress_mode=args.progress,
                       quiet=args.quiet, compression=args.compression if made else None)
            if rc:
                return rc
        # --- end reprodiff ---
        if output:
            outputs.write(store, image_id, args.tag[0] if args.tag else image_id, output,
                          args.compression)
        if push:
            _push(store, args)
        if recorder is not None:
            pending.save(image_id, recorder, store, progress)
        from builder.replay import announce

        to_stdout = output is not None and output.get("dest") == "-"   # stdout has the tar
        announce(image_id, args.tag, quiet=args.quiet and not to_stdout, iidfile=args.iidfile,
                 silent=args.progress != "json")     # the others said it in `exporting to image`
    return 0
