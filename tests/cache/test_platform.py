"""The one host -> OCI platform mapping (Go's GOARCH names, containerd's normalisation), and
that every writer of a platform uses it."""
from __future__ import annotations

import pytest

from cache import image as im
from cache import platform


@pytest.mark.parametrize("machine,want", [
    ("x86_64", "linux/amd64"), ("amd64", "linux/amd64"),
    ("i386", "linux/386"), ("i686", "linux/386"),
    ("aarch64", "linux/arm64"), ("arm64", "linux/arm64"),
    ("armv7l", "linux/arm/v7"), ("armv6l", "linux/arm/v6"), ("armv5tel", "linux/arm/v5"),
    ("armv8l", "linux/arm/v8"),
    ("ppc64le", "linux/ppc64le"), ("s390x", "linux/s390x"), ("riscv64", "linux/riscv64"),
    ("loongarch64", "linux/loong64"), ("mips64", "linux/mips64le"),
])
def test_machine_to_platform(machine, want):
    assert platform.to_string(platform.from_machine(machine, "little")) == want


@pytest.mark.parametrize("arch,variant,want", [
    ("aarch64", "v8", ("arm64", "")), ("arm64", "8", ("arm64", "")), ("arm64", "v9.0", ("arm64", "v9")),
    ("arm", "", ("arm", "v7")), ("arm", "6", ("arm", "v6")), ("armhf", "", ("arm", "v7")),
    ("armel", "", ("arm", "v6")), ("x86_64", "v1", ("amd64", "")), ("i386", "", ("386", "")),
    ("AMD64", "", ("amd64", "")),
])
def test_normalize_like_containerd(arch, variant, want):
    assert platform.normalize(arch, variant) == want


def test_matches_spellings_of_one_platform():
    arm7 = platform.from_machine("armv7l")
    assert platform.matches({"os": "linux", "architecture": "arm", "variant": "v7"}, arm7)
    assert platform.matches({"os": "linux", "architecture": "arm"}, arm7)  # bare arm is v7
    assert not platform.matches({"os": "linux", "architecture": "arm", "variant": "v6"}, arm7)
    assert not platform.matches({"os": "windows", "architecture": "arm"}, arm7)
    assert platform.matches({"os": "linux", "architecture": "arm64", "variant": "v8"},
                            platform.from_machine("aarch64"))


def test_configs_carry_the_host_platform_with_its_variant(monkeypatch):
    """The config of FROM scratch, of an import and of the busybox fixture (all made by
    cache.image.new_config), and the build's platform args, all say linux/arm/v7 on armv7l:
    four places used to map it, two of them to plain `arm`."""
    from builder import imageconfig, plan
    monkeypatch.setattr(platform, "_host", lambda: tuple(platform.from_machine("armv7l").items()))
    cfg = im.new_config()
    assert (cfg["os"], cfg["architecture"], cfg["variant"]) == ("linux", "arm", "v7")
    scratch = imageconfig.scratch_config()
    assert (scratch["architecture"], scratch["variant"]) == ("arm", "v7")
    args = plan.builtin_args("")
    assert args["TARGETPLATFORM"] == "linux/arm/v7" and args["TARGETVARIANT"] == "v7"
    assert args["TARGETARCH"] == "arm"


@pytest.mark.parametrize("spec,want", [
    ("linux", {"os": "linux"}),
    ("linux/amd64", {"os": "linux", "architecture": "amd64"}),
    ("Linux/x86_64", {"os": "linux", "architecture": "amd64"}),
    ("linux/arm64/v8", {"os": "linux", "architecture": "arm64"}),
    ("linux/arm", {"os": "linux", "architecture": "arm", "variant": "v7"}),
    ("linux/arm/v6", {"os": "linux", "architecture": "arm", "variant": "v6"}),
])
def test_parse_as_docker_users_write_platforms(spec, want):
    assert platform.parse(spec) == want


@pytest.mark.parametrize("spec", ["", "/", "linux/", "linux//v7", "a/b/c/d"])
def test_parse_refuses_malformed_platforms(spec):
    with pytest.raises(ValueError, match="expected os"):
        platform.parse(spec)
