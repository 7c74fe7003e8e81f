"""Dockerfile text -> typed AST; the BuildKit word lexer; .dockerignore matching. Pure, no I/O.

Public entry points: ``grammar.parse(text, filename)`` -> ``grammar.ast.Dockerfile``,
``grammar.validate(df, build_args)``, ``grammar.lexer.ShellLex``,
``grammar.dockerignore.IgnoreMatcher`` and ``grammar.dump.dump(df)``. Importing this
package is cheap: lark is only imported the first time something is parsed.
"""

from .errors import DockerfileError, ExpansionError
from .validate import validate


def parse(text, filename: str = "Dockerfile", *, strict: bool = True):
    """Parse a Dockerfile (str or bytes) into ``ast.Dockerfile``; raises DockerfileError."""
    from .parser import parse as _parse

    return _parse(text, filename, strict=strict)


__all__ = ["DockerfileError", "ExpansionError", "parse", "validate"]
