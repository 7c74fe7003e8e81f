"""The parser against BuildKit's goldens, plus the cases its corpus does not cover."""

import json

import pytest
from grammar_conformance import CONFORMANCE, needs_conformance

import grammar
from grammar import ast
from grammar.dump import dump
from grammar.parser import heredocs_from_line, parse_heredoc

PDIR = CONFORMANCE / "dockerfile-parser"


def _dirs(sub):
    d = PDIR / sub
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


@needs_conformance
@pytest.mark.parametrize("case", _dirs("testfiles"))
def test_positive_goldens(case):
    d = PDIR / "testfiles" / case
    df = grammar.parse((d / "Dockerfile").read_bytes())
    assert dump(df) == (d / "result").read_text(encoding="utf-8")


NEGATIVE = {
    "empty_dockerfile": "file with no instructions",
    "only_comments": "file with no instructions",
    "env_no_value": "ENV must have two arguments",
    "shykes-nested-json": "when using JSON array syntax, arrays must be comprised of strings only",
}


@needs_conformance
@pytest.mark.parametrize("case", _dirs("testfiles-negative"))
def test_negative_goldens(case):
    with pytest.raises(grammar.DockerfileError) as e:
        grammar.parse((PDIR / "testfiles-negative" / case / "Dockerfile").read_bytes())
    assert e.value.message == NEGATIVE[case]
    if case in ("env_no_value", "shykes-nested-json"):
        assert e.value.line >= 1


@needs_conformance
def test_line_numbers_fixture():
    df = grammar.parse((PDIR / "testfile-line" / "Dockerfile").read_text())
    assert [(i.line, i.end_line) for i in df.instructions] == [(5, 5), (11, 12), (17, 31)]


def _heredoc_data():
    f = PDIR / "extracted-heredoc-cases.json"
    return json.loads(f.read_text()) if f.is_file() else None


@needs_conformance
def test_extracted_heredocs():
    data = _heredoc_data()
    df = grammar.parse(data["dockerfile"], strict=False)  # it has a bare "INVALID" line
    got = []
    for inst in df.instructions[1:]:
        docs = getattr(inst, "heredocs", ())
        got.append([{"Name": h.name, "FileDescriptor": h.fd, "Expand": h.expand, "Chomp": h.chomp,
                     "Content": h.content} for h in docs] or None)
    assert got == data["expected"]


@needs_conformance
def test_heredoc_helpers():
    h = _heredoc_data()["helper_cases"]
    for w in h["parse_heredoc_valid_name_EOF"]:
        assert parse_heredoc(w)[0] == "EOF", w
    for w in h["parse_heredoc_error"]:
        with pytest.raises(grammar.ExpansionError):
            parse_heredoc(w)
    for w in h["parse_heredoc_not_a_heredoc"]:
        assert parse_heredoc(w) is None, w
    for line, names in h["heredocs_from_line"]:
        # upstream only compares the heredocs it finds (BuildKit finds none in "RUN <<- EOF")
        got = [d[0] for d in heredocs_from_line(line)]
        assert got == names[: len(got)], line
    assert [d[0] for d in heredocs_from_line("RUN <<EOF <<-'EOF2' 3<<E\"O\"F")] == ["EOF", "EOF2", "EOF"]
    for line in h["json_form_never_heredoc"]:
        df = grammar.parse(f"FROM x\n{line}\nEOF\n", strict=False)
        assert isinstance(df.instructions[2], ast.Unknown)  # "EOF" was not swallowed as a body
        assert df.instructions[1].heredocs == ()
    chomp = h["chomp"]
    assert ast.Heredoc("x", chomp["input"], chomp=True).text() == chomp["output"]


def test_crlf_and_bom():
    text = "\ufeffFROM alpine\r\nRUN echo a \\\r\n    b\r\nCOPY <<EOF /x\r\nhi\r\nEOF\r\n"
    df = grammar.parse(text.encode())
    assert dump(df) == '(from "alpine")\n(run "echo a     b")\n(copy "<<EOF" "/x")\n'
    assert df.instructions[2].heredocs[0].content == "hi\r\n"
    assert [(i.line, i.end_line) for i in df.instructions] == [(1, 1), (2, 3), (4, 6)]


def test_escape_directive_backtick_and_directives():
    df = grammar.parse("# syntax=docker/dockerfile:1\n# escape=`\n# check=skip=all\nFROM x\nRUN a `\n  b\n")
    assert df.escape == "`"
    assert df.directives == {"syntax": "docker/dockerfile:1", "escape": "`", "check": "skip=all"}
    assert df.instructions[1].args == ("a   b",)


@pytest.mark.parametrize(("text", "line", "msg"), [
    ("FROM x\nRUNN foo\n", 2, "unknown instruction: RUNN (did you mean RUN?)"),
    ("FROM x\nform y\n", 2, "unknown instruction: form (did you mean from?)"),
    ("FROM x\nFNTRYPOINT y\n", 2, "unknown instruction: FNTRYPOINT (did you mean ENTRYPOINT?)"),
    ("FROM x\nBOGUSWORD y\n", 2, "unknown instruction: BOGUSWORD"),
    ("# escape=x\nFROM x\n", 1, "invalid escape token 'x' does not match ` or \\"),
    ("# escape=`\n# escape=\\\nFROM x\n", 2, "only one escape parser directive can be used"),
    ("FROM x\nRUN <<EOF\necho\n", 2, "unterminated heredoc"),
    ("FROM x\nLABEL a=b c\n", 2, "Syntax error - can't find = in \"c\". Must be of the form: name=value"),
])
def test_parse_errors_have_file_and_line(text, line, msg):
    with pytest.raises(grammar.DockerfileError) as e:
        grammar.parse(text, filename="app.Dockerfile")
    assert (e.value.line, e.value.message) == (line, msg)
    assert str(e.value) == f"app.Dockerfile:{line}: {msg}"


def test_typed_fields():
    df = grammar.parse(
        "ARG BASE=alpine V\nFROM --platform=$BUILDPLATFORM ${BASE} AS Build\n"
        "RUN --mount=type=cache,target=/c --mount=type=tmpfs,target=/t <<-'EOF' sh\n\techo $HOME\n\tEOF\n"
        "COPY --from=build --chmod=755 a b /dst/\nENV A=1 B=\"two words\"\nENV LEGACY some value\n"
        "CMD [\"run\", \"--it\"]\nENTRYPOINT exec app\nHEALTHCHECK --interval=5s CMD curl -f x\n"
        "HEALTHCHECK NONE\nONBUILD RUN echo hi\nSHELL [\"/bin/bash\", \"-c\"]\nEXPOSE 80/tcp 53/udp\n"
        "VOLUME /a /b\nUSER app:app\nWORKDIR /w\nSTOPSIGNAL SIGTERM\nMAINTAINER me\nLABEL x=y\n")
    i = df.instructions
    assert i[0].pairs == (ast.KeyValue("BASE", "alpine"), ast.KeyValue("V", None))
    assert (i[1].image, i[1].name, i[1].flag("platform")) == ("${BASE}", "build", "$BUILDPLATFORM")
    run = i[2]
    assert run.flag_values("mount") == ("type=cache,target=/c", "type=tmpfs,target=/t")
    assert run.command == ast.Command(False, ("<<-'EOF' sh",))
    assert run.heredocs == (ast.Heredoc("EOF", "\techo $HOME\n", expand=False, chomp=True),)
    assert (i[3].sources, i[3].dest, i[3].flag("from")) == (("a", "b"), "/dst/", "build")
    assert i[4].pairs == (ast.KeyValue("A", "1"), ast.KeyValue("B", '"two words"'))
    assert i[5].pairs == (ast.KeyValue("LEGACY", "some value", legacy=True),)
    assert i[6].command == ast.Command(True, ("run", "--it"))
    assert i[7].command == ast.Command(False, ("exec app",))
    want = ("CMD", ast.Command(False, ("curl -f x",)), "5s")
    assert (i[8].kind, i[8].command, i[8].flag("interval")) == want
    assert (i[9].kind, i[9].command) == ("NONE", None)
    assert isinstance(i[10].instruction, ast.Run) and i[10].expression == "RUN echo hi"
    assert i[11].shell == ("/bin/bash", "-c")
    assert i[12].ports == ("80/tcp", "53/udp")
    assert (i[13].paths, i[13].exec_form) == (("/a", "/b"), False)
    assert (i[14].user, i[15].path, i[16].signal, i[17].maintainer) == ("app:app", "/w", "SIGTERM", "me")
    assert i[18].kind == "LABEL" and i[18].original == "LABEL x=y"


def test_comments_and_blank_lines_inside_continuation_warn():
    df = grammar.parse("FROM x\nRUN a \\\n# c\n\n  b\n")
    assert df.instructions[1].args == ("a   b",)
    assert df.instructions[1].end_line == 5
    assert df.warnings and "Empty continuation line" in df.warnings[0]


def test_import_does_not_load_lark():
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parents[2]  # this checkout, wherever it is cloned
    code = ("import sys, grammar; assert 'lark' not in sys.modules, 'lark loaded'; "
            "print(grammar.__file__)")
    r = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()).resolve() == repo / "grammar" / "__init__.py"
