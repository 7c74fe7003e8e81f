"""Image references parse as docker's (distribution/reference ParseNormalizedNamed): the
familiar short forms normalise to docker.io/library, a first component with a dot, a colon, or
`localhost` (or any capital letter) is a registry host, and bad names are refused."""
from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cache import layout, refs
from cache.errors import StoreError

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize("ref,want", [
    ("busybox", ("docker.io/library/busybox", "latest", None)),
    ("busybox:1.36", ("docker.io/library/busybox", "1.36", None)),
    ("library/busybox", ("docker.io/library/busybox", "latest", None)),
    ("docker.io/busybox", ("docker.io/library/busybox", "latest", None)),
    ("team/app", ("docker.io/team/app", "latest", None)),
    ("team/sub/app:v", ("docker.io/team/sub/app", "v", None)),
    ("localhost/app", ("localhost/app", "latest", None)),
    ("localhost:5000/app:1", ("localhost:5000/app", "1", None)),
    ("127.0.0.1:5000/a/b", ("127.0.0.1:5000/a/b", "latest", None)),
    ("registry.example.com/app", ("registry.example.com/app", "latest", None)),
    ("Registry/app", ("Registry/app", "latest", None)),
    (f"busybox@{DIGEST}", ("docker.io/library/busybox", None, DIGEST)),
    (f"h:5000/app:1@{DIGEST}", ("h:5000/app", "1", DIGEST)),
    ("a_b/c__d/e-f.g", ("docker.io/a_b/c__d/e-f.g", "latest", None)),
    ("[::1]:5000/app", ("[::1]:5000/app", "latest", None)),
    ("[fe80::1]/app:2", ("[fe80::1]/app", "2", None)),
    ("a-b.Example.com:443/app", ("a-b.Example.com:443/app", "latest", None)),
])
def test_docker_normalisation(ref, want):
    assert refs.parse(ref) == want


@pytest.mark.parametrize("ref", [
    "", " busybox", "Busybox", "team/App", "busybox:", "busybox:-x", "busybox:" + "t" * 129,
    "busybox@sha256:abc", "busybox@md5:" + "0" * 32, "a//b", "-a/b", "a/b-", "a/.b", "a__/b",
    # the registry host follows docker's domain grammar
    "host:abc/x", "host:/x", "ex_ample.com/x", "exa mple.com/x", "-a.com/x", "a-.com/x", "a..com/x",
    ".a.com/x", "a.com./x", "[::1/x", "[zz::1]:5000/x", "a.com:5000:1/x", "exa\x1bmple.com/x",
])
def test_invalid_reference_format(ref):
    with pytest.raises(StoreError, match="invalid reference format"):
        refs.parse(ref)


def test_familiar_forms_are_what_docker_shows():
    assert refs.familiar("docker.io/library/busybox:latest") == "busybox:latest"
    assert refs.familiar("docker.io/team/app:1") == "team/app:1"
    assert refs.familiar("127.0.0.1:5000/x/y:2") == "127.0.0.1:5000/x/y:2"
    assert refs.normalize("busybox") == "docker.io/library/busybox:latest"


def test_a_newline_inside_a_name_or_tag_is_refused():
    """The old regexes ended in `$`, which also matches before a final newline: `a\\n/b` and a
    tag `t\\n` before a digest passed. Docker's (Go) `$` is the end of the text only."""
    for ref in ("a\n/b", f"a:t\n@{DIGEST}", f"a@{DIGEST}\n/x", "h\n.com/a", "a/b\n:t"):
        with pytest.raises(StoreError, match="invalid reference format"):
            refs.parse(ref)


# distribution/reference's grammar as the regexes cache.refs used before its checks were written
# out by hand (anchored at both ends: `fullmatch`, Go's `^...$`)
_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
GRAMMAR = {
    refs._is_component: re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"),
    refs._is_tag: re.compile(r"[\w][\w.-]{0,127}"),
    refs._is_domain: re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"),
    layout.is_digest: re.compile(r"sha256:[0-9a-f]{64}"),
    layout.is_hex: re.compile(r"[0-9a-f]+"),
}
# each alphabet: what the grammar is made of, with near misses (capitals, other separators,
# Unicode letters and digits, a newline)
ALPHABETS = {
    refs._is_component: "ab09._-_A/\n",
    refs._is_tag: "aZ9_.-\u00e9\u0660\u00b2\u2163 :/\n",
    refs._is_domain: "aZ09.-:[]fF_ /\n",
    layout.is_digest: "sha256:0f9aA\n",
    layout.is_hex: "09afAg\n",
}


@pytest.mark.parametrize("check", list(GRAMMAR), ids=lambda f: f.__name__)
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_hand_written_checks_agree_with_the_grammar(check, data):
    alphabet = ALPHABETS[check]
    text = data.draw(st.text(alphabet=alphabet, max_size=12) | st.text(alphabet=alphabet, min_size=60,
                                                                         max_size=140))
    if check is layout.is_digest:   # near a digest: sha256: + hex, now and then one change
        text = data.draw(st.sampled_from(["", "sha256:", "sha256:" + "0" * 63])) + text
    assert check(text) == bool(GRAMMAR[check].fullmatch(text)), repr(text)


def test_grammar_examples_either_way():
    """Strings the random ones rarely hit: each check says what its regex says."""
    cases = {
        refs._is_component: ["a", "a.b", "a__b", "a___b", "a---b", "a-.b", "a._b", "-a", "a-",
                             "_a", "ab_", "a..b", "A"],
        refs._is_tag: ["a", "_", ".a", "-a", "a" * 128, "a" * 129, "\u00e9t\u00e9", "v1.0-rc_2"],
        refs._is_domain: ["a", "a.b", "a-b.c:1", "[::1]", "[::1]:80", "[]", "[::1]x", "a:", ":1",
                          "a.b.", "-a", "a_b", "1.2.3.4:5000", "[g::1]", "[::1]:", "a:1:2"],
        layout.is_digest: ["sha256:" + "a" * 64, "sha256:" + "a" * 63, "sha256:" + "A" * 64,
                           "sha512:" + "a" * 64, "sha256:" + "a" * 64 + "\n"],
    }
    for check, texts in cases.items():
        for t in texts:
            assert check(t) == bool(GRAMMAR[check].fullmatch(t)), (check.__name__, t)
    assert not layout.is_digest(None) and not layout.is_hex("")
