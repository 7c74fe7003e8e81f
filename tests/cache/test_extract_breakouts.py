"""Layer extraction cannot write outside its root: containerd's TestBreakouts list
(pkg/archive/tar_test.go), one test per case, applied in "apply" mode (layers flattened onto one
rootfs, the mode where an earlier layer's symlink can be written through), plus the overlay-mode
conversions of whiteouts and the device-node rule.

Every test also checks that nothing appeared next to the root (a sentinel dir around it)."""
from __future__ import annotations

import io
import os
import stat
import tarfile

import pytest

from cache.errors import StoreError
from cache.layers import extract


def tar_of(*entries) -> bytes:
    """Entries: ("dir", name, mode) | ("file", name, data, mode) | ("sym", target, name) |
    ("link", target, name)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            kind = e[0]
            if kind == "dir":
                ti = tarfile.TarInfo(e[1])
                ti.type, ti.mode = tarfile.DIRTYPE, e[2]
                tf.addfile(ti)
            elif kind == "file":
                ti = tarfile.TarInfo(e[1])
                ti.size, ti.mode = len(e[2]), e[3]
                tf.addfile(ti, io.BytesIO(e[2]))
            elif kind == "sym":
                ti = tarfile.TarInfo(e[2])
                ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, e[1], 0o777
                tf.addfile(ti)
            elif kind == "link":
                ti = tarfile.TarInfo(e[2])
                ti.type, ti.linkname = tarfile.LNKTYPE, e[1]
                tf.addfile(ti)
            elif kind == "chr":
                ti = tarfile.TarInfo(e[1])
                ti.type, ti.devmajor, ti.devminor, ti.mode = tarfile.CHRTYPE, e[2], e[3], 0o666
                tf.addfile(ti)
    return buf.getvalue()


@pytest.fixture
def box(tmp_path):
    """(root, outside): the extraction root inside a sentinel dir we can watch."""
    outside = tmp_path / "outside"
    root = outside / "root"
    root.mkdir(parents=True)
    (outside / "canary").write_text("canary")
    os.chmod(outside / "canary", 0o400)
    yield root, outside
    after = sorted(p.name for p in outside.iterdir())
    assert after == ["canary", "root"], f"something was written outside the root: {after}"
    assert (outside / "canary").read_text() == "canary"
    assert stat.S_IMODE((outside / "canary").stat().st_mode) == 0o400


def apply(root, data: bytes):
    return extract(io.BytesIO(data), root, whiteouts="apply")


def setup(root, *entries):
    apply(root, tar_of(*entries))


def read(root, rel):
    return (root / rel).read_bytes()


def in_root(root, rel):
    """Resolve `rel` the way a container sees it: symlinks followed with root as `/`."""
    parts = [p for p in rel.split("/") if p]
    cur = root
    hops = 0
    while parts:
        p = parts.pop(0)
        if p == "..":
            cur = cur.parent if cur != root else root
            continue
        nxt = cur / p
        if nxt.is_symlink():
            hops += 1
            assert hops < 40
            t = os.readlink(nxt)
            parts[:0] = [x for x in t.split("/") if x]
            cur = root if t.startswith("/") else cur
            continue
        cur = nxt
    return cur


def same_file(root, a, b) -> bool:
    return os.path.samefile(in_root(root, a), in_root(root, b))


U = b"unbroken"


def test_symlink_absolute(box):
    root, _ = box
    apply(root, tar_of(("dir", "etc", 0o755), ("sym", "/etc", "localetc"),
                       ("file", "/localetc/unbroken", U, 0o644)))
    assert read(root, "etc/unbroken") == U


def test_symlink_up_and_out(box):
    root, _ = box
    apply(root, tar_of(("dir", "etc", 0o755), ("dir", "dummy", 0o755),
                       ("sym", "/dummy/../etc", "localetc"), ("file", "/localetc/unbroken", U, 0o644)))
    assert read(root, "etc/unbroken") == U


def test_symlink_multiple_absolute(box):
    root, _ = box
    apply(root, tar_of(("dir", "etc", 0o755), ("dir", "dummy", 0o755), ("sym", "/etc", "/dummy/etc"),
                       ("sym", "/dummy/etc", "localetc"), ("file", "/dummy/etc/unbroken", U, 0o644)))
    assert read(root, "etc/unbroken") == U


def test_symlink_multiple_relative(box):
    root, _ = box
    apply(root, tar_of(("dir", "etc", 0o755), ("dir", "dummy", 0o755), ("sym", "/etc", "/dummy/etc"),
                       ("sym", "./dummy/etc", "localetc"), ("file", "/dummy/etc/unbroken", U, 0o644)))
    assert read(root, "etc/unbroken") == U


def test_symlink_empty_file(box):
    root, _ = box
    apply(root, tar_of(("dir", "etc", 0o755), ("file", "etc/emptied", b"notempty", 0o644),
                       ("sym", "/etc", "localetc"), ("file", "/localetc/emptied", b"", 0o644)))
    assert read(root, "etc/emptied") == b""


@pytest.mark.parametrize("target,extra", [
    ("../../etc", []),                        # HardlinkRelative
    ("../downandout/../../etc", ["downandout"]),  # HardlinkDownAndOut
])
def test_hardlink_through_relative_symlink(box, target, extra):
    root, _ = box
    apply(root, tar_of(("dir", "etc", 0o770), ("file", "/etc/passwd", b"inside", 0o644),
                       ("dir", "breakouts", 0o755), *[("dir", d, 0o755) for d in extra],
                       ("sym", target, "breakouts/d1"),
                       ("link", "/breakouts/d1/passwd", "breakouts/mypasswd")))
    assert same_file(root, "breakouts/mypasswd", "etc/passwd")


@pytest.mark.parametrize("target", ["/etc", "../../../../../../../etc", "upandout/../../../etc"])
def test_hardlink_through_symlink_absolute_long_upandout(box, target):
    root, _ = box  # HardlinkAbsolute, HardlinkRelativeLong, HardlinkRelativeUpAndOut
    apply(root, tar_of(("dir", "etc", 0o770), ("file", "/etc/passwd", b"inside", 0o644),
                       ("sym", target, "localetc"), ("link", "/localetc/passwd", "localpasswd")))
    assert same_file(root, "localpasswd", "etc/passwd")


@pytest.mark.parametrize("target", ["../../../../../etc/passwd", "/etc/passwd"])
def test_hardlink_direct(box, target):
    root, _ = box  # HardlinkDirectRelative, HardlinkDirectAbsolute
    apply(root, tar_of(("dir", "etc", 0o770), ("file", "/etc/passwd", b"inside", 0o644),
                       ("link", target, "localpasswd")))
    assert same_file(root, "localpasswd", "etc/passwd")


@pytest.mark.parametrize("name", ["..", ""])
def test_symlink_named_parent_or_empty_is_ignored(box, name):
    root, _ = box  # SymlinkParentDirectory, SymlinkEmptyFilename
    apply(root, tar_of(("dir", "etc", 0o770), ("file", "/etc/passwd", b"inside", 0o644),
                       ("sym", "/etc/", name), ("link", "/etc/passwd", "localpasswd")))
    assert same_file(root, "localpasswd", "etc/passwd")
    assert not root.is_symlink()


def test_symlink_parent_relative(box):
    root, _ = box
    apply(root, tar_of(("dir", "etc", 0o770), ("file", "/etc/passwd", b"inside", 0o644),
                       ("sym", "/etc/", "localetc/sub/.."), ("link", "/etc/passwd", "/localetc/localpasswd")))
    assert same_file(root, "localetc/localpasswd", "etc/passwd")


def test_symlink_slash_ended(box):
    root, _ = box
    apply(root, tar_of(("dir", "etc", 0o770), ("file", "/etc/passwd", b"inside", 0o644),
                       ("dir", "localetc/", 0o770), ("link", "/etc/passwd", "/localetc/localpasswd")))
    assert same_file(root, "localetc/localpasswd", "etc/passwd")


@pytest.mark.parametrize("target", ["/etc", "../../etc"])
def test_symlink_override_directory(box, target):
    root, _ = box  # SymlinkOverrideDirectory(Relative): a later layer replaces a dir by a symlink
    setup(root, ("dir", "etc", 0o755), ("file", "etc/passwd", b"inside", 0o644), ("dir", "localetc", 0o755))
    apply(root, tar_of(("sym", target, "localetc"), ("link", "/etc/passwd", "/localetc/localpasswd")))
    assert (root / "localetc").is_symlink()
    assert same_file(root, "localetc/localpasswd", "etc/passwd")


def test_directory_override_symlink(box):
    root, _ = box  # an earlier layer's symlink is replaced by a dir, not written through
    setup(root, ("dir", "etc", 0o755), ("file", "etc/passwd", b"inside", 0o644), ("sym", "/etc", "localetc"))
    apply(root, tar_of(("dir", "/localetc/", 0o755), ("link", "/etc/passwd", "/localetc/localpasswd")))
    assert (root / "localetc").is_dir() and not (root / "localetc").is_symlink()
    assert same_file(root, "localetc/localpasswd", "etc/passwd")


def test_directory_override_symlink_and_hardlink(box):
    root, _ = box
    setup(root, ("dir", "etc", 0o755), ("file", "etc/passwd", b"inside", 0o644), ("sym", "etc", "localetc"),
          ("link", "/etc/passwd", "/localetc/localpasswd"))
    apply(root, tar_of(("dir", "/localetc/", 0o755), ("file", "/localetc/localpasswd", b"different", 0o644)))
    assert not same_file(root, "localetc/localpasswd", "etc/passwd")
    assert read(root, "etc/passwd") == b"inside"


def test_symlink_from_earlier_layer_written_through_stays_inside(box):
    root, outside = box  # layer 1: link -> .. (outside); layer 2 writes through it
    setup(root, ("sym", "../..", "escape"), ("sym", str(outside), "abs"))
    apply(root, tar_of(("file", "escape/pwned", b"x", 0o644), ("file", "abs/pwned2", b"x", 0o644)))
    assert read(root, "pwned") == b"x"
    assert (root / str(outside).lstrip("/") / "pwned2").read_bytes() == b"x"


@pytest.mark.parametrize("name", [".wh...", "etc/.wh...", ".wh..", "etc/.wh.."])
def test_whiteout_of_parent_root_or_current_dir_is_rejected(box, name):
    root, _ = box  # WhiteoutRootParent, WhiteoutParent, WhiteoutRoot, WhiteoutCurrentDirectory
    setup(root, ("dir", "etc", 0o755), ("file", "etc/passwd", b"inside", 0o644))
    with pytest.raises(StoreError, match="invalid whiteout"):
        apply(root, tar_of(("file", name, b"", 0o644)))
    assert read(root, "etc/passwd") == b"inside"


def test_whiteout_symlink_removes_only_the_link(box):
    root, _ = box
    setup(root, ("dir", "etc", 0o755), ("file", "etc/passwd", b"all users", 0o644),
          ("sym", "/etc", "localetc"))
    apply(root, tar_of(("file", ".wh.localetc", b"", 0o644)))
    assert read(root, "etc/passwd") == b"all users"
    assert not os.path.lexists(root / "localetc")


def test_whiteout_symlink_path_resolves_in_root(box):
    root, _ = box
    setup(root, ("dir", "etc", 0o755), ("file", "etc/passwd", b"all users", 0o644),
          ("file", "etc/whitedout", b"ahhhh whiteout", 0o644), ("sym", "/etc", "localetc"))
    apply(root, tar_of(("file", "localetc/.wh.whitedout", b"", 0o644)))
    assert read(root, "etc/passwd") == b"all users"
    assert not (root / "etc/whitedout").exists()


def test_whiteout_directory_name_is_a_plain_path(box):
    root, _ = box
    setup(root, ("dir", "etc", 0o755), ("file", "etc/passwd", b"all users", 0o644))
    apply(root, tar_of(("file", ".wh.etc/somefile", b"non-empty", 0o644)))
    assert read(root, "etc/passwd") == b"all users"
    assert read(root, ".wh.etc/somefile") == b"non-empty"


def test_whiteout_dead_symlink_parent_is_a_no_op(box):
    root, _ = box
    setup(root, ("dir", "etc", 0o755), ("file", "etc/passwd", b"all users", 0o644),
          ("sym", "/dne", "localetc"))
    apply(root, tar_of(("file", "localetc/.wh.etc", b"", 0o644)))
    assert read(root, "etc/passwd") == b"all users"


def test_whiteout_relative_path_is_cleaned(box):
    root, _ = box
    setup(root, ("dir", "etc", 0o755), ("file", "etc/passwd", b"all users", 0o644),
          ("sym", "/dne", "localetc"))
    apply(root, tar_of(("file", "dne/../.wh.etc", b"", 0o644)))
    assert not (root / "etc").exists()


def test_hardlink_to_symlink_created_before_its_target(box):
    root, _ = box  # HardlinkSymlinkBeforeCreateTarget
    apply(root, tar_of(("dir", "etc", 0o770), ("sym", "/etc/passwd", "localpasswd"),
                       ("link", "localpasswd", "localpasswd-dup"), ("file", "/etc/passwd", b"after", 0o644)))
    assert same_file(root, "localpasswd-dup", "etc/passwd")


@pytest.mark.parametrize("target", ["../../../../../etc/passwd", "/etc/passwd"])
def test_hardlink_to_symlink_links_the_symlink(box, target):
    root, _ = box  # HardlinkSymlinkRelative, HardlinkSymlinkAbsolute
    apply(root, tar_of(("dir", "etc", 0o770), ("file", "/etc/passwd", b"inside", 0o644),
                       ("sym", target, "passwdlink"), ("link", "/passwdlink", "localpasswd")))
    assert (root / "localpasswd").is_symlink()
    assert os.readlink(root / "localpasswd") == os.readlink(root / "passwdlink")
    assert same_file(root, "localpasswd", "etc/passwd")


def test_hardlink_symlink_chmod_does_not_touch_host(box):
    root, outside = box  # HardlinkSymlinkChmod: a symlink to a host file, then a link to it
    canary = outside / "canary"
    apply(root, tar_of(("sym", str(canary), str(outside / "also-exists")),
                       ("link", str(outside / "also-exists"), "sketchylink")))
    assert stat.S_IMODE(canary.stat().st_mode) == 0o400


@pytest.mark.parametrize("name", ["../../escaped", "/../escaped", "a/../../escaped", "/abs/escaped"])
def test_dotdot_and_absolute_names_stay_inside(box, name):
    root, _ = box
    apply(root, tar_of(("file", name, b"x", 0o644)))
    expect = "abs/escaped" if name.startswith("/abs") else "escaped"
    assert read(root, expect) == b"x"


def test_hardlink_to_missing_target_is_an_error(box):
    root, _ = box
    with pytest.raises(StoreError, match="does not exist"):
        apply(root, tar_of(("link", "/nope", "x")))


def test_device_nodes_only_where_allowed(box):
    root, _ = box
    extract(io.BytesIO(tar_of(("dir", "dev", 0o755), ("chr", "dev/null", 1, 3))), root,
            whiteouts="apply", devices=False)
    assert (root / "dev").is_dir() and not os.path.lexists(root / "dev/null")
    if os.geteuid() == 0:
        extract(io.BytesIO(tar_of(("chr", "dev/null", 1, 3))), root, whiteouts="apply", devices=True)
        st = os.lstat(root / "dev/null")
        assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3


def test_opaque_in_apply_mode_hides_lower_children_only(box):
    root, _ = box
    setup(root, ("dir", "d", 0o755), ("file", "d/old", b"1", 0o644), ("dir", "d/sub", 0o755))
    apply(root, tar_of(("dir", "d", 0o755), ("file", "d/new", b"2", 0o644),
                       ("file", "d/.wh..wh..opq", b"", 0)))
    assert sorted(os.listdir(root / "d")) == ["new"]


@pytest.mark.skipif(os.geteuid() != 0, reason="overlay-format whiteouts need root (mknod, trusted.* xattrs)")
def test_overlay_mode_converts_whiteouts_to_overlay_format(box):
    root, _ = box
    extract(io.BytesIO(tar_of(("dir", "d", 0o755), ("file", "d/.wh..wh..opq", b"", 0),
                              ("file", "d/keep", b"k", 0o644), ("file", "gone/.wh.x", b"", 0),
                              ("file", ".wh.top", b"", 0))), root)
    assert os.getxattr(root / "d", "trusted.overlay.opaque") == b"y"
    for p in ("gone/x", "top"):
        st = os.lstat(root / p)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert not any(n.startswith(".wh.") for _, ds, fs in os.walk(root) for n in ds + fs)


def test_extract_returns_the_diff_id_of_the_uncompressed_stream(box, tmp_path):
    import gzip
    import hashlib
    root, _ = box
    data = tar_of(("file", "a", b"hello", 0o644))
    assert extract(io.BytesIO(gzip.compress(data)), root) == "sha256:" + hashlib.sha256(data).hexdigest()


UNTAR_CASES = {
    "symlink-then-write": [("sym", "/../../..", "up"), ("file", "up/pwned", b"x", 0o644)],
    "abs-symlink-out": [("sym", "TMP", "esc"), ("file", "esc/pwned", b"x", 0o644)],
    "link-through-symlink": [("sym", "TMP/canary", "c"), ("link", "c", "hard")],
    "dir-over-symlink": [("sym", "/..", "d"), ("dir", "d/sub", 0o755), ("file", "d/sub/f", b"x", 0o644)],
}


@pytest.mark.parametrize("case", sorted(UNTAR_CASES))
def test_untar_mode_stays_inside_an_existing_dest_dir(box, case):
    """ADD's mode (extract INTO an existing dir, by fd): the same walk keeps every entry inside."""
    from cache.extract import extract_stream

    root, outside = box
    (root / "dest").mkdir()
    entries = [tuple(str(outside) if v == "TMP" else v.replace("TMP", str(outside))
                     if isinstance(v, str) else v for v in e) for e in UNTAR_CASES[case]]
    fd = os.open(root / "dest", os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            extract_stream(io.BytesIO(tar_of(*entries)), fd, whiteouts="untar")
        except StoreError:
            pass      # refusing is fine too; writing outside is not
    finally:
        os.close(fd)
    assert sorted(os.listdir(root)) == ["dest"]


def test_untar_mode_refuses_names_that_climb_out(box):
    from cache.extract import extract_stream

    root, _ = box
    with pytest.raises(StoreError, match="outside of the destination"):
        extract_stream(io.BytesIO(tar_of(("file", "a/../../x", b"x", 0o644))), os.fspath(root),
                       whiteouts="untar")
