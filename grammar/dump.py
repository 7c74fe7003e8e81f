"""BuildKit's AST dump (``Node.Dump``): the format of the parser conformance goldens."""

from __future__ import annotations

from . import ast
from .goquote import go_quote, go_quote_list


def flag_word(flag: ast.Flag) -> str:
    """The flag as written after quote removal: ``--name`` or ``--name=value``."""
    return f"--{flag.name}" if flag.value is None else f"--{flag.name}={flag.value}"


def dump_instruction(inst: ast.Instruction) -> str:
    """One instruction as ``(keyword ["--flag"] "arg" ...)`` without the parentheses' newline."""
    parts = [inst.keyword.lower()]
    if inst.flags:
        parts.append(go_quote_list(flag_word(f) for f in inst.flags))
    if isinstance(inst, ast.Onbuild):
        if inst.instruction is not None:
            parts.append("(" + dump_instruction(inst.instruction) + ")")
    else:
        parts.extend(go_quote(a) for a in inst.args)
    return " ".join(parts).strip()


def dump(df: ast.Dockerfile) -> str:
    """The whole file, one ``(...)`` line per instruction, ending in a newline."""
    return "".join("(" + dump_instruction(i) + ")\n" for i in df.instructions)
