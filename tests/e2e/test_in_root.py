"""Symlinks in an image never lead a build outside it: every path the build resolves inside a
stage or an image goes through cache.fspath's in-root walk (COPY --from sources, RUN --mount
bind sources, --chown names looked up in the image's /etc/passwd)."""
import os
import uuid

import pytest
from e2e_helpers import build

pytestmark = [pytest.mark.usefixtures("busybox_root"),
              pytest.mark.skipif(os.geteuid() != 0, reason="builds need root")]


def test_copy_from_a_stage_whose_symlink_points_at_root(tmp_path, pybuild):
    marker = f"host-only-{uuid.uuid4().hex}"
    host = tmp_path / marker
    host.write_text("host secret\n")
    _cfg, fs = build(pybuild, tmp_path, f"""\
FROM busybox AS s
RUN ln -s / /escape && mkdir -p {tmp_path} && echo stage > {tmp_path}/{marker}
FROM busybox
COPY --from=s /escape{tmp_path}/{marker} /got
""")
    with fs() as root:
        assert (root / "got").read_text() == "stage\n"  # the stage's file, not the host's


def test_bind_mount_source_through_a_symlink_to_root_stays_in_the_stage(tmp_path, pybuild):
    """RUN --mount=type=bind,from=<stage>,source=escape/x with escape -> / binds the stage's
    /x; it used to bind the host's /x (the source was only cleaned lexically)."""
    marker = f"pb-{uuid.uuid4().hex[:12]}"
    os.mkdir(f"/tmp/{marker}")
    try:
        with open(f"/tmp/{marker}/f", "w") as f:
            f.write("host\n")
        _cfg, fs = build(pybuild, tmp_path, f"""\
FROM busybox AS s
RUN ln -s / /escape && mkdir -p /tmp/{marker} && echo stage > /tmp/{marker}/f
FROM busybox
RUN --mount=type=bind,from=s,source=escape/tmp/{marker},target=/m cat /m/f > /seen
""")
        with fs() as root:
            assert (root / "seen").read_text() == "stage\n"
    finally:
        os.unlink(f"/tmp/{marker}/f")
        os.rmdir(f"/tmp/{marker}")


def test_chown_name_through_a_symlinked_passwd_is_looked_up_in_the_image(tmp_path, pybuild):
    """/etc/passwd -> an absolute path: read inside the image (where it names a user the
    host's file does not have), never the host's file of that name."""
    hostfile = tmp_path / "passwd"
    hostfile.write_text("intruder:x:4242:4242::/:/bin/sh\n")
    (tmp_path / "f.txt").write_text("x")
    _cfg, fs = build(pybuild, tmp_path, f"""\
FROM busybox
RUN mkdir -p {tmp_path} && echo 'insider:x:777:778::/:/bin/sh' > {hostfile} \\
 && ln -sf {hostfile} /etc/passwd
COPY --chown=insider f.txt /f.txt
""")
    with fs() as root:
        st = os.lstat(root / "f.txt")
        assert (st.st_uid, st.st_gid) == (777, 778)
    (tmp_path / "Dockerfile").write_text(f"""\
FROM busybox
RUN ln -sf {hostfile} /etc/passwd
COPY --chown=intruder f.txt /f.txt
""")
    r = pybuild("build", "--progress", "plain", str(tmp_path))
    assert r.returncode != 0 and "no such user: intruder" in r.stderr, r.stderr
