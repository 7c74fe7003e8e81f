"""Property: any input yields an AST or a DockerfileError with a line -- never another exception."""

import pytest
from grammar_conformance import CONFORMANCE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import grammar
from grammar import ast

_SEEDS = sorted((CONFORMANCE / "dockerfile-parser" / "testfiles").glob("*/Dockerfile"))
SEEDS = [p.read_bytes() for p in _SEEDS] or [
    b"FROM alpine AS b\nRUN --mount=type=cache,target=/c echo \\\n  hi\nCOPY <<EOF /x\nhey\nEOF\n"]
TOKENS = [b"\\\n", b"`", b"<<EOF", b"<<-'E'", b"EOF\n", b"[", b"]", b'"', b"'", b"${", b"}", b"--", b"=",
          b"\r\n", b"\xef\xbb\xbf", b"# escape=`\n", b"#", b"ONBUILD ", b"\t", b"\x00", b"\xff", b"\n"]


def _outcome(data: bytes) -> None:
    try:
        df = grammar.parse(data)
    except grammar.DockerfileError as e:
        assert isinstance(e.line, int) and e.line >= 0 and str(e).startswith("Dockerfile")
        return
    assert isinstance(df, ast.Dockerfile)
    for inst in df.instructions:
        assert 1 <= inst.line <= inst.end_line
    try:
        grammar.validate(df)
    except grammar.DockerfileError as e:
        assert e.line >= 1


@st.composite
def mutated(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "flip"]))
        if op == "insert":
            data[pos:pos] = draw(st.sampled_from(TOKENS))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 20))]
        elif data:
            data[min(pos, len(data) - 1)] = draw(st.integers(0, 255))
    return bytes(data)


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(mutated())
def test_mutated_dockerfiles(data):
    _outcome(data)


@FAST
@given(st.binary(max_size=300))
def test_random_bytes(data):
    _outcome(data)


@FAST
@given(st.lists(st.sampled_from([*TOKENS, b"FROM x", b"RUN a", b"COPY a b", b"ENV a b", b" "]), max_size=30))
def test_token_soup(parts):
    _outcome(b"".join(parts))


@st.composite
def deeply_nested(draw):
    """``${A:-${B:+...}}`` hundreds to thousands deep, sometimes broken: nesting must never reach
    Python's recursion limit (BuildKit's Go lexer has no practical depth limit)."""
    depth = draw(st.integers(200, 3000))
    opener = draw(st.sampled_from([b"${A:-", b"${A-", b"${A:+", b'"${A:-', b"${A#", b"${A/x/"]))
    closer = b'}"' if opener.startswith(b'"') else b"}"
    body = opener * depth + b"x" + closer * (depth - draw(st.integers(0, 2)))
    kw = draw(st.sampled_from([b"ENV A=", b"ARG A=", b"WORKDIR ", b"LABEL A=", b"EXPOSE "]))
    return b"FROM x\n" + kw + body + b"\n"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deeply_nested())
def test_deeply_nested_expansions(data):
    _outcome(data)


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf", b"\\", b"FROM x\nRUN <<EOF", b"FROM x\nCMD [1]",
                                  b"FROM x\nRUN [\"a\", NaN]", b"#escape=`\nFROM x\nRUN a`"])
def test_known_edge_inputs(data):
    _outcome(data)
