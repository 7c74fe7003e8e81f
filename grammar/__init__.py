"""Dockerfile text -> typed AST; the BuildKit word lexer; .dockerignore matching. Pure, no I/O.

Public entry points: ``grammar.parse(text, filename)`` -> ``grammar.ast.Dockerfile``,
``grammar.validate(df, build_args)`` (``grammar.checks``), ``grammar.lexer.ShellLex``,
``grammar.dockerignore.IgnoreMatcher`` and ``grammar.dump.dump(df)``. The value parsers
that validation and the builder share: ``mountspec`` (RUN --mount), ``values`` (EXPOSE,
STOPSIGNAL, HEALTHCHECK), ``goduration`` (Go durations), ``gopath`` (Go path.Clean/Join,
WORKDIR) and ``gomatch`` (Go filepath.Match). Importing this package is cheap: lark is only
imported the first time something is parsed.
"""

from .errors import DockerfileError, ExpansionError


def parse(text, filename: str = "Dockerfile", *, strict: bool = True):
    """Parse a Dockerfile (str or bytes) into ``ast.Dockerfile``; raises DockerfileError."""
    from .parser import parse as _parse

    return _parse(text, filename, strict=strict)


def validate(df, build_args=None) -> None:
    """Every check `pybuild build` makes before running a step (``grammar.checks``)."""
    from .checks import validate as _validate

    _validate(df, build_args)


__all__ = ["DockerfileError", "ExpansionError", "parse", "validate"]
