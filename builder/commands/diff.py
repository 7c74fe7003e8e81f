"""CLI: `pybuild diff A B` — what differs between two images (cache.diff), diffoci's exit
convention: 0 the same, 1 different, 2 an error (one line)."""
from __future__ import annotations

import sys

HELP = """\
Each image is a store name or ID, a docker-archive or OCI-archive tar (`pybuild save`,
`docker save`), an OCI layout dir, or a registry reference (read, not pulled). Prefixes
force a kind: docker-archive:PATH[:NAME], oci-archive:PATH[:NAME], oci:DIR[:NAME], store:REF,
docker://REF (a registry, as in skopeo). Exit status: 0 the same, 1 different, 2 error."""


def register(sub) -> None:
    from builder.commands.registry import parse_bool

    p = sub.add_parser("diff", help="compare two images, file by file",
                       description="Compare two images: manifests, config, history, then each "
                                   "layer's files and their attributes.", epilog=HELP)
    p.add_argument("a", metavar="IMAGE_A")
    p.add_argument("b", metavar="IMAGE_B")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--semantic", action="store_true",
                   help="ignore timestamps (image, history, files), history and tar entry order")
    p.add_argument("--tls-verify", default=True, metavar="BOOL", type=parse_bool,
                   help="verify registries' TLS certificates (default true)")
    p.set_defaults(func=cmd_diff, failure_exit=2)


def cmd_diff(args) -> int:
    import contextlib
    import json

    from cache import diff

    opened = []

    def store():
        if not opened:
            from cache.store import Store
            opened.append(Store.open())
        return opened[0]

    with contextlib.ExitStack() as stack:
        a = diff.open_image(args.a, stack, store=store, tls_verify=args.tls_verify)
        b = diff.open_image(args.b, stack, store=store, tls_verify=args.tls_verify)
        rep = diff.compare(a, b, diff.Options(semantic=args.semantic))
    if args.json:
        json.dump(diff.to_json(rep), sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif rep.same:
        print(f"same image: {a.image_id}")
    else:
        print(f"--- {a.label} ({a.kind}, {a.image_id})")
        print(f"+++ {b.label} ({b.kind}, {b.image_id})")
        for line in diff.what_differs(rep):
            print(line)
    return 0 if rep.same else 1
