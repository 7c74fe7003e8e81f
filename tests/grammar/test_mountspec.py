"""grammar.mountspec: the one RUN --mount parser (validation and the build use it alike)."""
import pytest

import grammar
from grammar.mountspec import MountError, parse_mount


@pytest.mark.parametrize(("spec", "readonly"), [
    ("type=cache,target=/x", False),
    ("type=cache,target=/x,readonly=false", False),
    ("type=cache,target=/x,ro=0", False),
    ("type=cache,target=/x,readonly", True),
    ("type=cache,target=/x,ro=True", True),
    ("type=cache,target=/x,rw=false", True),
    ("type=bind,target=/x", True),
    ("type=bind,target=/x,rw", False),
    ("type=bind,target=/x,rw=false", True),
    ("type=bind,target=/x,readwrite=1", False),
    ("type=bind,target=/x,rw,ro", True),  # the last one wins, as in BuildKit
    ("target=/x,readonly=F", False),
    ("type=tmpfs,target=/x", False),
    ("type=secret,id=a", True),
])
def test_readonly_is_a_go_boolean_with_buildkit_defaults(spec, readonly):
    assert parse_mount(spec).readonly is readonly


def test_typed_values():
    m = parse_mount("type=cache,dst=/c,id=pip,sharing=LOCKED,mode=0700,uid=1000,gid=100,from=base,src=/s")
    assert (m.type, m.target, m.id, m.sharing, m.mode, m.uid, m.gid, m.from_, m.source) == (
        "cache", "/c", "pip", "locked", 0o700, 1000, 100, "base", "/s")
    assert parse_mount("type=secret,id=t,required").required is True
    assert parse_mount("type=secret,id=t,required=false").required is False
    assert parse_mount("type=tmpfs,target=/t,size=64m").size == "64m"


@pytest.mark.parametrize(("spec", "msg"), [
    ("type=cache,target=/x,readonly=yes", "invalid value for readonly: yes"),
    ("type=bind,target=/x,rw=tRUE", "invalid value for readwrite: tRUE"),
    ("type=secret,id=a,required=2", "invalid value for required: 2"),
    ("type=bind,target=/x,required", "unexpected key 'required' for mount type \"bind\""),
    ("type=cache,target=/x,uid=-1", "invalid value for uid: -1"),
    ("type=cache,target=/x,mode=8", "invalid value for mode: 8"),
    ("type=tmpfs,target=/x,size=lots", "invalid value for size: lots"),
])
def test_bad_values(spec, msg):
    with pytest.raises(MountError) as e:
        parse_mount(spec)
    assert str(e.value) == msg


def test_values_with_variables_wait_for_the_build_then_are_checked():
    assert parse_mount("type=cache,target=/x,readonly=$RO").readonly is False  # not known yet
    expand = {"$RO": "true", "$T": "/t", "$U": "x"}.get
    m = parse_mount("type=cache,target=$T,readonly=$RO", lambda v: expand(v, v))
    assert (m.target, m.readonly) == ("/t", True)
    with pytest.raises(MountError, match="invalid value for uid: x"):
        parse_mount("type=cache,target=/x,uid=$U", lambda v: expand(v, v))


def test_validate_uses_the_same_parser():
    with pytest.raises(grammar.DockerfileError) as e:
        grammar.validate(grammar.parse("FROM x\nRUN --mount=type=bind,target=/m,rw=maybe true\n"))
    assert (e.value.line, e.value.message) == (2, "invalid value for readwrite: maybe")
    grammar.validate(grammar.parse("FROM x\nRUN --mount=type=cache,target=/m,readonly=false,rw=0 true\n"))
