"""The `pybuild` command line: docker's words and flags, one module per command group.

Start-up is a hot path: argparse is imported only when a command is parsed (`--version` and a
replayed build never do), and never for `run` and `create`, whose flags builder.flags parses
with docker's pflag rules (argparse, its imports and run's ~50 actions were a sixth of a `run`);
each command module keeps its heavy imports (lark, rich, zstandard,
pyroute2) inside the functions that use them. A failure is the user's (one line, exit 1) or a
bug (`internal error`, exit 2) as builder.errors decides; `run` exits 125 for both.
"""
from __future__ import annotations

import os
import sys

from cache.version import VERSION

# command-group module (under builder.commands) -> each registers its subcommands
COMMAND_MODULES = ("build", "images", "registry", "run", "containers", "containerfs", "volumes",
                   "network", "diff", "groups")
# the module that registers each command, so a command line loads only its own (argparse
# building ~30 subparsers was a tenth of a `run`); tests/builder/test_cli.py checks it against
# what the modules register. A module may need another's parsers first (`container run` lists
# run's).
COMMAND_OF = {
    "build": "build",
    **dict.fromkeys(("images", "tag", "rmi", "inspect", "history", "import", "save", "load",
                     "prune"), "images"),
    **dict.fromkeys(("pull", "push", "login", "logout"), "registry"),
    "run": "run",
    **dict.fromkeys(("create", "start", "restart", "exec", "container", "ps", "logs", "stop",
                     "kill", "wait", "rm", "top", "port", "attach", "pause", "unpause",
                     "rename", "export", "update"), "containers"),
    **dict.fromkeys(("commit", "cp", "stats"), "containerfs"),
    "volume": "volumes",
    "network": "network",
    "diff": "diff",
    **dict.fromkeys(("image", "builder", "system", "info", "version"), "groups"),
    # `help CMD` is rewritten to `CMD --help` before parsing
}
# a module whose parsers copy another's (`container run`, `image ls`) registers after it
NEEDS = {"containers": ("run",), "groups": ("build", "images", "registry", "containerfs")}
# a group word whose subcommands come from more modules (`container commit` is containerfs')
WORD_NEEDS = {"container": ("containerfs", "groups")}
# the commands builder.flags parses (their modules' flag_command(word)); argparse only lists them
FLAG_COMMANDS = ("run", "create", "attach")


def _columns() -> int:
    """shutil.get_terminal_size().columns without importing shutil (and bz2, lzma with it):
    argparse asks for it each time it makes a help formatter, on every add_argument."""
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


def _command_word(argv: list[str]) -> str | None:
    """The command a command line names: its first word that is not a global option."""
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a == "--root":
            skip = True
        elif a in ("-h", "--help"):
            return None             # top-level help lists every command
        elif not a.startswith("-"):
            return a
    return None


def modules_for(argv: list[str] | None) -> tuple[str, ...]:
    """The command modules to register for argv: the command's own (and what it needs); every
    one for top-level help, no command or an unknown one (whose error lists them all)."""
    word = _command_word(argv) if argv is not None else None
    mod = COMMAND_OF.get(word)
    if mod is None:
        return COMMAND_MODULES
    want = {mod, *WORD_NEEDS.get(word, ())}
    want |= {n for m in list(want) for n in NEEDS.get(m, ())}
    return tuple(m for m in COMMAND_MODULES if m in want)


def _flag_command(argv: list[str]) -> tuple[int, str, bool, str | None] | None:
    """(where the flags start, the command, --debug, --root) when argv's command is one of
    FLAG_COMMANDS (also as `container run|create`) after only --debug and --root DIR; None
    otherwise: argparse parses it (and any other global option, or errs)."""
    debug, root, i = False, None, 0
    while i < len(argv):
        a = argv[i]
        if a == "--debug":
            debug, i = True, i + 1
        elif a == "--root" and i + 1 < len(argv):
            root, i = argv[i + 1], i + 2
        elif a.startswith("--root="):
            root, i = a[len("--root="):], i + 1
        else:
            break
    word = argv[i] if i < len(argv) else None
    if word == "container" and i + 1 < len(argv):
        i, word = i + 1, argv[i + 1]
    if word not in FLAG_COMMANDS:
        return None
    return i + 1, word, debug, root


def _parse_flags(argv: list[str], start: int, word: str, debug: bool, root: str | None):
    """The args of a FLAG_COMMANDS line, or its exit code: 0 after --help, 125 (docker's) with
    the flag error and `See '... --help'.`."""
    from builder import flags

    # __import__, not importlib.import_module: importlib brings warnings (~0.5 ms of a run)
    module = next(__import__(f"builder.commands.{m}", None, None, ["flag_command"])
                  for m in COMMAND_MODULES if m == COMMAND_OF[word])
    cmd = module.flag_command(word)
    try:
        args = flags.parse(cmd, argv[start:])
    except flags.FlagError as e:
        print(f"pybuild: error: {e}\nSee '{cmd.path} --help'.", file=sys.stderr)
        return 125
    if args.help:
        sys.stdout.write(flags.usage(cmd, _columns()))
        return 0
    args.debug, args.root = debug, root
    return args


class UsageError(Exception):
    """A command line argparse refused: (the parser's prog, argparse's message)."""

    def __init__(self, prog: str, message: str, exit_code: int | None = None):
        super().__init__(message)
        self.prog, self.message, self.exit_code = prog, message, exit_code


def _usage_failure(e: UsageError, argv: list[str]) -> int:
    """argparse's refusal in docker's words: an unknown command (with the nearest one), exit 1;
    a wrong number of arguments, exit 1; an unknown or bad flag, exit 125 (the docker CLI's
    code for its own flag errors); each followed by `See 'pybuild CMD --help'.`"""
    msg, prog = e.message, e.prog
    word = _command_word(argv)
    if msg.startswith("argument COMMAND: invalid choice:"):
        import difflib

        near = difflib.get_close_matches(word or "", _all_commands(), n=1, cutoff=0.6)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        print(f"pybuild: '{word}' is not a pybuild command{hint}\nSee 'pybuild --help'.",
              file=sys.stderr)
        return 1
    if prog == "pybuild" and word:
        prog = f"pybuild {word}"
    see = f"See '{prog} --help'."
    if e.exit_code is not None:
        print(f"pybuild: error: {prog}: {msg}\n{see}", file=sys.stderr)
        return e.exit_code
    if msg.startswith("unrecognized arguments: "):
        extra = msg[len("unrecognized arguments: "):].split()
        flag = next((a for a in extra if a.startswith("-")), None)
        text = f"unknown flag: {flag.partition('=')[0]}" if flag else (
            f'"{prog}" accepts no argument {extra[0]!r} here')
        print(f"pybuild: error: {text}\n{see}", file=sys.stderr)
        return 125 if flag else 1
    if msg.startswith("the following arguments are required: "):
        need = msg[len("the following arguments are required: "):]
        print(f'pybuild: error: "{prog}" requires {need}\n{see}', file=sys.stderr)
        return 1
    print(f"pybuild: error: {prog}: {msg}\n{see}", file=sys.stderr)
    return 125


def _all_commands() -> list[str]:
    return [*COMMAND_OF, "help", "completion"]


def make_parser(argv: list[str] | None = None):
    """The parser; given argv, with only the command modules that argv needs. A refused
    command line raises UsageError (main prints it as docker would)."""
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message):
            # a command whose exit codes mean something (diff: 2 for an error) says so
            raise UsageError(self.prog, message, self.get_default("failure_exit"))

    def formatter(prog: str):
        return argparse.HelpFormatter(prog, width=_columns() - 2)

    def subparser(**kw):
        kw.setdefault("formatter_class", formatter)
        return Parser(**kw)

    parser = Parser(
        prog="pybuild", formatter_class=formatter,
        description="Build, ship and run OCI container images without a daemon.")
    parser.add_argument("--version", action="version", version=f"pybuild {VERSION}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    parser.add_argument("--root", metavar="DIR",
                        help="store root (default: $PYBUILD_ROOT, /var/lib/pybuild as root, "
                             "else $XDG_DATA_HOME/pybuild)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=subparser)
    wanted = modules_for(argv)
    for name in COMMAND_MODULES:
        if name in wanted:
            __import__(f"builder.commands.{name}", None, None, ["register"]).register(sub)
    q = sub.add_parser("completion", help="print a shell completion script (bash, zsh)",
                       description="Print a completion script generated from the command "
                                   "definitions: `source <(pybuild completion bash)`.")
    q.add_argument("shell", choices=("bash", "zsh"), metavar="SHELL", help="bash or zsh")
    q.set_defaults(func=_cmd_completion)
    return parser


def flag_commands() -> dict:
    """{word: its builder.flags Command} for FLAG_COMMANDS (what run's and create's --help
    print): for builder.cliref's reference and completions."""
    return {w: __import__(f"builder.commands.{m}", None, None, ["flag_command"]).flag_command(w)
            for w in FLAG_COMMANDS for m in COMMAND_MODULES if m == COMMAND_OF[w]}


def _cmd_completion(args) -> int:
    """`pybuild completion bash|zsh`: builder.cliref's script over every command (here, not
    in a command module: cliref reads the parser this module makes)."""
    from builder import cliref

    sys.stdout.write(cliref.completion(args.shell, cliref.commands(make_parser(None),
                                                                   flag_commands())))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv in (["--version"], ["-v"]):  # fast path: no parser, no command modules
        print(f"pybuild {VERSION}")
        return 0
    if argv[:1] == ["help"]:        # `pybuild help CMD...` is `pybuild CMD... --help`
        argv = [*argv[1:], "--help"]
    debug, pending, args = "--debug" in argv, None, None
    try:
        split = _flag_command(argv)
        if split is not None:
            # run/create: a short set-up, then a wait on the container; the cyclic collector's
            # passes over the objects of ~80 modules as they load cost 2-4 ms of a ~50 ms run
            # (and touch pages the sandbox's forks would then copy); reference counting still
            # frees everything that is not a cycle
            import gc
            gc.disable()
            args = _parse_flags(argv, *split)
            if isinstance(args, int):
                return args
        else:
            if "build" in argv:  # fast path: a fully cached rebuild replays its record
                from builder import replay

                pending = replay.attempt(argv)
                if isinstance(pending, int):
                    return pending
            parser = make_parser(argv)
            args = parser.parse_args(argv)
            if not getattr(args, "func", None):
                parser.print_help()
                return 0
            if args.command == "build":
                args.replay = pending
        debug = args.debug
        if args.root:
            os.environ["PYBUILD_ROOT"] = os.path.abspath(args.root)
        rc = args.func(args)
    except UsageError as e:
        return _usage_failure(e, argv)
    except KeyboardInterrupt:
        print("pybuild: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as e:  # noqa: BLE001 - the last resort: every failure gets its report
        return _failed(e, debug, getattr(args, "failure_exit", None))
    return int(rc or 0)


def _failed(e: Exception, debug: bool, failure_exit: int | None) -> int:
    """One line for a failure that is the user's (exit 1), `internal error` for a bug (exit 2);
    a command whose other exit codes mean something sets failure_exit (`run`: docker's 125).
    --debug adds the traceback."""
    from builder.errors import user_message

    if debug:
        import traceback

        traceback.print_exc()
    msg = user_message(e)
    if msg is not None:
        print(f"pybuild: error: {msg}", file=sys.stderr)
        return failure_exit or 1
    hint = "" if debug else " (run with --debug for details)"
    print(f"pybuild: internal error: {type(e).__name__}: {e}{hint}", file=sys.stderr)
    return failure_exit or 2


def exit_now(rc: int) -> None:
    """Exit with `rc` without Python's finalization (freeing every module and object: 3-5 ms
    of each command on a slow machine). What finalization would still do that matters is
    done first: atexit handlers (cache.leases drops this process's leases) and flushing
    stdout/stderr. With a non-daemon thread alive, or a flush that fails (a closed pipe), the
    normal exit runs instead, so nothing it guarantees is lost."""
    import atexit
    import os

    if "threading" in sys.modules and sys.modules["threading"].active_count() > 1:
        sys.exit(rc)
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001 - the normal exit reports and sets the status
        sys.exit(rc)
    os._exit(rc if isinstance(rc, int) else 1)


if __name__ == "__main__":
    sys.exit(main())
