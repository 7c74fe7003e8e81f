"""The one user-error class of grammar/: a mistake in a Dockerfile, with its file and line."""

from __future__ import annotations

FROM_EXPANSION = ("variable expansion is not supported for --from, define a new stage with FROM using "
                  "ARG from global scope as a workaround")  # RUN --mount from= and COPY --from


class DockerfileError(Exception):
    """A user mistake in a Dockerfile. ``str()`` is ``Dockerfile:3: <message>``.

    ``line`` is 1-based (0 when the error is about the file as a whole, e.g. it is empty;
    then ``str()`` is ``Dockerfile: <message>``).
    """

    def __init__(self, filename: str, line: int, message: str):
        super().__init__(filename, line, message)
        self.filename = filename
        self.line = line
        self.message = message

    def __str__(self) -> str:
        if self.line:
            return f"{self.filename}:{self.line}: {self.message}"
        return f"{self.filename}: {self.message}"


class ExpansionError(DockerfileError):
    """A bad ``${...}`` substitution or ``${v:?msg}`` on an unset variable.

    Raised by ``grammar.lexer`` without a position (filename "", line 0); callers that
    know where the word came from use ``at(filename, line)`` to get a located error.
    """

    def __init__(self, message: str, filename: str = "", line: int = 0):
        super().__init__(filename, line, message)

    def at(self, filename: str, line: int) -> ExpansionError:
        """The same error located at ``filename:line``."""
        return ExpansionError(self.message, filename, line)

    def __str__(self) -> str:
        if not self.filename:
            return self.message
        return super().__str__()


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert/delete/substitute), used for "did you mean" hints."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def suggest(value: str, options, *, case_sensitive: bool = False) -> str | None:
    """The closest of ``options`` within distance 2 (BuildKit's threshold), matched to
    ``value``'s case when comparing case-insensitively (``form`` -> ``from``)."""
    best, best_d = None, 3
    key = value if case_sensitive else value.lower()
    for opt in options:
        d = levenshtein(key, opt if case_sensitive else opt.lower())
        if d < best_d:
            best, best_d = opt, d
    if best is None or best_d == 0:  # an exact match (BuildKit's Search ok=true): nothing to suggest
        return None
    if not case_sensitive:
        if value.islower():
            best = best.lower()
        elif value.isupper():
            best = best.upper()
    return best


def with_suggestion(message: str, value: str, options, *, case_sensitive: bool = False) -> str:
    """``message`` plus `` (did you mean X?)`` when a close option exists."""
    hint = suggest(value, options, case_sensitive=case_sensitive)
    return f"{message} (did you mean {hint}?)" if hint else message
