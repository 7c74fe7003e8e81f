"""The `pybuild` command line: docker's words and flags, one module per command group.

Start-up is a hot path: argparse is imported only when a command is parsed (`--version` and a
replayed build never do); each command module keeps its heavy imports (lark, rich, zstandard,
pyroute2) inside the functions that use them.
"""
from __future__ import annotations

import importlib
import os
import sys

VERSION = "0.1.0"

# command-group module (under builder.commands) -> each registers its subcommands
COMMAND_MODULES = ("build", "images", "run")


def _user_error_types() -> tuple[type[BaseException], ...]:
    """The error classes whose message is shown as one line, imported only on failure."""
    types: list[type[BaseException]] = []
    for mod, name in (("builder.errors", "BuildError"), ("grammar.errors", "DockerfileError"),
                      ("cache.errors", "StoreError"), ("runtime.errors", "SandboxError")):
        try:
            types.append(getattr(importlib.import_module(mod), name))
        except (ImportError, AttributeError):
            pass
    return tuple(types)


def make_parser():
    import argparse

    parser = argparse.ArgumentParser(
        prog="pybuild",
        description="Build, ship and run OCI container images without a daemon.")
    parser.add_argument("--version", action="version", version=f"pybuild {VERSION}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    parser.add_argument("--root", metavar="DIR",
                        help="store root (default: $PYBUILD_ROOT, /var/lib/pybuild as root, "
                             "else $XDG_DATA_HOME/pybuild)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"builder.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv in (["--version"], ["-v"]):  # fast path: no parser, no command modules
        print(f"pybuild {VERSION}")
        return 0
    debug, pending = "--debug" in argv, None
    try:
        if "build" in argv:  # fast path: a fully cached rebuild replays its record
            from builder import replay

            pending = replay.attempt(argv)
            if isinstance(pending, int):
                return pending
        parser = make_parser()
        args = parser.parse_args(argv)
        debug = args.debug
        if args.root:
            os.environ["PYBUILD_ROOT"] = os.path.abspath(args.root)
        if not getattr(args, "func", None):
            parser.print_help()
            return 0
        if args.command == "build":
            args.replay = pending
        rc = args.func(args)
    except KeyboardInterrupt:
        print("pybuild: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as e:
        if debug:
            raise
        if isinstance(e, _user_error_types()):
            print(f"pybuild: error: {e}", file=sys.stderr)
            return 1
        if isinstance(e, OSError) and e.errno is not None:
            where = f": {e.filename}" if e.filename else ""
            print(f"pybuild: error: {e.strerror}{where}", file=sys.stderr)
            return 1
        print(f"pybuild: internal error: {type(e).__name__}: {e} (run with --debug for details)",
              file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
