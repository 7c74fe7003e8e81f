"""Every command and flag, read from the definitions `--help` prints: the argparse parsers
(builder.cli.make_parser with every module) and builder.flags' tables for run and create.

Two outputs come from that one walk, so neither can drift from the CLI: `reference()` (the
markdown of docs/REFERENCE.md, checked by tests/builder/test_cliref.py) and `completion("bash")`
/ `completion("zsh")` (`pybuild completion SHELL`: commands, subcommands and each command's
flags; zsh through its bashcompinit).
"""
from __future__ import annotations


class Opt:
    def __init__(self, names: list[str], value: str, help: str):
        self.names, self.value, self.help = names, value, help


class Cmd:
    """One command: its words after `pybuild`, help line, flags and subcommands."""

    def __init__(self, path: list[str], help: str, opts: list[Opt], subs: list[Cmd],
                 positionals: list[str]):
        self.path, self.help, self.opts, self.subs = path, help, opts, subs
        self.positionals = positionals


def _from_argparse(parser, path: list[str], help: str) -> Cmd:
    import argparse

    opts, subs, positionals = [], [], []
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            helps = {c.dest: c.help for c in a._choices_actions}
            seen = set()
            for name, sub in a.choices.items():
                if id(sub) in seen:
                    continue            # an alias (image ls|list) is the same parser
                seen.add(id(sub))
                subs.append(_from_argparse(sub, [*path, name], helps.get(name) or ""))
        elif a.option_strings:
            if isinstance(a, argparse._HelpAction) or a.help == argparse.SUPPRESS:
                continue            # (what --help hides: --disable-content-trust=false)
            value = "" if a.nargs == 0 else (a.metavar or a.dest.upper())
            if isinstance(value, tuple):
                value = " ".join(value)
            opts.append(Opt(list(a.option_strings), str(value), a.help or ""))
        else:
            positionals.append(str(a.metavar or a.dest))
    return Cmd(path, help, opts, subs, positionals)


def _from_flags(cmd, path: list[str], help: str) -> Cmd:
    opts = []
    for f in cmd.flags:
        names = [*(["-" + f.short] if f.short else []), "--" + f.long,
                 *("--" + a for a in f.aliases)]
        value = "" if f.kind == "bool" else (f.metavar or {"int": "int", "append": "list"}.get(
            f.kind, "string"))
        opts.append(Opt(names, value, f.help))
    return Cmd(path, help, opts, [], [*cmd.positionals, *([cmd.rest] if cmd.rest else [])])


def commands(parser, flagged: dict) -> Cmd:
    """The whole tree, `pybuild` at its root, from `parser` (builder.cli.make_parser(None))
    and `flagged` (builder.cli.flag_commands(): run's and create's builder.flags Commands).
    Given, not imported: builder.cli imports this module for `completion`."""
    root = _from_argparse(parser, [], parser.description or "")

    def swap(c: Cmd) -> None:     # run and create: argparse only lists them
        for i, s in enumerate(c.subs):
            word = s.path[-1]
            if word in flagged and (len(s.path) == 1 or s.path[-2] == "container"):
                c.subs[i] = _from_flags(flagged[word], s.path, s.help)
            else:
                swap(s)
    swap(root)
    return root


def walk(c: Cmd):
    yield c
    for s in c.subs:
        yield from walk(s)


def find(path: list[str], root: Cmd) -> Cmd | None:
    c = root
    for word in path:
        c = next((s for s in c.subs if s.path[-1] == word), None)
        if c is None:
            return None
    return c


def reference(root: Cmd) -> str:
    """docs/REFERENCE.md: every command, its usage words and its flags."""
    out = ["# pybuild command reference", "",
           "Generated from the command definitions (`builder.cliref`); "
           "tests/builder/test_cliref.py fails when it is stale. "
           "Regenerate: `PYBUILD_WRITE_DOCS=1 .venv/bin/python -m pytest tests/builder/test_cliref.py`.",
           ""]
    for c in walk(root):
        if not c.path:
            continue
        out.append(f"## pybuild {' '.join(c.path)}")
        out.append("")
        if c.help:
            out.append(c.help[0].upper() + c.help[1:] + ("" if c.help.endswith(".") else "."))
            out.append("")
        usage = " ".join(["pybuild", *c.path, *(["[OPTIONS]"] if c.opts else []),
                          *(["COMMAND"] if c.subs else []), *c.positionals])
        out += ["```", usage, "```", ""]
        if c.opts:
            out += ["| flag | value | what |", "|---|---|---|"]
            for o in c.opts:
                text = " ".join(o.help.split()).replace("|", "\\|")
                value = o.value.replace("|", "\\|")
                out.append(f"| `{', '.join(o.names)}` | {value} | {text} |")
            out.append("")
        if c.subs:
            out.append("Commands: " + ", ".join(f"`{s.path[-1]}`" for s in c.subs) + ".")
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def completion(shell: str, root: Cmd) -> str:
    """A completion script for bash or zsh: words after `pybuild` complete to the commands
    of that level, and a word starting with `-` to the flags of the command so far."""
    if shell not in ("bash", "zsh"):
        from builder.errors import BuildError

        raise BuildError(f"completion: unsupported shell {shell!r} (bash or zsh)")
    cases = []
    for c in walk(root):
        key = " ".join(c.path)
        words = " ".join(s.path[-1] for s in c.subs)
        flags = " ".join(n for o in c.opts for n in o.names if n.startswith("--"))
        cases.append(f'        "{key}") subs="{words}"; flags="{flags}" ;;')
    body = "\n".join(cases)
    script = f'''# pybuild {shell} completion (generated by `pybuild completion {shell}`)
_pybuild() {{
    local cur path="" w i subs flags
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    for ((i = 1; i < COMP_CWORD; i++)); do
        w="${{COMP_WORDS[i]}}"
        [[ "$w" == -* ]] && continue
        _pybuild_level "${{path:+$path }}$w" || break
        path="${{path:+$path }}$w"
    done
    _pybuild_level "$path"
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$flags --help" -- "$cur"))
    elif [[ -n "$subs" ]]; then
        COMPREPLY=($(compgen -W "$subs" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}}
_pybuild_level() {{
    case "$1" in
{body}
        *) return 1 ;;
    esac
}}
'''
    if shell == "zsh":
        script = "autoload -U +X bashcompinit && bashcompinit\n" + script
    return script + "complete -F _pybuild pybuild\n"
