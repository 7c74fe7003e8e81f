"""`build -o` as docker's: `-o DIR` / type=local writes the final filesystem into a directory,
`-o -` / type=tar a tar of it to stdout or a file, type=oci|docker the image archive; compared
file by file with what `docker build -o` (the private dockerd's BuildKit) writes for the same
Dockerfile."""
from __future__ import annotations

import hashlib
import io
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from busybox_fixture import REPO
from e2e_helpers import one_error_line

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (run as root)")

# a deleted base file (a whiteout), an opaque dir, a setuid file, a symlink, a hard link
DOCKERFILE = """FROM busybox
COPY . /app
RUN rm /bin/vi && rm -rf /home && mkdir /home && echo new > /home/only && \\
    mkdir -p /d && echo x > /d/f && chmod 4755 /d/f && ln -s /d/f /d/l && ln /d/f /d/h
"""


@pytest.fixture
def ctx(tmp_path) -> Path:
    c = tmp_path / "ctx"
    c.mkdir()
    (c / "Dockerfile").write_text(DOCKERFILE)
    (c / "a.txt").write_text("a\n")
    return c


def tree(root: Path) -> dict[str, tuple]:
    """What a user compares of an exported tree: type, mode, owner, content, link target."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            what = ""
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    what = hashlib.sha256(f.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                what = os.readlink(p)
            out[os.path.relpath(p, root)] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode),
                                             st.st_uid, st.st_gid, what)
    return out


def tar_entries(data: bytes) -> dict[str, tuple]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        for m in t:
            body = t.extractfile(m).read() if m.isreg() else b""
            out[m.name.rstrip("/")] = (m.type if m.type != tarfile.AREGTYPE else tarfile.REGTYPE,
                                       m.mode, m.uid, m.gid, hashlib.sha256(body).hexdigest()
                                       if m.isreg() else m.linkname)
    return out


def test_local_and_tar_outputs(busybox_root, pybuild, ctx, tmp_path):
    out = tmp_path / "out"
    r = pybuild("build", "-q", "-o", str(out), str(ctx))
    assert r.returncode == 0, r.stderr
    t = tree(out)
    assert "bin/vi" not in t and "bin/sh" in t
    assert sorted(k for k in t if k.startswith("home")) == ["home", "home/only"]
    assert t["d/f"][1] == 0o4755 and t["d/l"][4] == "/d/f" and t["app/a.txt"][2:4] == (0, 0)
    assert os.lstat(out / "d/f").st_ino == os.lstat(out / "d/h").st_ino
    assert [n for n in os.listdir(out) if n.startswith(".pybuild")] == []
    # again into the same directory: entries are replaced, what else is there stays
    (out / "mine").write_text("kept\n")
    (out / "a-dir-to-replace").mkdir()
    assert pybuild("build", "-q", "-o", f"type=local,dest={out}", str(ctx)).returncode == 0
    assert (out / "mine").read_text() == "kept\n" and tree(out)["d/f"] == t["d/f"]

    r = subprocess.run([*pybuild_cmd(), "build", "-q", "-o", "-", str(ctx)], capture_output=True,
                       cwd=REPO, check=False)
    assert r.returncode == 0, r.stderr
    entries = tar_entries(r.stdout)     # only the tar on stdout: no image ID after it
    assert entries["d/f"][1] == 0o4755 and entries["d/l"][4] == "/d/f"
    assert entries["d/h"][0] == tarfile.LNKTYPE
    assert "bin/vi" not in entries and "home/only" in entries
    dest = tmp_path / "fs.tar"
    assert pybuild("build", "-q", "-o", f"type=tar,dest={dest}", str(ctx)).returncode == 0
    assert dest.read_bytes() == r.stdout


def pybuild_cmd() -> list[str]:
    """The CLI as run_pybuild runs it, for output taken as bytes (a tar on stdout)."""
    return [sys.executable, "-m", "builder"]


def test_output_errors_are_one_line(busybox_root, pybuild, ctx, tmp_path):
    for spec, words in (("type=nope,dest=x", ("type must be one of",)),
                        ("type=tar", ("needs dest=PATH",)),
                        ("type=local,dest=-", ("use type=tar,dest=-",))):
        r = pybuild("build", "-o", spec, str(ctx))
        assert r.returncode == 1, spec
        one_error_line(r, *words)
    (tmp_path / "afile").write_text("")
    r = pybuild("build", "-o", str(tmp_path / "afile"), str(ctx))
    assert r.returncode == 1
    one_error_line(r, "failed to write", "afile")


def test_same_files_as_docker_build_output(docker_busybox, busybox_root, pybuild, ctx, tmp_path):
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    assert pybuild("build", "-q", "-o", str(mine), str(ctx)).returncode == 0
    r = subprocess.run([*docker_busybox, "build", "--network", "none", "-o", str(theirs),
                        str(ctx)], capture_output=True, text=True, env=env, check=False)
    assert r.returncode == 0, r.stderr
    assert "d/f" in tree(theirs) and "bin/vi" not in tree(theirs)
    assert tree(mine) == tree(theirs)
    r = subprocess.run([*docker_busybox, "build", "--network", "none", "-o", "-", str(ctx)],
                       capture_output=True, env=env, check=False)
    assert r.returncode == 0, r.stderr
    mine_tar = subprocess.run([*pybuild_cmd(), "build", "-q", "-o", "-", str(ctx)],
                              capture_output=True, check=False, cwd=REPO)
    assert mine_tar.returncode == 0
    assert tar_entries(mine_tar.stdout) == tar_entries(r.stdout)


def test_local_output_merges_into_what_dest_holds(busybox_root, pybuild, tmp_path):
    """BuildKit's local exporter merges: files of the export replace theirs, directories are
    merged, everything else in DEST stays (-o . in a project must not wipe src/)."""
    c = tmp_path / "c"
    c.mkdir()
    (c / "Dockerfile").write_text("FROM scratch\nCOPY out/ /\n")
    (c / "out" / "src").mkdir(parents=True)
    (c / "out" / "src" / "new.txt").write_text("new\n")
    (c / "out" / "same.txt").write_text("from the build\n")
    dest = tmp_path / "dest"
    (dest / "src").mkdir(parents=True)
    (dest / "src" / "keep.txt").write_text("mine\n")
    (dest / "same.txt").write_text("old\n")
    (dest / "other").write_text("untouched\n")
    os.symlink("/etc", dest / "link")
    r = pybuild("build", "-q", "-o", str(dest), str(c))
    assert r.returncode == 0, r.stderr
    assert (dest / "src" / "keep.txt").read_text() == "mine\n"
    assert (dest / "src" / "new.txt").read_text() == "new\n"
    assert (dest / "same.txt").read_text() == "from the build\n"
    assert (dest / "other").read_text() == "untouched\n" and os.readlink(dest / "link") == "/etc"
    assert sorted(os.listdir(dest)) == ["link", "other", "same.txt", "src"]
    # a killed export's temporary dir (its owner gone) is removed by the next one
    (dest / ".pybuild-export-999999.1-abc").mkdir()
    assert pybuild("build", "-q", "-o", str(dest), str(c)).returncode == 0
    assert not (dest / ".pybuild-export-999999.1-abc").exists()
