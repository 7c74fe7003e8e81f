"""CLI: `pybuild pull`, `push`, `login`, `logout` — docker's words, flags and output.

Progress goes to stderr (a bar per layer on a terminal, docker's plain lines otherwise, JSON lines
with `--progress json`); stdout gets only the result (the full reference after a pull, the
digest line after a push), so `-q` and scripts read one line.
"""
from __future__ import annotations

import sys


def _tls_flag(p) -> None:
    p.add_argument("--tls-verify", default="true", metavar="BOOL", type=parse_bool,
                   help="verify the registry's TLS certificate (default true; podman's flag)")
    content_trust_flag(p, "skip image verification and signing (always: pybuild has no content "
                          "trust)")
    p.add_argument("--progress", choices=("auto", "tty", "plain", "json"), default="auto",
                   help="progress output on stderr (default: bars on a terminal, else plain)")


def content_trust_flag(p, help: str) -> None:
    """docker's pflag bool --disable-content-trust (default true) in argparse: the bare flag
    takes no value (a context after it stays the context), and its `=true`/`=false` forms are
    option strings of their own (argparse matches a whole word before splitting at `=`)."""
    import argparse

    p.add_argument("--disable-content-trust", action="store_true", default=True, help=help)
    p.add_argument("--disable-content-trust=true", dest="disable_content_trust",
                   action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--disable-content-trust=false", dest="disable_content_trust",
                   action="store_false", help=argparse.SUPPRESS)


def parse_bool(v: str) -> bool:
    """`--tls-verify=false` as podman reads it."""
    import argparse
    low = v.lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {v!r}")


def register(sub) -> None:
    p = sub.add_parser("pull", help="download an image from a registry",
                       description="Download an image from a registry (docker.io names resolve "
                                   "through the mirrors of registries.conf).")
    p.add_argument("ref", metavar="NAME[:TAG|@DIGEST]")
    p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                   help="the platform to pull from a multi-platform image (default: this host's)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image reference")
    p.add_argument("-a", "--all-tags", action="store_true",
                   help="download every tagged image in the repository")
    _tls_flag(p)
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("push", help="upload an image to a registry",
                       description="Upload an image to a registry.")
    p.add_argument("ref", metavar="NAME[:TAG]")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the digest")
    p.add_argument("--compression", choices=("gzip", "zstd"), default="gzip",
                   help="layer compression for layers built here (default gzip)")
    p.add_argument("-a", "--all-tags", action="store_true",
                   help="push every tag of the repository in the store")
    _tls_flag(p)
    p.set_defaults(func=cmd_push)

    p = sub.add_parser("login", help="log in to a registry",
                       description="Check credentials against a registry and store them where "
                                   "docker does (~/.docker/config.json or $DOCKER_CONFIG).")
    p.add_argument("server", nargs="?", metavar="SERVER", help="registry (default docker.io)")
    p.add_argument("-u", "--username", metavar="USER")
    p.add_argument("-p", "--password", metavar="PASSWORD",
                   help="password (insecure: it shows in the process list; use --password-stdin)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.add_argument("--tls-verify", default="true", metavar="BOOL", type=parse_bool,
                   help="verify the registry's TLS certificate (default true)")
    p.set_defaults(func=cmd_login)

    p = sub.add_parser("logout", help="log out from a registry",
                       description="Remove the stored credentials of a registry.")
    p.add_argument("server", nargs="?", metavar="SERVER", help="registry (default docker.io)")
    p.set_defaults(func=cmd_logout)


def _store():
    from cache.store import Store
    return Store.open()


def _all_tags(repo_full: str, tls_verify: bool) -> list[str]:
    """The repository's tags from the first endpoint that lists them (mirrors first), sorted."""
    from cache.registry.errors import RegistryError
    from cache.registry.pull import open_repository

    errors: list[Exception] = []
    for repo in open_repository(repo_full, tls_verify=tls_verify):
        try:
            return sorted(set(repo.tags()))
        except RegistryError as e:
            errors.append(e)
    raise errors[-1] if errors else RegistryError(f"{repo_full}: no registry to pull from")


def _no_trust(args) -> None:
    """--disable-content-trust=false: docker's Notary, which pybuild does not have."""
    if not args.disable_content_trust:
        from builder.errors import BuildError
        raise BuildError("content trust (Notary) is not supported: drop "
                         "--disable-content-trust=false")


def cmd_pull(args) -> int:
    from builder.transferview import TransferView
    from cache import refs
    from cache.registry.pull import pull

    _no_trust(args)
    repo, tag, digest = refs.parse(args.ref)
    if args.all_tags:
        return _pull_all(args, repo)
    view = TransferView(args.progress, quiet=args.quiet)
    try:
        if not args.quiet and tag == "latest" and ":" not in args.ref.rsplit("/", 1)[-1] \
                and digest is None:
            view({"status": "Using default tag: latest"})
        got = pull(_store(), args.ref, platform=args.platform, tls_verify=args.tls_verify,
                   progress=view)
        shown = refs.familiar(got.name) if got.name else f"{refs.familiar_repo(repo)}@{digest}"
        view({"status": f"Digest: {got.digest}"})
        view({"status": f"Status: Downloaded newer image for {shown}" if got.downloaded
              else f"Status: Image is up to date for {shown}"})
    finally:
        view.close()
    print(got.name if got.name else f"{repo}@{digest}")
    return 0


def _pull_all(args, repo: str) -> int:
    """pull -a: every tag of the repository, each as docker shows it (its Pulling from and
    Digest lines), one Status line for the repository, its name on stdout."""
    from builder.errors import BuildError
    from builder.transferview import TransferView
    from cache import refs
    from cache.registry.pull import pull

    last = args.ref.rsplit("/", 1)[-1]
    if ":" in last or "@" in last:
        raise BuildError("tag can't be used with --all-tags/-a")
    store = _store()
    view = TransferView(args.progress, quiet=args.quiet)
    downloaded = False
    try:
        for tag in _all_tags(repo, args.tls_verify):
            got = pull(store, f"{repo}:{tag}", platform=args.platform, tls_verify=args.tls_verify,
                       progress=view)
            downloaded = downloaded or got.downloaded
            view({"status": f"Digest: {got.digest}"})
        shown = refs.familiar_repo(repo)
        view({"status": f"Status: Downloaded newer image for {shown}" if downloaded
              else f"Status: Image is up to date for {shown}"})
    finally:
        view.close()
    print(repo)
    return 0


def cmd_push(args) -> int:
    from builder.transferview import TransferView
    from cache.registry.push import push

    _no_trust(args)
    store = _store()
    refs_ = _local_tags(store, args.ref) if args.all_tags else [args.ref]
    view = TransferView(args.progress, quiet=args.quiet)
    try:
        for ref in refs_:
            got = push(store, ref, tls_verify=args.tls_verify, progress=view,
                       compression=args.compression)
            print(got.digest if args.quiet else f"{got.name.rpartition(':')[2]}: digest: "
                  f"{got.digest} size: {got.size}", flush=True)
    finally:
        view.close()
    return 0


def _local_tags(store, ref: str) -> list[str]:
    """push -a: every tag of the repository `ref` names in the store, sorted (docker's
    "tag can't be used with --all-tags/-a", and its line for a repository with none)."""
    from builder.errors import BuildError
    from cache import refs

    last = ref.rsplit("/", 1)[-1]
    if ":" in last or "@" in last:
        raise BuildError("tag can't be used with --all-tags/-a")
    repo = refs.parse(ref)[0]
    tags = sorted(t for t in store.tags() if t.rpartition(":")[0] == repo)
    if not tags:
        raise BuildError(f"An image does not exist locally with the tag: {refs.familiar_repo(repo)}")
    return tags


def cmd_login(args) -> int:
    from builder.errors import BuildError
    from cache.registry import auth

    user, password = args.username, args.password
    if args.password_stdin:
        if password:
            raise BuildError("--password and --password-stdin are mutually exclusive")
        if not user:
            raise BuildError("must provide --username with --password-stdin")
        password = sys.stdin.read().rstrip("\r\n")
    if not user:
        if not sys.stdin.isatty():
            raise BuildError("cannot perform an interactive login from a non TTY device "
                             "(use -u USER --password-stdin)")
        user = input("Username: ").strip()
    if not password:
        if not sys.stdin.isatty():
            raise BuildError("cannot perform an interactive login from a non TTY device "
                             "(use --password-stdin)")
        import getpass
        password = getpass.getpass("Password: ")
    if not user or not password:
        raise BuildError("username and password are both required")
    auth.login(args.server or "docker.io", user, password, tls_verify=args.tls_verify)
    print("Login Succeeded")
    return 0


def cmd_logout(args) -> int:
    from cache.registry import auth

    server = args.server or "docker.io"
    if auth.logout(server):
        print(f"Removing login credentials for {server}")
    else:
        print(f"Not logged in to {server}")
    return 0
