""".dockerignore reading and matching against moby/patternmatcher's own tables."""

import json

import pytest
from grammar_conformance import CONFORMANCE, needs_conformance

from grammar.dockerignore import IgnoreError, IgnoreMatcher, ignore_file_names, parse_ignore

IGNDIR = CONFORMANCE / "dockerignore"


def _rows(name):
    if not IGNDIR.is_dir():
        return []
    rows = []
    for n, line in enumerate((IGNDIR / name).read_text(encoding="utf-8").split("\n"), 1):
        if not line or line.startswith(("#", "patterns\t", "line\t")):
            continue
        rows.append(pytest.param(*line.split("\t"), id=f"L{n}"))
    return rows


@needs_conformance
@pytest.mark.parametrize(("patterns", "path", "expected", "api", "origin"), _rows("cases.tsv"))
def test_patternmatcher_cases(patterns, path, expected, api, origin):
    pats = json.loads(patterns)
    legacy = api.startswith("Matches(")
    if expected == "error":
        with pytest.raises(IgnoreError):
            m = IgnoreMatcher(pats)
            m.matches_legacy(path) if legacy else m.matches(path)
        return
    m = IgnoreMatcher(pats)
    got = m.matches_legacy(path) if legacy else m.matches(path)
    assert got == (expected == "match")


@needs_conformance
@pytest.mark.parametrize(("line", "normalized"), _rows("ignorefile-readall.tsv"))
def test_readall_normalisation(line, normalized):
    got = parse_ignore(json.loads(line))
    if normalized.startswith("(skipped"):
        assert got == []
    else:
        assert got == [json.loads(normalized)]


def test_bom_crlf_and_indented_hash_is_a_pattern():
    text = "\ufeff# comment\r\n  # not a comment\r\n*.log\r\n!keep.log\r\n"
    assert parse_ignore(text) == ["# not a comment", "*.log", "!keep.log"]


def test_typical_dockerignore():
    m = IgnoreMatcher(parse_ignore("node_modules\n**/*.pyc\n*.md\n!README.md\nbuild/**\n"))
    assert m.has_exceptions
    assert m.matches("node_modules/x/y.js")
    assert m.matches("a/b/c.pyc") and m.matches("c.pyc")
    assert m.matches("CHANGES.md") and not m.matches("README.md")
    assert not m.matches("docs/CHANGES.md")  # anchored at the root, unlike .gitignore
    assert m.matches("build/x") and not m.matches("build")
    assert not m.matches(".")


def test_bare_exclamation_is_rejected_with_the_ignore_file_name():
    with pytest.raises(IgnoreError) as e:
        IgnoreMatcher(["!"], filename="app.Dockerfile.dockerignore")
    assert str(e.value) == 'app.Dockerfile.dockerignore: illegal exclusion pattern: "!"'


def test_dockerfile_specific_ignore_file_wins():
    assert ignore_file_names("docker/app.Dockerfile") == ["docker/app.Dockerfile.dockerignore",
                                                          ".dockerignore"]
