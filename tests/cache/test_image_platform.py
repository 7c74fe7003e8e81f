"""The platform of an image config, one rule for all (cache.platform): a config naming no
architecture gets this machine's architecture and variant (FROM scratch, a stage inheriting
such a base), and the platform an index or manifest list gives a config is normalised as
containerd does."""
from __future__ import annotations

import pytest

from builder import imageconfig
from cache import image, platform


@pytest.fixture
def arm_host(monkeypatch):
    monkeypatch.setattr(platform, "host", lambda: {"os": "linux", "architecture": "arm",
                                                   "variant": "v7"})


def test_a_base_without_architecture_gets_the_hosts_variant_too(arm_host):
    cfg = imageconfig.inherit({"config": {}})
    assert (cfg["os"], cfg["architecture"], cfg.get("variant")) == ("linux", "arm", "v7")
    assert {k: cfg[k] for k in ("os", "architecture", "variant")} == \
        {k: image.new_config()[k] for k in ("os", "architecture", "variant")}


def test_a_base_naming_its_platform_keeps_it(arm_host):
    cfg = imageconfig.inherit({"architecture": "arm64", "os": "linux", "config": {}})
    assert (cfg["architecture"], "variant" in cfg) == ("arm64", False)


def test_platform_of_is_normalised_and_defaults_to_this_machine(arm_host):
    assert image.platform_of({"architecture": "aarch64", "variant": "v8", "os": "linux"}) == \
        {"os": "linux", "architecture": "arm64"}
    assert image.platform_of({"architecture": "x86_64"}) == {"os": "linux", "architecture": "amd64"}
    assert image.platform_of({"os": "linux"}) == {"os": "linux", "architecture": "arm", "variant": "v7"}
