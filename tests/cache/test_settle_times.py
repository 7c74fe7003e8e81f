"""write_tar(settle=True), what a commit does to a built layer dir: every entry gets the mtime its
tar header has (whole seconds, clamped to the epoch), links are not followed, whiteouts are left,
and the fingerprint it returns is the dir's as it is afterwards (so a save needs no re-hash)."""
from __future__ import annotations

import io
import os
import tarfile

from cache.layers import fingerprint, write_tar

EPOCH = 1700000000


def _tree(d):
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "new").write_text("new\n")                      # now: clamped
    (d / "old").write_text("old\n")
    os.utime(d / "old", ns=(1_600_000_000_700_000_000,) * 2)     # before the epoch: kept, whole s
    os.link(d / "old", d / "hard")
    os.symlink("/nowhere/at/all", d / "dangling")
    os.mknod(d / "gone", 0o20000 | 0o600, os.makedev(0, 0))     # an overlay whiteout
    os.utime(d / "gone", ns=(5_000_000_000_123,) * 2)
    return d


def test_dir_times_become_the_tar_times_and_the_fingerprint_is_the_new_one(tmp_path):
    d = _tree(tmp_path / "u")
    buf = io.BytesIO()
    want = write_tar(d, buf, epoch=EPOCH)
    got = write_tar(d, None, epoch=EPOCH, settle=True)
    assert got.diff_id == want.diff_id  # the same tar before and after
    assert got.fingerprint == fingerprint(d)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as t:
        tar_times = {m.name.rstrip("/"): int(m.mtime) for m in t}
    for name in ("sub", "sub/new", "old", "hard", "dangling"):
        assert os.lstat(d / name).st_mtime_ns == tar_times[name] * 1_000_000_000, name
    assert tar_times["sub/new"] == EPOCH and tar_times["old"] == 1600000000
    assert os.lstat(d / "gone").st_mtime_ns == 5_000_000_000_123  # the whiteout is left alone
    again = write_tar(d, None, epoch=EPOCH, settle=True)  # nothing left to change
    assert again.fingerprint == got.fingerprint == fingerprint(d)


def test_no_epoch_keeps_real_times_to_the_second(tmp_path):
    d = _tree(tmp_path / "u")
    before = os.lstat(d / "sub" / "new").st_mtime_ns
    write_tar(d, None, epoch=None, settle=True)
    assert os.lstat(d / "sub" / "new").st_mtime_ns == before // 1_000_000_000 * 1_000_000_000
