"""`pybuild build` with either snapshotter: the same Dockerfile gives the same image ID (the
config digest, which holds every layer's diff_id) whether RUN/COPY/WORKDIR ran over overlayfs or
over the native snapshotter's copy; and where overlayfs is refused, the build falls back on its
own and says so once."""
import os
import subprocess

import pytest
from e2e_helpers import config_of

FILES = """\
FROM busybox
RUN echo hi > /x && mkdir -p /a/b && echo y > /a/b/c && echo s > /s && mkfifo /ff && mkdir /empty \\
 && printf abc > /m && touch -d @1000 /m
RUN rm /bin/vi && rm -rf /a && mkdir /a && echo z > /a/n && chmod 700 /tmp && chown 1:1 /s \\
 && chmod u+s /s && printf xyz > /m && touch -d @1000 /m
RUN ln /x /x2 && ln -s /x /sym && mv /etc/passwd /etc/pw && mkdir /tmp/new && echo 1 > /tmp/new/f \\
 && mv /tmp/new /etc/app && mv /etc/pw /etc/passwd
WORKDIR /w/x/y
COPY f.txt ./
RUN rm /x2 && rm -r /w/x/y/f.txt && chmod 755 /w
RUN test "$(cat /a/n)" = z && test ! -e /a/b && test ! -e /bin/vi && test -p /ff && test -u /s \\
 && test "$(cat /m)" = xyz && test ! -e /x2 && test "$(cat /etc/app/f)" = 1 && test -d /empty
"""

STAGES = """\
FROM busybox AS base
RUN mkdir -p /opt/app/lib && echo 1 > /opt/app/v && ln -s v /opt/app/current
FROM busybox
COPY --from=base /opt/app /app
WORKDIR /app/data
RUN --mount=type=cache,target=/root/.cache --mount=type=tmpfs,target=/scratch \\
    --mount=type=bind,source=f.txt,target=/ctx/f.txt \\
    cp /ctx/f.txt /app/data/ && echo c > /root/.cache/c && echo t > /scratch/t
USER 1000
RUN id -u > /tmp/who
RUN test "$(cat /app/v)" = 1 && test -L /app/current && test ! -e /ctx && test ! -e /scratch/t
"""


def _build(pybuild, monkeypatch, root, kind: str, ctx, dockerfile: str, *args: str):
    (ctx / "Dockerfile").write_text(dockerfile)
    (ctx / "f.txt").write_text("from the context\n")
    monkeypatch.setenv("PYBUILD_ROOT", str(root))
    if kind == "auto":
        monkeypatch.delenv("PYBUILD_SNAPSHOTTER", raising=False)
    else:
        monkeypatch.setenv("PYBUILD_SNAPSHOTTER", kind)
    return pybuild("build", "--progress", "plain", "-t", "t", *args, str(ctx))


@pytest.mark.parametrize("dockerfile", [FILES, STAGES], ids=["files", "stages"])
def test_same_image_id_with_overlay_and_native(dockerfile, pybuild, monkeypatch, tmp_path,
                                               busybox_root, other_busybox_root):
    ids = {}
    for kind, root in (("overlay", busybox_root), ("native", other_busybox_root)):
        r = _build(pybuild, monkeypatch, root, kind, tmp_path, dockerfile)
        assert r.returncode == 0, r.stderr
        assert "notice" not in r.stderr         # a forced choice needs no notice
        cfg = config_of(pybuild, "t")
        ids[kind] = cfg["_id"]
        assert len(cfg["rootfs"]["diff_ids"]) >= 6
        assert os.listdir(root / "tmp") == []   # no tree or scratch left behind
    assert ids["native"] == ids["overlay"]


def test_pybuild_run_with_the_native_snapshotter(pybuild, monkeypatch, busybox_root):
    monkeypatch.setenv("PYBUILD_SNAPSHOTTER", "native")
    r = pybuild("run", "--rm", "-w", "/made", "busybox", "sh", "-c",
                "pwd; cat /etc/hostname >/dev/null; echo hi > /f; cat /f; exit 3")
    assert (r.returncode, r.stdout) == (3, "/made\nhi\n"), r.stderr
    assert os.listdir(busybox_root / "tmp") == []


def test_a_bad_snapshotter_name_is_one_clear_line(pybuild, monkeypatch, tmp_path, busybox_root):
    r = _build(pybuild, monkeypatch, busybox_root, "btrfs", tmp_path, "FROM busybox\nRUN true\n")
    assert r.returncode == 1
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("pybuild: error:")]
    assert errors == [("pybuild: error: PYBUILD_SNAPSHOTTER='btrfs' is not a snapshotter: use "
                       "overlay, native or auto (the default: overlay where it works)")]
    assert "Traceback" not in r.stderr


@pytest.fixture
def store_on_overlayfs(tmp_path, busybox_root):
    """The busybox store copied onto an overlayfs mount, as a store inside a container's own
    root filesystem is: overlayfs refuses an upper dir there."""
    ovl = tmp_path / "ovl"
    for d in ("l", "u", "w", "m"):
        (ovl / d).mkdir(parents=True)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={ovl}/l,upperdir={ovl}/u,workdir={ovl}/w", str(ovl / "m")], check=True)
    try:
        root = ovl / "m/root"
        subprocess.run(["cp", "-a", str(busybox_root), str(root)], check=True)
        yield root
    finally:
        subprocess.run(["umount", "-l", str(ovl / "m")], check=False)


ADDS_ONLY = """\
FROM busybox
RUN echo one > /one && mkdir -p /opt/x && chmod 700 /opt
WORKDIR /w
COPY f.txt /w/
RUN echo two > /opt/x/two
"""


def test_store_on_overlayfs_falls_back_to_native_once_and_gets_the_same_image(
        pybuild, monkeypatch, tmp_path, busybox_root, store_on_overlayfs):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    r = _build(pybuild, monkeypatch, busybox_root, "overlay", ctx, ADDS_ONLY)
    assert r.returncode == 0, r.stderr
    want = config_of(pybuild, "t")["_id"]
    r = _build(pybuild, monkeypatch, store_on_overlayfs, "auto", ctx, ADDS_ONLY)
    assert r.returncode == 0, r.stderr
    notices = [ln for ln in r.stderr.splitlines() if ln.startswith("pybuild: notice:")]
    assert len(notices) == 1, r.stderr          # four layer steps, one notice
    assert "overlayfs refuses upper dirs on" in notices[0] and "(overlay)" in notices[0]
    assert "using the native snapshotter" in notices[0]
    assert config_of(pybuild, "t")["_id"] == want


def test_store_on_overlayfs_deleting_a_lower_file_is_a_clear_error(
        pybuild, monkeypatch, tmp_path, store_on_overlayfs):
    r = _build(pybuild, monkeypatch, store_on_overlayfs, "auto", tmp_path,
               "FROM busybox\nRUN rm /bin/vi\n")
    assert r.returncode == 1
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("pybuild: error:")]
    assert len(errors) == 1 and "refuses overlay whiteouts" in errors[0]
    assert "put PYBUILD_ROOT on ext4, xfs, btrfs or tmpfs" in errors[0]
    assert "Traceback" not in r.stderr
    assert os.listdir(store_on_overlayfs / "tmp") == []
    assert pybuild("inspect", "t").returncode != 0          # nothing tagged


def test_overlay_stays_the_default_where_it_works(pybuild, monkeypatch, tmp_path, busybox_root):
    r = _build(pybuild, monkeypatch, busybox_root, "auto", tmp_path, "FROM busybox\nRUN true\n")
    assert r.returncode == 0, r.stderr
    assert "notice" not in r.stderr
