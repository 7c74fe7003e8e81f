"""A registry that speaks TLS with a certificate no system CA signed: pybuild refuses it in one
line that says what to do, talks to it with `--tls-verify=false`, and trusts it once its CA is
in /etc/containers/certs.d/<host>/ as podman and skopeo read it."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from registry_fixture import run_registry

CERTS_D = Path("/etc/containers/certs.d")


@pytest.fixture
def tls_registry(tmp_path):
    with run_registry(tmp_path / "tls-registry", tls=True) as reg:
        yield reg


def test_untrusted_certificate_then_tls_verify_false_then_certs_d(tls_registry, busybox_root,
                                                                 pybuild, tmp_path, monkeypatch):
    reg = tls_registry
    ref = f"{reg.host}/tls/busybox:1"
    assert pybuild("tag", "busybox", ref).returncode == 0
    r = pybuild("push", ref)
    assert r.returncode == 1
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("pybuild: error: ") and "not trusted" in line, r.stderr
    assert f"/etc/containers/certs.d/{reg.host}/ca.crt" in line and "--tls-verify=false" in line
    r = pybuild("push", "--tls-verify=false", ref)
    assert r.returncode == 0, r.stderr
    monkeypatch.setenv("PYBUILD_ROOT", str(tmp_path / "other"))
    d = CERTS_D / reg.host  # its own port: no other registry's dir
    d.mkdir(parents=True)
    try:
        shutil.copy(reg.ca, d / "ca.crt")
        r = pybuild("pull", ref)
        assert r.returncode == 0, r.stderr
        assert pybuild("run", "--rm", ref, "echo", "over tls").stdout == "over tls\n"
    finally:
        shutil.rmtree(d)
