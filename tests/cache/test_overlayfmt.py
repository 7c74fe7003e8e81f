"""cache.overlayfmt: a process reads and writes only its own spelling of overlay's opaque
marker, and overlay's own xattrs are never layer content."""
from __future__ import annotations

import io
import os
import tarfile

import pytest
from fs_probe import XATTR_REASON, xattrs_supported

from cache import overlayfmt
from cache.layers import write_tar

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the root spelling (trusted.*) needs root"),
    pytest.mark.skipif(os.geteuid() == 0 and not xattrs_supported("user.x", "trusted.x"),
                       reason=XATTR_REASON),
]


def _set(path, name) -> None:
    os.setxattr(path, name, b"y")


def test_as_root_only_trusted_overlay_opaque_is_an_opaque_marker(tmp_path):
    (tmp_path / "user").mkdir()
    (tmp_path / "real").mkdir()
    _set(tmp_path / "user", "user.overlay.opaque")   # anyone can set this on their own files
    _set(tmp_path / "real", "trusted.overlay.opaque")
    assert overlayfmt.opaque_xattr() == "trusted.overlay.opaque"
    assert not overlayfmt.is_opaque(tmp_path / "user")
    assert overlayfmt.is_opaque(tmp_path / "real")
    overlayfmt.clear_opaque(tmp_path / "user")         # leaves the user's xattr alone
    assert os.getxattr(tmp_path / "user", "user.overlay.opaque") == b"y"


def test_a_user_overlay_xattr_in_a_layer_dir_is_neither_a_marker_nor_content(tmp_path):
    d = tmp_path / "layer"
    (d / "etc").mkdir(parents=True)
    _set(d / "etc", "user.overlay.opaque")
    _set(d / "etc", "user.note")
    buf = io.BytesIO()
    write_tar(d, buf)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tf:
        members = tf.getmembers()
    assert [m.name for m in members] == ["etc"]
    assert {k for k in members[0].pax_headers if k.startswith("SCHILY.")} == {"SCHILY.xattr.user.note"}


@pytest.mark.parametrize("name,kept", [("user.overlay.opaque", False), ("user.overlay.x", False),
                                       ("trusted.overlay.opaque", False), ("user.note", True),
                                       ("security.capability", True), ("trusted.foo", False)])
def test_layer_xattr_is_the_one_rule(name, kept):
    assert overlayfmt.layer_xattr(name) is kept
