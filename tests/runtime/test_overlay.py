"""runtime.snapshotter.mounted over overlayfs: merged views in this process's mount namespace, as
the builder's COPY uses."""
from __future__ import annotations

import errno
import os

import pytest
from rootfs_helpers import requires_root

from runtime.errors import SandboxError
from runtime.mountinfo import mounts
from runtime.snapshotter import mounted

pytestmark = requires_root


def _layer(d, files: dict[str, str]):
    for name, text in files.items():
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    d.mkdir(exist_ok=True)
    return d


def _mounted_at(path) -> bool:
    return any(m.mount_point == str(path) for m in mounts())


def test_read_only_view_top_first(tmp_path):
    top = _layer(tmp_path / "top", {"a": "top"})
    low = _layer(tmp_path / "low", {"a": "low", "b": "low"})
    with mounted([top, low]) as m:
        assert (m / "a").read_text() == "top" and (m / "b").read_text() == "low"
        with pytest.raises(OSError) as e:
            (m / "c").write_text("x")
        assert e.value.errno == errno.EROFS
        where = m
    assert not _mounted_at(where) and not where.exists()


def test_single_lower_read_only(tmp_path):
    only = _layer(tmp_path / "only", {"f": "1"})
    with mounted([only]) as m:
        assert sorted(os.listdir(m)) == ["f"]


def test_whiteouts_and_opaque_dirs_in_lowers_apply(tmp_path):
    low = _layer(tmp_path / "low", {"gone": "x", "d/old": "x", "keep": "k"})
    top = tmp_path / "top"
    (top / "d").mkdir(parents=True)
    os.mknod(top / "gone", 0o600 | 0o020000, os.makedev(0, 0))
    os.setxattr(top / "d", "trusted.overlay.opaque", b"y")
    (top / "d/new").write_text("n")
    with mounted([top, low]) as m:
        assert sorted(os.listdir(m)) == ["d", "keep"]
        assert os.listdir(m / "d") == ["new"]


def test_upper_receives_writes_and_deletions(tmp_path):
    low = _layer(tmp_path / "low", {"f": "x"})
    up = tmp_path / "up"
    up.mkdir()
    with mounted([low], up) as m:
        (m / "new").write_text("n")
        os.unlink(m / "f")
    assert sorted(os.listdir(up)) == ["f", "new"]
    assert os.lstat(up / "f").st_rdev == os.makedev(0, 0)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".work-")]


def test_upper_only(tmp_path):
    up = _layer(tmp_path / "up", {"x": "1"})
    with mounted([], up) as m:
        assert os.listdir(m) == ["x"]
        (m / "y").write_text("2")
    assert sorted(os.listdir(up)) == ["x", "y"]


def test_many_layers_with_long_paths(tmp_path):
    """Beyond a page of legacy mount options: 120 layers with 64-hex-char names."""
    layers = []
    for i in range(120):
        d = tmp_path / "layers" / f"{i:064x}"
        _layer(d, {f"f{i}": str(i)})
        layers.append(d)
    assert len(":".join(map(str, layers))) > 4096
    with mounted(list(reversed(layers))) as m:
        assert len(os.listdir(m)) == 120 and (m / "f7").read_text() == "7"


def test_missing_layer_is_a_clear_error(tmp_path):
    with pytest.raises(SandboxError, match="layer dir .*nope is missing"), \
            mounted([tmp_path / "nope", tmp_path]):
        pass


def test_the_same_layer_twice_in_a_stack_mounts(tmp_path):
    """Two steps that changed nothing both carry the empty layer: the stack must still mount."""
    from runtime.snapshotter import mounted

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (b / "f").write_text("b")
    with mounted([a, b, a]) as root:
        assert (root / "f").read_text() == "b"
