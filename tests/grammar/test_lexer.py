"""The word lexer against BuildKit's envVarTest, wordsTest and TestProcessWithMatches tables."""

import json

import pytest
from grammar_conformance import CONFORMANCE, needs_conformance

from grammar.errors import DockerfileError, ExpansionError
from grammar.lexer import ShellLex

LEXDIR = CONFORMANCE / "shell-lexer"
ENV = {"PWD": "/home", "SHELL": "bash", "KOREAN": "한국어", "NULL": ""}


def _env_var_cases():
    if not LEXDIR.is_dir():
        return []
    cases = []
    for n, line in enumerate((LEXDIR / "envVarTest").read_text(encoding="utf-8").split("\n"), 1):
        if not line.strip() or line.startswith("#"):
            continue
        plat, inp, exp = line.split("|", 2)
        cases.append(pytest.param(plat, inp.strip(), exp.strip(), id=f"L{n}"))
    return cases


def _words_cases():
    if not LEXDIR.is_dir():
        return []
    env: dict[str, str] = {}
    cases = []
    for n, line in enumerate((LEXDIR / "wordsTest").read_text(encoding="utf-8").split("\n"), 1):
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("ENV "):
            k, _, v = line[4:].lstrip(" ").partition("=")
            env = {**env, k: v}
            continue
        inp, exp = line.split("|", 1)
        cases.append(pytest.param(dict(env), inp.strip(), exp.lstrip(" "), id=f"L{n}"))
    return cases


def _matches_cases():
    if not LEXDIR.is_dir():
        return []
    cases = []
    text = (LEXDIR / "processwithmatches-cases.tsv").read_text(encoding="utf-8")
    for n, line in enumerate(text.split("\n"), 1):
        if not line or line.startswith(("#", "input\t")):
            continue
        cols = [json.loads(c) for c in line.split("\t")]
        cases.append(pytest.param(*cols, id=f"L{n}"))
    return cases


@needs_conformance
@pytest.mark.parametrize(("plat", "inp", "exp"), _env_var_cases())
def test_env_var_table(plat, inp, exp):
    lex = ShellLex("\\", windows=plat == "W")
    if exp == "error":
        with pytest.raises(ExpansionError):
            lex.process_word(inp, ENV)
    else:
        assert lex.process_word(inp, ENV) == exp


@needs_conformance
@pytest.mark.parametrize(("env", "inp", "exp"), _words_cases())
def test_words_table(env, inp, exp):
    lex = ShellLex("\\")
    if exp == "error":
        with pytest.raises(ExpansionError):
            lex.process_words(inp, env)
    else:
        assert lex.process_words(inp, env) == exp.split(",")


@needs_conformance
@pytest.mark.parametrize(("inp", "envs", "exp", "matched", "unmatched"), _matches_cases())
def test_process_with_matches(inp, envs, exp, matched, unmatched):
    lex = ShellLex("\\")
    if exp == "ERROR":
        with pytest.raises(ExpansionError):
            lex.process_word_with_matches(inp, envs)
        return
    result, m, u = lex.process_word_with_matches(inp, envs)
    assert (result, m, u) == (exp, set(matched), set(unmatched))


def test_backtick_escape():
    lex = ShellLex("`")
    assert lex.process_word("a`$b c\\d", {"b": "x"}) == "a$b c\\d"


def test_error_message_names_the_word_and_is_a_dockerfile_error():
    with pytest.raises(DockerfileError) as e:
        ShellLex().process_word("${a", {})
    assert str(e.value) == """failed to process "${a": syntax error: missing '}'"""
    located = e.value.at("Dockerfile", 4)
    assert str(located) == """Dockerfile:4: failed to process "${a": syntax error: missing '}'"""


def test_required_variable_message():
    with pytest.raises(ExpansionError, match="x: need it"):
        ShellLex().process_word("${x:?need it}", {})


@pytest.mark.parametrize("depth", [300, 3000])
def test_deeply_nested_substitution_expands_like_buildkit(depth):
    """Go's lexer has no practical depth limit; 300 levels used to raise RecursionError."""
    import grammar

    word = "${A:-" * depth + "x" + "}" * depth
    df = grammar.parse(f"FROM x\nENV A={word}\nENV B=\"{'${B:+' * depth}y{'}' * depth}\"\n")
    grammar.validate(df)
    assert ShellLex().process_word(word, {}) == "x"
    assert ShellLex().process_word(word, {"A": "set"}) == "set"
    assert ShellLex().process_word('"' + "${B:+" * depth + "y" + "}" * depth + '"', {"B": "1"}) == "y"


def test_deeply_nested_unterminated_is_a_located_error():
    import grammar

    df = grammar.parse("FROM x\nENV A=" + "${A:-" * 3000 + "x" + "}" * 2999 + "\n")
    with pytest.raises(DockerfileError) as e:
        grammar.validate(df)
    assert e.value.line == 2 and "missing '}'" in e.value.message
