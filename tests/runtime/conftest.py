"""Fixtures for the runtime tests: a busybox rootfs made from the host's busybox-static.

The tests use real namespaces, real overlayfs and real mounts, so they need root and overlay
support; they skip with a reason otherwise.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from rootfs_helpers import make_busybox_rootfs


@pytest.fixture(scope="session")
def busybox_layer(tmp_path_factory) -> Path:
    """A read-only-by-convention base layer shared by the whole session (tests never write it)."""
    return make_busybox_rootfs(tmp_path_factory.mktemp("busybox") / "layer")


@pytest.fixture
def upper(tmp_path) -> tuple[Path, Path]:
    u, w = tmp_path / "upper", tmp_path / "work"
    u.mkdir()
    w.mkdir()
    return u, w
