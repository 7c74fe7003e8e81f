"""builder.gotemplate: Go's text/template as docker's --format runs it. The cases' expected
outputs are Go's (text/template and docker's template funcs); tests/e2e/test_inspect_format.py
compares the same templates with `docker inspect -f` itself."""
from __future__ import annotations

import pytest

from builder.gotemplate import TemplateError, render

DOC = {"RepoTags": ["a:1", "b:2"], "Id": "sha256:0123456789ab",
       "Config": {"Labels": {"y": "2", "x": "1"}, "Env": ["A=1", "B=2"], "Cmd": None},
       "Size": 4261550, "Os": "linux", "Empty": [], "Zero": 0, "Flag": True}


@pytest.mark.parametrize("text, want", [
    ("{{.Os}}", "linux"),
    ("{{.Size}}", "4261550"),
    ("{{.Flag}}", "true"),
    ("{{.Nope}}", "<no value>"),
    ("{{.Config.Cmd}}", "<nil>"),
    ("{{.Config.Env}}", "[A=1 B=2]"),
    ("{{.Config.Labels}}", "map[x:1 y:2]"),
    ("{{index .RepoTags 0}}", "a:1"),
    ('{{index .Config.Labels "x"}}', "1"),
    ("{{json .Config.Env}}", '["A=1","B=2"]'),
    ("{{json .Config.Cmd}}", "null"),
    ('{{join .RepoTags ","}}', "a:1,b:2"),
    ('{{split "a,b" ","}}', "[a b]"),
    ("{{range .RepoTags}}[{{.}}]{{end}}", "[a:1][b:2]"),
    ("{{range $i, $t := .RepoTags}}{{$i}}={{$t}} {{end}}", "0=a:1 1=b:2 "),
    ("{{range $k, $v := .Config.Labels}}{{$k}}{{$v}}{{end}}", "x1y2"),
    ("{{range .Empty}}x{{else}}none{{end}}", "none"),
    ("{{if .Empty}}a{{else if .Zero}}b{{else if .Os}}c{{else}}d{{end}}", "c"),
    ("{{if and .Os .Flag}}yes{{end}}", "yes"),
    ('{{or .Empty "dflt"}}', "dflt"),
    ("{{not .Zero}}", "true"),
    ("{{with .Config}}{{.Env}}{{end}}", "[A=1 B=2]"),
    ("{{with .Empty}}x{{else}}empty{{end}}", "empty"),
    ("{{.Os | upper}}", "LINUX"),
    ('{{"Ab" | lower}}', "ab"),
    ('{{title "hello world"}}', "Hello World"),
    ("{{len .RepoTags}}", "2"),
    ("{{slice .Id 0 6}}", "sha256"),
    ('{{printf "%s:%d %q %5s|%-3d|" .Os .Size .Os "x" 7}}', 'linux:4261550 "linux"     x|7  |'),
    ('{{printf "%v" .Config.Env}}', "[A=1 B=2]"),
    ("{{println .Os}}", "linux\n"),
    ('{{print "a" 1 2 "b"}}', "a1 2b"),
    ('{{if eq .Os "mac" "linux"}}L{{end}}', "L"),
    ("{{if ne .Size 1}}N{{end}}", "N"),
    ("{{if lt .Zero .Size}}lt{{end}}", "lt"),
    ("{{$x := .Os}}{{$x}}-{{$.Os}}", "linux-linux"),
    ("{{range .RepoTags}}{{$.Os}}{{end}}", "linuxlinux"),
    ("{{(index .RepoTags 1)}}", "b:2"),
    ("a  {{- .Os -}}  b", "alinuxb"),
    ("{{/* a comment */}}x", "x"),
    ("{{`raw\\n`}}", "raw\\n"),
    ('{{"tab\\tx"}}', "tab\tx"),
    ('{{"\\x41\\u00e9"}}', "Aé"),
    ("{{'x'}}", "120"),
    ('{{pad "x" 1 2}}|', " x  |"),
    ('{{truncate "abcdef" 3}}', "abc"),
])
def test_go_semantics(text, want):
    assert render(text, DOC) == want


@pytest.mark.parametrize("text, words", [
    ("{{.Os", "unclosed action"),
    ("{{foo .Os}}", 'function "foo" not defined'),
    ("{{if .Os}}x", "unexpected EOF"),
    ("{{end}}", "unexpected {{end}}"),
    ("{{.Os 3}}", "can't give argument to non-function .Os"),
    ("{{index .RepoTags 5}}", "index out of range: 5"),
    ('{{template "x"}}', "not supported"),
    ('{{"a}}', "unterminated quoted string"),
    ("{{$nope}}", "undefined variable: $nope"),
    ("{{range .Os}}x{{end}}", "range can't iterate over linux"),
    ("{{lt .Os 1}}", "incompatible types for comparison"),
    ('{{"\\q"}}', "invalid syntax"),
    ("{{'ab'}}", "malformed character constant"),
    ("{{" + "(" * 3000 + "1" + ")" * 3000 + "}}", "exceeded maximum template depth"),
    ("{{if 1}}" * 3000 + "x" + "{{end}}" * 3000, "exceeded maximum template depth"),
])
def test_errors_say_what_go_says(text, words):
    with pytest.raises(TemplateError, match="^template: ") as e:
        render(text, DOC)
    assert words in str(e.value)


def test_a_struct_refuses_unknown_fields_and_has_methods():
    row = {"Names": "web", "Label": lambda k: {"a": "1"}.get(k, "")}
    strict = ({"Names", "Label"}, "*formatter.ContainerContext")
    assert render('{{.Names}} {{.Label "a"}}|{{.Label "b"}}|', row, strict=strict) == "web 1||"
    assert render("{{json .}}", row, strict=strict) == '{"Names":"web"}'
    with pytest.raises(TemplateError, match="can't evaluate field Nope in type "
                                            r"\*formatter.ContainerContext"):
        render("{{.Nope}}", row, strict=strict)
