"""builder.copying: COPY/ADD file semantics checked against real directories (we run as root).

Expected behaviours are BuildKit's, read from moby/buildkit: fsutil's copier
(vendor/github.com/tonistiigi/fsutil/copy), solver/llbsolver/file/{backend,unpack}.go and
frontend/dockerfile/dockerfile_copy_test.go (testCopyChmod, testCopyChownExistingDir).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import socket
import stat
import tarfile
from pathlib import Path

import pytest

from builder.context import BuildContext, SourceTree
from builder.copying import Chmod, add_archive, copy, dest_path, is_archive, make_dirs
from builder.errors import BuildError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="COPY tests chown files: run as root")


def _info(p: Path):
    st = os.lstat(p)
    return stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def _owner(p: Path) -> tuple[int, int]:
    st = os.lstat(p)
    return st.st_uid, st.st_gid


@pytest.fixture
def ctx(tmp_path):
    c = tmp_path / "ctx"
    (c / "dir" / "sub").mkdir(parents=True)
    (c / "dir" / "empty").mkdir()
    (c / "a.txt").write_text("a")
    (c / "b.txt").write_text("b")
    (c / "dir" / "top").write_text("t")
    (c / "dir" / "sub" / "deep").write_text("d")
    os.chmod(c / "dir" / "sub", 0o700)
    return c


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "rootfs"
    (r / "etc").mkdir(parents=True)
    (r / "existing").mkdir()
    os.chown(r / "existing", 500, 600)
    os.chmod(r / "existing", 0o750)
    return r


def _copy(ctx_dir, root, srcs, dest, **kw):
    c = BuildContext(ctx_dir, None)
    copy(c.select(srcs, kw.pop("excludes", ())), root, dest, **kw)


def test_dest_path_is_relative_to_workdir_and_keeps_trailing_slash():
    assert dest_path("x", "/app") == "/app/x"
    assert dest_path("x/", "/app") == "/app/x/"
    assert dest_path(".", "/app") == "/app/"
    assert dest_path("/abs/../y", "/app") == "/y"
    assert dest_path("d/.", "/") == "/d/"


def test_file_to_a_new_name_into_a_slash_dir_and_into_an_existing_dir(ctx, root):
    _copy(ctx, root, ["a.txt"], "/new/name")
    assert (root / "new" / "name").read_text() == "a"
    _copy(ctx, root, ["a.txt"], "/made/")
    assert (root / "made" / "a.txt").read_text() == "a"
    _copy(ctx, root, ["a.txt"], "/existing")
    assert (root / "existing" / "a.txt").read_text() == "a"
    _copy(ctx, root, ["b.txt"], "rel", workdir="/w")
    assert (root / "w" / "rel").read_text() == "b"
    assert _info(root / "new") == (stat.S_IFDIR, 0o755, 0, 0)


def test_directory_source_copies_its_contents(ctx, root):
    _copy(ctx, root, ["dir"], "/app")
    assert sorted(os.listdir(root / "app")) == ["empty", "sub", "top"]
    assert (root / "app" / "sub" / "deep").read_text() == "d"
    assert _mode(root / "app" / "sub") == 0o700
    assert _info(root / "app") == (stat.S_IFDIR, 0o755, 0, 0)   # created, root 0755
    _copy(ctx, root, ["dir"], "/existing/")
    assert (root / "existing" / "top").exists()
    assert _owner(root / "existing") == (500, 600) and _mode(root / "existing") == 0o750


def test_several_sources_need_a_directory_destination(ctx, root):
    with pytest.raises(BuildError) as e:
        _copy(ctx, root, ["a.txt", "b.txt"], "/dest")
    assert str(e.value) == ("When using COPY with more than one source file, the destination "
                            "must be a directory and end with a /")
    with pytest.raises(BuildError, match="more than one source"):
        _copy(ctx, root, ["*.txt"], "/dest")
    assert not (root / "dest").exists()
    _copy(ctx, root, ["*.txt"], "/dest/")
    assert sorted(os.listdir(root / "dest")) == ["a.txt", "b.txt"]
    _copy(ctx, root, ["a.txt", "b.txt"], "/existing")          # an existing dir is fine
    assert (root / "existing" / "b.txt").exists()
    _copy(ctx, root, ["a*.txt"], "/single")                     # one match: a file name
    assert (root / "single").read_text() == "a"
    _copy(ctx, root, ["*.none"], "/nothing/")                   # no match: nothing at all
    assert not (root / "nothing").exists()


def test_owner_is_root_for_the_context_kept_for_a_stage_and_chown_wins(ctx, root, tmp_path):
    os.chown(ctx / "a.txt", 1000, 1001)
    _copy(ctx, root, ["a.txt"], "/ctx-owned")
    assert _owner(root / "ctx-owned") == (0, 0)
    stage = SourceTree(ctx)
    copy(stage.select(["a.txt", "dir"]), root, "/stage/")
    assert _owner(root / "stage" / "a.txt") == (1000, 1001)
    # the builder's spelling for a --from tree keeps owners as well
    copy(BuildContext(ctx, None, ignore=False).select(["a.txt"]), root, "/stage2")
    assert _owner(root / "stage2") == (1000, 1001)
    _copy(ctx, root, ["dir"], "/chowned/new/parent/", chown=(300, 400))
    for p in ("chowned", "chowned/new", "chowned/new/parent", "chowned/new/parent/sub",
              "chowned/new/parent/sub/deep"):
        assert _owner(root / p) == (300, 400), p
    _copy(ctx, root, ["dir"], "/existing", chown=(300, 400))
    assert _owner(root / "existing") == (500, 600)              # existing dir untouched
    assert _owner(root / "existing" / "top") == (300, 400)


def test_modes_and_setuid_are_kept_and_mtimes_preserved(ctx, root):
    os.chmod(ctx / "a.txt", 0o4755)
    os.chmod(ctx / "b.txt", 0o2640)
    os.utime(ctx / "a.txt", ns=(1_000_000_123, 1_500_000_000_123))
    os.utime(ctx / "dir" / "sub", (7, 7))
    _copy(ctx, root, ["a.txt", "b.txt", "dir"], "/m/")
    assert _mode(root / "m" / "a.txt") == 0o4755
    assert _mode(root / "m" / "b.txt") == 0o2640
    assert os.lstat(root / "m" / "a.txt").st_mtime_ns == 1_500_000_000_123
    assert os.lstat(root / "m" / "sub").st_mtime == 7


def test_chmod_octal_applies_to_files_dirs_and_created_parents(ctx, root):
    # as BuildKit's testCopyChmod: COPY --chmod=777 foo /parent/foo makes /parent 0777
    _copy(ctx, root, ["a.txt"], "/parent/foo", chmod="777")
    assert _mode(root / "parent") == 0o777 and _mode(root / "parent" / "foo") == 0o777
    _copy(ctx, root, ["a.txt"], "/parent/sub/foo", chmod="770")
    assert _mode(root / "parent" / "sub") == 0o770
    _copy(ctx, root, ["a.txt"], "/zero", chmod="0")
    assert _mode(root / "zero") == 0
    _copy(ctx, root, ["dir"], "/cd", chmod="0640")
    assert _mode(root / "cd" / "sub") == 0o640 and _mode(root / "cd" / "top") == 0o640
    _copy(ctx, root, ["a.txt"], "/suid", chmod="4755")
    assert _mode(root / "suid") == 0o4755


def test_chmod_symbolic_forms(ctx, root):
    os.chmod(ctx / "a.txt", 0o664)
    _copy(ctx, root, ["a.txt"], "/s1", chmod="u+x,g-w")
    assert _mode(root / "s1") == 0o744
    _copy(ctx, root, ["dir"], "/s2", chmod="a=rX")
    assert _mode(root / "s2" / "top") == 0o444 and _mode(root / "s2" / "sub") == 0o555
    _copy(ctx, root, ["dir"], "/s3", chmod="go=u-w")
    assert _mode(root / "s3" / "sub") == 0o755
    assert _mode(root / "s3") == 0o755                # created top dir: 0755 with symbolic
    for spec, before, after in [("+x", 0o644, 0o755), ("o=", 0o777, 0o770), ("u+s", 0o755, 0o4755),
                                ("+t", 0o755, 0o1755), ("g=u", 0o740, 0o770), ("a-rwx", 0o777, 0),
                                ("u=rw,go=r", 0o777, 0o644), ("=", 0o4755, 0)]:
        assert Chmod(spec).apply(stat.S_IFREG | before) == after, spec


@pytest.mark.parametrize("bad,msg", [
    ("64a", "invalid chmod parameter: '64a'. it should be octal string and between 0 and 07777"),
    ("10000", ("invalid chmod parameter: '10000'. it should be octal string and between 0 and "
              "07777")),
    ("u+q", "invalid chmod parameter: 'u+q': invalid syntax"),
    ("x", "invalid chmod parameter: 'x': invalid syntax"),
])
def test_bad_chmod_is_one_clear_error(bad, msg):
    with pytest.raises(BuildError) as e:
        Chmod(bad)
    assert str(e.value).startswith(msg)


def test_symlinks_top_level_followed_inner_kept(ctx, root):
    os.symlink("a.txt", ctx / "top-link")
    os.symlink("../a.txt", ctx / "dir" / "inner-link")
    os.symlink("/nowhere", ctx / "dir" / "dangling")
    _copy(ctx, root, ["top-link", "dir"], "/l/")
    assert not os.path.islink(root / "l" / "top-link")
    assert (root / "l" / "top-link").read_text() == "a"
    assert os.readlink(root / "l" / "inner-link") == "../a.txt"
    assert os.readlink(root / "l" / "dangling") == "/nowhere"
    assert _owner(root / "l" / "inner-link") == (0, 0)


def test_hardlinks_fifos_devices_sockets_and_empty_dirs(ctx, root, tmp_path):
    os.link(ctx / "dir" / "top", ctx / "dir" / "sub" / "hard")
    os.mkfifo(ctx / "dir" / "fifo", 0o640)
    os.mknod(ctx / "dir" / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(ctx / "dir" / "sock"))
    s.close()
    stage = SourceTree(ctx)
    copy(stage.select(["dir"]), root, "/h")
    a, b = os.lstat(root / "h" / "top"), os.lstat(root / "h" / "sub" / "hard")
    assert (a.st_ino, a.st_nlink) == (b.st_ino, 2)
    assert stat.S_ISFIFO(os.lstat(root / "h" / "fifo").st_mode)
    assert _mode(root / "h" / "fifo") == 0o640
    st = os.lstat(root / "h" / "null")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    assert stat.S_ISREG(os.lstat(root / "h" / "sock").st_mode)   # "socket copied as stub"
    assert (root / "h" / "empty").is_dir() and os.listdir(root / "h" / "empty") == []


def _user_xattrs_supported() -> bool:
    import tempfile

    with tempfile.NamedTemporaryFile() as f:
        try:
            os.setxattr(f.name, "user.probe", b"1")
            return True
        except OSError:
            return False


@pytest.mark.skipif(not _user_xattrs_supported(),
                    reason="the temp filesystem has no user xattrs (set TMPDIR to an ext4/xfs dir)")
def test_xattrs_are_copied(ctx, root):
    os.setxattr(ctx / "a.txt", "user.note", b"hi")
    _copy(ctx, root, ["a.txt"], "/x")
    assert os.getxattr(root / "x", "user.note") == b"hi"


def test_image_symlinks_resolve_inside_the_rootfs(ctx, root, tmp_path):
    host = tmp_path / "host-etc"
    host.mkdir()
    os.symlink("/etc", root / "app")                   # absolute: the image's /etc
    os.symlink("../../../../../../" + str(host).lstrip("/"), root / "up")
    _copy(ctx, root, ["a.txt"], "/app/")
    assert (root / "etc" / "a.txt").read_text() == "a"
    _copy(ctx, root, ["dir"], "/up/x")
    assert os.listdir(host) == []
    assert (root / str(host).lstrip("/") / "x" / "top").exists()
    _copy(ctx, root, ["b.txt"], "/../../../escape")
    assert (root / "escape").read_text() == "b"
    assert not (tmp_path / "escape").exists()


def test_a_symlink_at_the_final_name_is_replaced_not_followed(ctx, root, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    os.symlink(str(victim), root / "existing" / "a.txt")
    _copy(ctx, root, ["a.txt"], "/existing/")
    assert not os.path.islink(root / "existing" / "a.txt")
    assert victim.read_text() == "keep"


def test_conflicts_with_the_rootfs_are_clear_errors(ctx, root):
    (root / "app").mkdir()
    os.symlink("/etc", root / "app" / "sub")
    with pytest.raises(BuildError, match="cannot copy to non-directory: /app/sub"):
        _copy(ctx, root, ["dir"], "/app")
    (root / "d" / "top").mkdir(parents=True)
    with pytest.raises(BuildError, match="cannot replace to directory /d/top with file"):
        _copy(ctx, root, ["dir"], "/d")
    # a file source onto an existing directory goes inside it instead
    _copy(ctx, root, ["a.txt"], "/d/top")
    assert (root / "d" / "top" / "a.txt").exists()
    (root / "file").write_text("f")
    with pytest.raises(BuildError, match="cannot copy to non-directory: /file"):
        _copy(ctx, root, ["dir"], "/file")


def test_nested_dirs_merge_and_take_the_source_metadata(ctx, root):
    (root / "m" / "sub").mkdir(parents=True)
    (root / "m" / "sub" / "old").write_text("o")
    os.chown(root / "m" / "sub", 7, 7)
    _copy(ctx, root, ["dir"], "/m")
    assert (root / "m" / "sub" / "old").exists() and (root / "m" / "sub" / "deep").exists()
    assert _info(root / "m" / "sub") == (stat.S_IFDIR, 0o700, 0, 0)


def test_dockerignore_and_exclude_apply_to_copies(ctx, root):
    (ctx / ".dockerignore").write_text("dir/sub\n")
    _copy(ctx, root, ["."], "/i", excludes=["*.txt"])
    assert sorted(os.listdir(root / "i")) == [".dockerignore", "dir"]
    assert sorted(os.listdir(root / "i" / "dir")) == ["empty", "top"]


def test_parents_keeps_the_path_and_the_pivot(ctx, root):
    c = BuildContext(ctx, None)
    copy(c.select(["dir/sub/deep", "a.txt"]), root, "/p/", parents=True)
    assert (root / "p" / "dir" / "sub" / "deep").read_text() == "d"
    assert (root / "p" / "a.txt").exists()
    assert _mode(root / "p" / "dir" / "sub") == 0o700           # parent metadata from source
    assert sorted(os.listdir(root / "p" / "dir")) == ["sub"]
    copy(c.select(["dir/./sub/deep"], parents=True), root, "/q/")
    assert (root / "q" / "sub" / "deep").exists() and not (root / "q" / "dir").exists()


def test_make_dirs_for_workdir(root):
    make_dirs(root, "/w/x/y", (1000, 1000))
    assert _owner(root / "w" / "x" / "y") == (1000, 1000) and _mode(root / "w") == 0o755
    os.symlink("/etc", root / "lnk")
    make_dirs(root, "/lnk/z")
    assert (root / "etc" / "z").is_dir()


# --------------------------------------------------------------------------- ADD archives

def _tar_bytes(entries, compress=None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for ti, data in entries:
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    raw = buf.getvalue()
    return {None: lambda b: b, "gz": gzip.compress, "bz2": bz2.compress,
            "xz": lzma.compress}[compress](raw)


def _ti(name, data=b"", **kw):
    ti = tarfile.TarInfo(name)
    ti.size = len(data) if data is not None and kw.get("type", tarfile.REGTYPE) == tarfile.REGTYPE \
        else 0
    ti.mode = kw.pop("mode", 0o644)
    ti.uid, ti.gid = kw.pop("uid", 0), kw.pop("gid", 0)
    ti.mtime = kw.pop("mtime", 1_000_000)
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti, (data if ti.type == tarfile.REGTYPE else None)


@pytest.mark.parametrize("comp", [None, "gz", "bz2", "xz"])
def test_add_extracts_tars_detected_by_magic_bytes(tmp_path, root, comp):
    arc = tmp_path / "looks-like.txt"
    arc.write_bytes(_tar_bytes([
        _ti("d", None, type=tarfile.DIRTYPE, mode=0o750, uid=33, gid=34),
        _ti("d/f", b"hello", mode=0o4755, uid=1000, gid=1000),
        _ti("d/link", None, type=tarfile.SYMTYPE, linkname="f"),
        _ti("d/hard", None, type=tarfile.LNKTYPE, linkname="d/f", mode=0o4755, uid=1000,
            gid=1000),
        _ti("implied/x", b"x"),
    ], comp))
    assert is_archive(arc)
    add_archive(arc, root, "/out")
    assert (root / "out" / "d" / "f").read_text() == "hello"
    assert _info(root / "out" / "d" / "f") == (stat.S_IFREG, 0o4755, 1000, 1000)
    assert _info(root / "out" / "d") == (stat.S_IFDIR, 0o750, 33, 34)
    assert os.lstat(root / "out" / "d").st_mtime == 1_000_000
    assert os.readlink(root / "out" / "d" / "link") == "f"
    assert os.lstat(root / "out" / "d" / "hard").st_ino == os.lstat(root / "out" / "d" / "f").st_ino
    assert _info(root / "out" / "implied") == (stat.S_IFDIR, 0o755, 0, 0)


def test_add_archive_chown_overwrite_and_non_archives(tmp_path, root):
    arc = tmp_path / "a.tar.gz"
    arc.write_bytes(_tar_bytes([_ti("f", b"new", uid=5, gid=5)], "gz"))
    (root / "existing" / "f").write_text("old contents")
    add_archive(arc, root, "/existing", chown=(100, 200))
    assert (root / "existing" / "f").read_text() == "new"
    assert _owner(root / "existing" / "f") == (100, 200)
    plain = tmp_path / "plain.tar"
    plain.write_text("not really a tar")
    assert not is_archive(plain) and not is_archive(tmp_path)
    # ADD through copy(unpack=True): archives extract, other files copy
    ctx = tmp_path / "ctx2"
    ctx.mkdir()
    (ctx / "a.tgz").write_bytes(arc.read_bytes())
    (ctx / "b.tar").write_text("plain")
    c = BuildContext(ctx, None)
    copy(c.select(["a.tgz", "b.tar"]), root, "/add/", unpack=True)
    assert sorted(os.listdir(root / "add")) == ["b.tar", "f"]


def test_add_archive_cannot_escape(tmp_path, root):
    outside = tmp_path / "outside"
    outside.mkdir()
    evil = tmp_path / "evil.tar"
    evil.write_bytes(_tar_bytes([_ti("../../evil", b"x")]))
    with pytest.raises(BuildError, match="outside of the destination"):
        add_archive(evil, root, "/x")
    # a symlink in the archive pointing out, then a file written through it: stays inside
    sneaky = tmp_path / "sneaky.tar"
    sneaky.write_bytes(_tar_bytes([
        _ti("esc", None, type=tarfile.SYMTYPE, linkname=str(outside)),
        _ti("esc/pwned", b"x"),
        _ti("up", None, type=tarfile.SYMTYPE, linkname="../../../../../../.."),
        _ti("up/pwned2", b"x"),
    ]))
    add_archive(sneaky, root, "/x")
    assert os.listdir(outside) == []
    assert (root / "x" / str(outside).lstrip("/") / "pwned").exists()
    assert (root / "x" / "pwned2").exists()
    assert not (tmp_path / "pwned2").exists()


def test_add_archive_wh_names_are_plain_files_and_escaping_hardlinks_fail(tmp_path, root):
    """go-archive's Untar (what ADD runs) has no whiteouts: `.wh.x` is a file, x stays."""
    (root / "existing" / "keep").write_text("k")
    arc = tmp_path / "wh.tar"
    arc.write_bytes(_tar_bytes([_ti(".wh.keep", b""), _ti("d/.wh..wh..opq", b"")]))
    add_archive(arc, root, "/existing")
    assert sorted(os.listdir(root / "existing")) == [".wh.keep", "d", "keep"]
    assert os.listdir(root / "existing" / "d") == [".wh..wh..opq"]
    bad = tmp_path / "bad.tar"
    bad.write_bytes(_tar_bytes([_ti("h", None, type=tarfile.LNKTYPE, linkname="../../etc/x")]))
    with pytest.raises(BuildError, match="invalid hardlink 'h'"):
        add_archive(bad, root, "/x")


def test_add_archive_chown_applies_to_every_entry_and_implied_dirs_are_root(tmp_path, root):
    arc = tmp_path / "o.tar"
    arc.write_bytes(_tar_bytes([
        _ti("a/b/f", b"1", uid=7, gid=7),
        _ti("a/b/l", None, type=tarfile.SYMTYPE, linkname="f", uid=7, gid=7),
        _ti("a/b/h", None, type=tarfile.LNKTYPE, linkname="a/b/f", mode=0o600, uid=7, gid=7),
    ]))
    add_archive(arc, root, "/o/p", chown=(100, 200))
    assert _info(root / "o" / "p") == (stat.S_IFDIR, 0o755, 100, 200)       # the dest: --chown
    assert _info(root / "o" / "p" / "a" / "b") == (stat.S_IFDIR, 0o755, 0, 0)  # implied: root
    for n in ("f", "l", "h"):
        assert _owner(root / "o" / "p" / "a" / "b" / n) == (100, 200)
    assert _mode(root / "o" / "p" / "a" / "b" / "f") == 0o600   # the hardlink's header mode


def test_mkdir_errors_name_the_image_path_and_depth_is_capped(ctx, root):
    (root / "file").write_text("f")
    with pytest.raises(BuildError) as e:
        _copy(ctx, root, ["a.txt"], "/file/sub/")
    assert str(e.value).startswith("mkdir /file/sub/") and str(root) not in str(e.value)
    (root / ".cfg").write_text("f")
    with pytest.raises(BuildError, match=r"cannot copy to non-directory: /\.cfg$"):
        _copy(ctx, root, ["dir"], "/.cfg")
    with pytest.raises(BuildError, match="path too deep"):
        make_dirs(root, "/d" * 600)


def test_the_fallback_copy_never_writes_more_than_the_walk_saw(tmp_path):
    """Where the kernel refuses copy_file_range (a device swapped in), the read/write fallback
    stops at the size the walk's lstat gave, never at an end that /dev/zero does not have."""
    from builder.copying import _copy_fd

    out = tmp_path / "out"
    fd_in = os.open("/dev/zero", os.O_RDONLY)
    fd_out = os.open(out, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        _copy_fd(fd_in, fd_out, 10)
    finally:
        os.close(fd_in)
        os.close(fd_out)
    assert out.read_bytes() == b"\0" * 10


def test_open_file_refuses_what_the_walk_did_not_see(tmp_path):
    """cache.fspath.open_file, for the layer writer, COPY and the context hash: a FIFO is not
    waited on, a link is not followed, another inode than the walk's is not read."""
    import errno

    from cache.fspath import open_file

    f = tmp_path / "f"
    f.write_text("x")
    st = os.lstat(f)
    os.close(open_file(str(f), st))
    os.mkfifo(tmp_path / "fifo")
    os.symlink(f, tmp_path / "link")
    (tmp_path / "g").write_text("y")
    for name, expect in (("fifo", errno.ESTALE), ("link", errno.ELOOP), ("g", errno.ESTALE)):
        with pytest.raises(OSError) as e:
            open_file(str(tmp_path / name), st)
        assert e.value.errno == expect, name
