"""The run path's hand-written stand-ins for a regex or a dataclass give what those gave: the
mountinfo unescaper and the volume name check on the inputs docker's own tests use (and on
random strings), the spec classes' equality, repr and the Resources dict a record keeps."""
from __future__ import annotations

import random
import re

import pytest

from runtime.containers.names import valid_name
from runtime.mountinfo import MountEntry, unescape
from runtime.spec import Mount, Resources, SandboxSpec

_ESCAPE = re.compile(r"\\([0-7]{3})")      # what runtime.mountinfo used


def _re_unescape(field: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


# moby/sys/mountinfo's TestUnescape inputs (its error cases are left as they are, here and before)
MOUNTINFO_FIELDS = [
    "", "/", "/some/longer/path", "/path\\040with\\040spaces", "/path/with\\134backslash",
    "/tab\\011in/path", "/path/\"with'quotes", "/path/\"with'quotes,\\040space,\\011tab",
    "\\12", "\\134", "\"'\"'\"'", "/\\1345", "/\\12x", "\\0", "\\x", "\\\\", "\\\\040",
    "\\0400", "a\\", "\\777", "\\08a", "\\\\\\040",
]


@pytest.mark.parametrize("field", MOUNTINFO_FIELDS)
def test_unescape_as_the_regex_did(field):
    assert unescape(field) == _re_unescape(field)


def test_unescape_as_the_regex_did_on_random_fields():
    rnd = random.Random(7)
    alphabet = "\\0123456789a /\n\t٣"
    for _ in range(20000):
        s = "".join(rnd.choice(alphabet) for _ in range(rnd.randrange(12)))
        assert unescape(s) == _re_unescape(s), s


_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")   # docker's RestrictedNamePattern (fullmatch:
# Go's `$` is the end of the text; Python's re.match with `$` also took "ab\n")

# moby's volume/local TestValidateName, and edges of the pattern
VOLUME_NAMES = ["x", "/testvol", "thing.d", "hello-world", "./hello", ".hello", "ab", "a", "",
                "a_b", "_ab", "-ab", "a-", "ab\n", "a\n", "ab\n\n", "\nab", "a b", "é1", "1é",
                "a٣", "٣a", "0.0", "a/b", "a:b"]


@pytest.mark.parametrize("name", VOLUME_NAMES)
def test_volume_and_container_names_as_docker_s_pattern_takes_them(name):
    assert valid_name(name) == bool(_NAME.fullmatch(name))


def test_volume_names_as_the_pattern_takes_them_on_random_names():
    rnd = random.Random(11)
    alphabet = "aZ09_.-/ \n:é٣"
    for _ in range(20000):
        s = "".join(rnd.choice(alphabet) for _ in range(rnd.randrange(6)))
        assert valid_name(s) == bool(_NAME.fullmatch(s)), repr(s)


def test_spec_classes_compare_and_show_field_by_field():
    assert Mount("/a", source="/s") == Mount(target="/a", type="bind", source="/s")
    assert Mount("/a") != Mount("/b") and Mount("/a") != "/a"
    assert repr(Mount("/m", "tmpfs", options=["size=1m"])) == \
        "Mount(target='/m', type='tmpfs', source='', readonly=False, options=['size=1m'])"
    assert SandboxSpec().argv == [] and SandboxSpec().argv is not SandboxSpec().argv
    assert SandboxSpec(argv=["true"], mounts=[Mount("/x")]) == \
        SandboxSpec(argv=["true"], mounts=[Mount("/x")])
    e = MountEntry(1, "/m", "tmpfs", "none")
    assert e == MountEntry(1, "/m", "tmpfs", "none") and len({e, MountEntry(1, "/m", "tmpfs", "none")}) == 1


def test_resources_dict_is_what_a_record_kept_and_makes_them_again():
    """`dataclasses.asdict(resources)` was the record's form: the same keys, order and values;
    a record kept before the later limits (cpu_period...) existed makes them again too."""
    old = {"memory": 32 << 20, "memory_swap": -1, "nano_cpus": 500_000_000, "cpu_shares": 512,
           "pids_limit": 7}
    r = Resources(**old)
    d = r.to_dict()
    assert list(d.items()) == [*old.items(), ("cpu_period", 0), ("cpu_quota", 0),
                               ("memory_reservation", 0), ("cpuset_cpus", ""), ("cpuset_mems", ""),
                               ("memory_swappiness", -1), ("oom_kill_disable", False)]
    assert Resources(**d) == r and Resources(**Resources().to_dict()) == Resources()
    assert not Resources().any() and r.any()
