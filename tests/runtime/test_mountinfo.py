"""runtime.mountinfo: mount points read back exactly (escaped characters included), and
unmount_under detaching only below the given dir, deepest first, sparing what keep() names."""
from __future__ import annotations

import subprocess

from rootfs_helpers import requires_root

from runtime import mountinfo

pytestmark = requires_root


def _tmpfs(path):
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(path)], check=True)
    return str(path)


def test_mounts_under_and_unmount_under(tmp_path):
    top = tmp_path / "store"
    top.mkdir()
    odd = _tmpfs(top / "a dir\twith\\odd names")
    nested = _tmpfs(top / "a dir\twith\\odd names" / "inner")
    kept = _tmpfs(top / "kept")
    try:
        assert mountinfo.filesystem_of(nested) == (nested, "tmpfs")
        assert mountinfo.mounts_under(top)[0].mount_point == nested   # deepest first
        assert {m.mount_point for m in mountinfo.mounts_under(top)} == {odd, nested, kept}
        assert mountinfo.mounts_under(top / "kept") == []          # the dir itself is not "under"
        done = mountinfo.unmount_under(top, keep=lambda p: p == kept)
        assert done == [nested, odd]
        assert [m.mount_point for m in mountinfo.mounts_under(top)] == [kept]
    finally:
        for p in (nested, odd, kept):
            subprocess.run(["umount", "-l", p], check=False, capture_output=True)
