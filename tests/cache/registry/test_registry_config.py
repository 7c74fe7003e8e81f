"""registries.conf: prefix rewriting (longest first), mirrors before the registry, blocked,
insecure, drop-ins, v1 lists, and the errors a user's bad file gets."""
from __future__ import annotations

import pytest

from cache.registry import config
from cache.registry.config import Endpoint
from cache.registry.errors import Blocked, RegistryError

CONF = """
unqualified-search-registries = ["quay.io", "docker.io"]

[[registry]]
location = "docker.io"
[[registry.mirror]]
location = "mirror.example:5000/hub"
insecure = true
[[registry.mirror]]
location = "digest-mirror.example"
pull-from-mirror = "digest-only"

[[registry]]
prefix = "example.com/team"
location = "internal.example:8443/team-images"
insecure = true

[[registry]]
prefix = "example.com/team/secret"
location = "example.com/team/secret"
blocked = true

[[registry]]
prefix = "*.corp.example"
insecure = true
"""


@pytest.fixture
def conf(tmp_path):
    p = tmp_path / "registries.conf"
    p.write_text(CONF)
    return config.load(str(p))


def test_no_file_is_an_empty_config_and_docker_io_uses_its_api_host(tmp_path):
    c = config.load(str(tmp_path / "missing.conf"))
    assert c.pull_endpoints("docker.io/library/busybox") == [
        Endpoint("registry-1.docker.io", "library/busybox", False, False)]
    assert c.push_endpoint("127.0.0.1:5000/x/y") == Endpoint("127.0.0.1:5000", "x/y", False, False)
    assert c.push_endpoint("docker.io/library/busybox").name == "docker.io/library/busybox"


def test_env_names_the_file(tmp_path, monkeypatch):
    p = tmp_path / "other.conf"
    p.write_text('[[registry]]\nlocation = "a.example"\ninsecure = true\n')
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(p))
    assert config.load().insecure("a.example")


def test_mirrors_come_first_with_the_prefix_replaced(conf):
    eps = conf.pull_endpoints("docker.io/library/busybox")
    assert eps == [Endpoint("mirror.example:5000", "hub/library/busybox", True, True),
                   Endpoint("registry-1.docker.io", "library/busybox", False, False)]
    by_digest = conf.pull_endpoints("docker.io/library/busybox", by_digest=True)
    assert [e.host for e in by_digest] == ["mirror.example:5000", "digest-mirror.example",
                                           "registry-1.docker.io"]
    assert conf.push_endpoint("docker.io/library/busybox") == eps[-1]   # never a mirror


def test_longest_prefix_wins_and_location_rewrites_the_path(conf):
    ep = conf.push_endpoint("example.com/team/app")
    assert ep == Endpoint("internal.example:8443", "team-images/app", True, False)
    # a prefix only matches at a path boundary
    assert conf.push_endpoint("example.com/teamwork/app") == Endpoint("example.com", "teamwork/app")
    with pytest.raises(Blocked, match="example.com/team/secret is blocked"):
        conf.pull_endpoints("example.com/team/secret/x")
    with pytest.raises(Blocked):
        conf.push_endpoint("example.com/team/secret")


def test_insecure_by_host_and_wildcard(conf):
    assert conf.insecure("internal.example:8443")
    assert conf.insecure("mirror.example:5000")
    assert not conf.insecure("registry-1.docker.io")
    assert conf.push_endpoint("git.corp.example/a/b") == Endpoint("git.corp.example", "a/b", True, False)
    assert not conf.push_endpoint("corp.example/a").insecure


def test_insecure_host_agrees_with_the_endpoint(tmp_path):
    """insecure(host) (what login uses) goes through find(), as Endpoint.insecure does."""
    p = tmp_path / "registries.conf"
    p.write_text(CONF + '[[registry]]\nprefix = "xy.corp.example"\nlocation = "xy.corp.example"\n'
                 '[[registry]]\nlocation = "docker.io"\ninsecure = true\n')
    c = config.load(str(p))
    for host in ("git.corp.example", "a.b.corp.example:5000", "xy.corp.example", "corp.example",
                 "docker.io", "elsewhere.example"):
        assert c.insecure(host) == c.push_endpoint(f"{host}/a/b").insecure, host
    assert c.insecure("git.corp.example") and c.insecure("docker.io") and c.insecure("registry-1.docker.io")
    assert not c.insecure("xy.corp.example")             # its own, longer prefix says secure
    assert c.insecure("internal.example:8443")          # no prefix: an insecure location's host


def test_dropins_replace_by_prefix(tmp_path):
    p = tmp_path / "registries.conf"
    p.write_text('[[registry]]\nlocation = "a.example"\n')
    d = tmp_path / "registries.conf.d"
    d.mkdir()
    (d / "10-a.conf").write_text('[[registry]]\nlocation = "a.example"\nblocked = true\n')
    (d / "README").write_text("not a conf file = [")
    with pytest.raises(Blocked):
        config.load(str(p)).push_endpoint("a.example/x")


def test_v1_lists(tmp_path):
    p = tmp_path / "registries.conf"
    p.write_text('[registries.insecure]\nregistries = ["old.example:5000"]\n'
                 '[registries.block]\nregistries = ["bad.example"]\n')
    c = config.load(str(p))
    assert c.insecure("old.example:5000")
    with pytest.raises(Blocked):
        c.pull_endpoints("bad.example/x")


@pytest.mark.parametrize(("text", "message"), [
    ("[[registry]\nlocation=1", "invalid TOML"),
    ('[[registry]]\nlocation = "a"\ninsecure = "yes"\n', "insecure must be true or false"),
    ('[[registry]]\nprefix = "*.a.example"\nlocation = "b"\n', "wildcard prefix"),
    ('[[registry]]\nlocation = "a"\n[[registry.mirror]]\ninsecure = true\n', "needs a location"),
])
def test_bad_files_are_one_line_errors(tmp_path, text, message):
    p = tmp_path / "registries.conf"
    p.write_text(text)
    with pytest.raises(RegistryError, match=message) as e:
        config.load(str(p))
    assert "\n" not in str(e.value) and str(p) in str(e.value)


def test_loopback():
    for h in ("localhost", "localhost:5000", "127.0.0.1:5000", "127.1.2.3", "[::1]:5000", "::1"):
        assert config.is_loopback(h), h
    for h in ("example.com", "10.0.0.1:5000", "localhost.example.com"):
        assert not config.is_loopback(h), h
