"""builder.users: --chown names resolved in the image's /etc/passwd and /etc/group (BuildKit's
readUser in solver/llbsolver/ops/user_linux.go and llb.WithUser)."""

from __future__ import annotations

import os

import pytest

from builder.errors import BuildError
from builder.users import resolve_chown


@pytest.fixture
def rootfs(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
        "# a comment\n"
        "app:x:1000:1500:App:/home/app:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\nnobody:x:65534:\nstaff:x:50:app\napp:x:1500:\n")
    return tmp_path


@pytest.mark.parametrize("spec,want", [
    ("app", (1000, 1500)),          # user alone: the user's primary group
    ("daemon", (1, 1)),
    ("1000", (1000, 1000)),          # a number alone: gid = uid
    ("root", (0, 0)),
    ("app:staff", (1000, 50)),
    ("1000:nobody", (1000, 65534)),
    ("app:42", (1000, 42)),
    ("42:43", (42, 43)),
    ("app:", (1000, 0)),             # BuildKit today: empty group means gid 0 (buildkit#3555)
])
def test_chown_forms(rootfs, spec, want):
    assert resolve_chown(spec, rootfs) == want


def test_unknown_names_are_one_clear_error(rootfs):
    with pytest.raises(BuildError) as e:
        resolve_chown("ghost", rootfs)
    assert str(e.value) == ("unable to convert uid/gid chown string to host mapping: can't find "
                            "uid for user ghost: no such user: ghost")
    with pytest.raises(BuildError, match="can't find gid for group ghosts: no such group: ghosts"):
        resolve_chown("app:ghosts", rootfs)


def test_lenient_mode_matches_buildkit_silent_root(rootfs):
    assert resolve_chown("ghost", rootfs, strict=False) == (0, 0)
    assert resolve_chown("app:ghosts", rootfs, strict=False) == (1000, 0)


def test_missing_passwd_file_means_no_such_user(tmp_path):
    with pytest.raises(BuildError, match="no such user: app"):
        resolve_chown("app", tmp_path)
    assert resolve_chown("7:8", tmp_path) == (7, 8)


def test_passwd_is_read_inside_the_rootfs(rootfs, tmp_path_factory):
    host = tmp_path_factory.mktemp("host")
    (host / "passwd").write_text("app:x:4242:4242::/:/bin/sh\n")
    real = rootfs / "etc" / "passwd"
    os.rename(real, rootfs / "etc" / "passwd.real")
    os.symlink("/etc/passwd.real", real)           # absolute link: relative to the rootfs
    assert resolve_chown("app", rootfs) == (1000, 1500)
    os.unlink(real)
    os.symlink("../../../../../../.." + str(host / "passwd"), real)
    # the link cannot reach the host file; inside the rootfs it does not exist
    with pytest.raises(BuildError, match="no such user"):
        resolve_chown("app", rootfs)


def test_passwd_that_is_a_fifo_is_an_error_not_a_hang(rootfs):
    import signal
    (rootfs / "etc" / "passwd").unlink()
    os.mkfifo(rootfs / "etc" / "passwd")
    def blocked(*_):
        raise TimeoutError("open() of the fifo blocked")
    old = signal.signal(signal.SIGALRM, blocked)
    signal.alarm(5)  # open() of a fifo with no writer used to block the build for ever
    try:
        with pytest.raises(BuildError, match="/etc/passwd is not a regular file"):
            resolve_chown("app", rootfs)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
