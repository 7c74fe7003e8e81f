"""Character classes and escapes in .dockerignore, through `pybuild build`: what is excluded.

Expected results are derived from moby/patternmatcher (patternmatcher.go): `New` checks each
pattern with Go's `filepath.Match`, then `Pattern.compile` builds its own Go regexp -- `*` and
`?` become `[^/]*` / `[^/]`, regexp metacharacters `.+()|{}$` are quoted, `\\x` is copied as
`\\x`, `[` and `]` are copied raw, so RE2 reads the class. On the first match a pattern whose
regexp does not compile (a reversed range `[b-a]`, an escaped letter RE2 does not know) fails
with `filepath.ErrBadPattern` ("syntax error in pattern"), although `filepath.Match` accepted
it. Where RE2 would read a glob as a regexp (`\\d`, `[[:alpha:]]`, `[*]`) pybuild refuses the
pattern with its reason rather than exclude something else than the glob says.
"""
import pytest
from e2e_helpers import build

pytestmark = pytest.mark.usefixtures("busybox_root")

FILES = ["a1", "ab", "b", "c.txt", "d.txt", "x*y", "xzy", "[lit]", "sub/x2", "sub/a2", "sub/!2",
         "p+q", "pq"]


def _context(tmp_path, ignore: str):
    for name in FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    (tmp_path / ".dockerignore").write_text(ignore)


def test_classes_and_escapes_exclude_what_patternmatcher_excludes(tmp_path, pybuild):
    _context(tmp_path, "a[0-9]\n[^bc].txt\nx\\*y\n\\[lit\\]\nsub/[!x]2\np+q\n")
    _, fs = build(pybuild, tmp_path, "FROM busybox\nCOPY . /ctx\n")
    with fs() as root:
        kept = sorted(p.relative_to(root / "ctx").as_posix() for p in (root / "ctx").rglob("*")
                      if p.is_file())
    # a[0-9]: a1 only; [^bc].txt: d.txt; x\*y: the literal star; \[lit\]: the brackets;
    # [!x]2: `!` is no negation (Go and RE2 negate with ^ only); p+q: `+` is quoted
    assert kept == sorted([".dockerignore", "Dockerfile", "ab", "b", "c.txt", "xzy", "sub/a2",
                           "pq"])


@pytest.mark.parametrize(("pattern", "reason"), [
    ("[b-a]", "reversed range b-a"),               # BuildKit: ErrBadPattern from regexp.Compile
    ("[Local-Only]/", "reversed range l-O"),       # patternmatcher_test.go's own malformed case
    ("file\\y", "\\y is a regexp escape"),         # RE2: invalid escape -> ErrBadPattern
    ("file\\d", "\\d is a regexp escape"),         # RE2 would read a digit class
    ("[[:alpha:]]", "POSIX class"),                # RE2 would read a POSIX class
    ("a[*]", "unescaped * in a character class"),  # becomes a[[^/]*] in patternmatcher's regexp
])
def test_patterns_buildkit_reads_as_regexp_fail_the_build_with_one_line(tmp_path, pybuild, pattern,
                                                                        reason):
    _context(tmp_path, f"*.txt\n{pattern}\n")
    (tmp_path / "Dockerfile").write_text("FROM busybox\nCOPY . /ctx\n")
    r = pybuild("build", "--progress", "plain", "-t", "t-ignore-bad", str(tmp_path))
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and "Warning" not in r.stderr, r.stderr
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("pybuild: error:")]
    assert len(err) == 1, r.stderr
    assert f"syntax error in pattern: {pattern.rstrip('/')} (" in err[0] and reason in err[0], err[0]
    assert ".dockerignore" in err[0]
    assert pybuild("images").stdout.count("t-ignore-bad") == 0
