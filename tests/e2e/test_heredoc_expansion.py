"""Heredoc bodies through `pybuild build`, expanded exactly as BuildKit expands them.

Expected contents are derived from moby/buildkit's source (docker 20's BuildKit v0.8 has no
heredocs, so tests/interop cannot pin them):
- frontend/dockerfile/instructions/parse.go `parseSourcesAndDest`: a COPY/ADD heredoc source
  becomes a SourceContent whose `Expand` is the marker's (chomped first for `<<-`);
- frontend/dockerfile/parser/parser.go `heredocFromMatch`: `Expand` is false when any part of
  the marker is quoted (`<<"EOF"`, `<<'EOF'`);
- frontend/dockerfile/dockerfile2llb/convert.go `dispatch`: `ExpandRaw` runs each expandable
  body through `shell.NewLex('\\')` with `SkipProcessQuotes = true` and the stage's env (ENV and
  ARGs, `dispatchArg` adds ARGs to it) -- backslash escapes whatever `# escape=` says;
- frontend/dockerfile/shell/lex.go `processStopOn`: with quote processing off, quotes are
  ordinary characters and an escape char is dropped before whatever follows it;
- convert.go `dispatchRun`: RUN heredocs are never expanded by the frontend ("we ignore the
  expand option"); the shell sees the body.
"""
import pytest
from e2e_helpers import build

pytestmark = pytest.mark.usefixtures("busybox_root")


def test_copy_and_add_heredocs_expand_like_buildkit(tmp_path, pybuild):
    _, fs = build(pybuild, tmp_path, r"""FROM busybox
ARG A=arg
ENV V=val
COPY <<EOF /default
${B:-def} ${V:-def} ${B-d2}
EOF
COPY <<EOF /alt
[${B:+x}] [${V:+x}]
EOF
COPY <<EOF /escaped
\$V \\ \x ${V}
EOF
COPY <<EOF /quotes
'$V' "$V" "a  b" 'it''s'
EOF
COPY <<"EOF" /dq
$V ${B:-def} \$V
EOF
COPY <<'EOF' /sq
'$V' \\
EOF
ADD <<EOF /added
$A-${V%l}
EOF
COPY <<-EOF /chomped
	$V
EOF
""")
    with fs() as root:
        got = {n: (root / n).read_text() for n in
               ("default", "alt", "escaped", "quotes", "dq", "sq", "added", "chomped")}
    assert got == {
        "default": "def val d2\n",          # ${v:-w}, ${v-w}: the lexer's modifiers
        "alt": "[] [x]\n",                  # ${v:+w}
        "escaped": "$V \\ x val\n",         # `\` escapes the next char and is dropped
        "quotes": "'val' \"val\" \"a  b\" 'it''s'\n",  # quotes kept, still expanded inside
        "dq": "$V ${B:-def} \\$V\n",        # quoted marker: the body as written
        "sq": "'$V' \\\\\n",
        "added": "arg-va\n",                # ADD alike; ARGs are in the env
        "chomped": "val\n",                 # `<<-` strips tabs, then expands
    }


def test_heredoc_expansion_escapes_with_backslash_whatever_the_escape_directive(tmp_path, pybuild):
    """convert.go `dispatch` makes a fresh `shell.NewLex('\\')` for ExpandRaw."""
    _, fs = build(pybuild, tmp_path, """# escape=`
FROM busybox
ENV V=val
COPY <<EOF /e
\\$V `$V
EOF
""")
    with fs() as root:
        assert (root / "e").read_text() == "$V `val\n"


def test_run_heredocs_are_left_to_the_shell(tmp_path, pybuild):
    """convert.go `dispatchRun`: a lone `RUN <<"EOF"` body runs as `sh -c body` (the quoted
    marker is ignored, the shell expands); `cat <<"EOF"` is the shell's own quoted heredoc."""
    _, fs = build(pybuild, tmp_path, r"""FROM busybox
ENV V=val
RUN <<"EOF"
echo "$V ${B:-def}" > /run-lone
EOF
RUN cat <<"EOF" > /run-cat
$V \$V
EOF
RUN cat <<EOF > /run-cat-unquoted
$V \$V
EOF
""")
    with fs() as root:
        assert (root / "run-lone").read_text() == "val def\n"
        assert (root / "run-cat").read_text() == "$V \\$V\n"
        assert (root / "run-cat-unquoted").read_text() == "val $V\n"


def test_a_failed_expansion_in_a_heredoc_is_one_error_line(tmp_path, pybuild):
    """lex.go `processDollar`: `${v:?msg}` with v unset fails the build with `v: msg`."""
    (tmp_path / "Dockerfile").write_text("FROM busybox\nCOPY <<EOF /x\n${B:?B must be set}\nEOF\n")
    r = pybuild("build", "--progress", "plain", "-t", "t-heredoc-err", str(tmp_path))
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("pybuild: error:")]
    assert len(err) == 1 and "B: B must be set" in err[0] and ":2" in err[0], r.stderr


@pytest.mark.parametrize("marker", ["<<EOF", '<<"EOF"', "<<E'O'F", '<<-E"O"F', '3<<EOF'])
def test_a_lone_heredoc_with_a_shebang_runs_as_a_script_file(tmp_path, pybuild, marker):
    """convert.go `dispatchRun`: a RUN that is only a heredoc marker (parser.MustParseHeredoc,
    any quoting) and whose body starts with `#!` runs the body as a file under /dev/pipes/."""
    _, fs = build(pybuild, tmp_path, f"FROM busybox\nRUN {marker}\n#!/bin/sh\necho \"$0\" > /how\nEOF\n")
    with fs() as root:
        assert (root / "how").read_text() == "/dev/pipes/EOF\n"


def test_heredoc_files_live_in_the_store_tmp_only_while_the_step_runs(tmp_path, busybox_root,
                                                                     monkeypatch):
    """A RUN heredoc's script is written under the store's tmp/ in a dir named for this process,
    so a kill leaves it to `pybuild prune`; nothing goes to $TMPDIR, and nothing stays."""
    import subprocess
    import sys
    import time

    private = tmp_path / "tmpdir"
    private.mkdir()
    monkeypatch.setenv("TMPDIR", str(private))
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN <<EOF\n#!/bin/sh\nsleep 2\nEOF\n")
    p = subprocess.Popen([sys.executable, "-m", "builder", "build", "-q", str(ctx)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen, in_tmpdir = [], []
    while p.poll() is None:
        seen += [e.name for e in (busybox_root / "tmp").iterdir() if e.name.startswith("heredoc-")]
        in_tmpdir += [e.name for e in private.iterdir()]
        time.sleep(0.05)
    assert p.returncode == 0, p.stderr.read()
    assert seen and f"-{p.pid}." in seen[0], seen
    assert not in_tmpdir
    assert list((busybox_root / "tmp").iterdir()) == []
