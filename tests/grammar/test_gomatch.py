"""grammar.gomatch: Go's filepath.Match, shared by COPY wildcards and .dockerignore checks."""
import pytest

from grammar.dockerignore import IgnoreError, IgnoreMatcher
from grammar.gomatch import match, translate


@pytest.mark.parametrize(("pattern", "name", "want"), [
    ("*.py", "a.py", True), ("*.py", "d/a.py", False), ("?", "/", False), ("a?c", "abc", True),
    ("[a-c]x", "bx", True), ("[^a-c]x", "dx", True), ("[^a-c]x", "ax", False), ("\\*", "*", True),
    ("[b-a]x", "ax", False), ("[b-ac]", "c", True),  # a reversed range is valid in Go: matches nothing
    ("[^b-a]", "q", True),
])
def test_match_like_go(pattern, name, want):
    assert match(pattern, name) is want


@pytest.mark.parametrize("pattern", ["[", "[a", "[]", "[a-", "a\\", "[-a]", "[a-]"])
def test_bad_patterns(pattern):
    with pytest.raises(ValueError):
        match(pattern, "a")


def test_dockerignore_checks_syntax_with_the_same_compiler():
    assert IgnoreMatcher(["[a-c]x", "y"]).matches("bx")
    with pytest.raises(IgnoreError, match=r"syntax error in pattern: \[a"):
        IgnoreMatcher(["[a"])
    # filepath.Match accepts a reversed range, but patternmatcher's own regexp (Go's) does not
    with pytest.raises(IgnoreError):
        IgnoreMatcher(["[b-a]"])


@pytest.mark.parametrize("pattern", ["[b-a]", "\\d", "\\y", "\\é", "[\\w]", "[*]", "[?a]",
                                     "[[:alpha:]]"])
def test_patternmatcher_mode_refuses_what_re2_reads_otherwise(pattern):
    translate(pattern)  # a valid filepath.Match pattern ...
    with pytest.raises(ValueError):
        translate(pattern, patternmatcher=True)  # ... that .dockerignore's regexp would differ on


@pytest.mark.parametrize(("pattern", "path", "want"), [
    ("\\**", "*x", True), ("\\**", "*/x", True), ("\\**", "a*", False),  # \* then **: prefix-like
    ("**]", "a]", False), ("**]", "]", True),  # patternmatcher: `]` makes it a regex, no suffix
    ("[\\]a]x", "]x", True), ("a\\ b", "a b", True), ("[a-c]/**/z", "b/q/r/z", True),
    ("[[]x", "[x", True),
])
def test_dockerignore_doublestar_around_gomatch_chunks(pattern, path, want):
    assert IgnoreMatcher([pattern]).matches(path) is want
