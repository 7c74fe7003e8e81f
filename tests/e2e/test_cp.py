"""`cp` as a user drives it on busybox:latest, both ways, running and stopped containers:
docker's rules for a file or dir onto a missing path, into a dir, `dir/.` for contents, `-`
as a tar stream; docker's errors; and a symlink in the container (`/evil -> /`) that never
leads out of it, reading or writing."""
from __future__ import annotations

import io
import os
import tarfile

import pytest
import test_containers
from busybox_fixture import run_pybuild
from e2e_helpers import ok, one_error_line
from test_containers import run_d

root = test_containers.root     # a busybox store; every container removed after

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="containers need root (run as root)")


def sh(ctr: str, script: str) -> str:
    return ok(run_pybuild("exec", ctr, "sh", "-c", script)).stdout


@pytest.fixture
def box(root):
    run_d("--name", "box", "busybox", "sleep", "60")
    sh("box", "ln -s / /evil; echo inside > /etc/shadow; mkdir -p /d/sub; echo a > /d/sub/a; "
              "echo top > /d/t")
    return "box"


def test_cp_out_files_dirs_contents_and_tar(box, tmp_path):
    def cp(src, dest):
        return ok(run_pybuild("cp", src, str(tmp_path / dest)))
    cp("box:/d/t", "t1")                                        # file onto a missing name
    assert (tmp_path / "t1").read_text() == "top\n"
    (tmp_path / "into").mkdir()
    cp("box:/d/t", "into")                                      # file into a dir
    assert (tmp_path / "into/t").read_text() == "top\n"
    cp("box:/d", "copy")                                        # dir onto a missing name
    assert (tmp_path / "copy/sub/a").read_text() == "a\n"
    cp("box:/d", "into")                                        # dir into a dir
    assert (tmp_path / "into/d/t").read_text() == "top\n"
    (tmp_path / "contents").mkdir()
    cp("box:/d/.", "contents")                                  # dir/. : its contents
    assert sorted(os.listdir(tmp_path / "contents")) == ["sub", "t"]
    r = run_pybuild("cp", "box:/d", "-", input=b"")
    assert r.returncode == 0, r.stderr
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as t:
        names = t.getnames()
    assert names == ["d", "d/sub", "d/sub/a", "d/t"]
    one_error_line(run_pybuild("cp", "box:/nope", str(tmp_path / "x")),
                   "Could not find the file /nope in container box", code=1)
    one_error_line(run_pybuild("cp", "box:/d", str(tmp_path / "t1")),
                   "cannot overwrite non-directory", code=1)
    one_error_line(run_pybuild("cp", "nope:/x", "x"), "No such container: nope", code=1)
    one_error_line(run_pybuild("cp", "/a", "/b"), "must specify at least one container", code=1)


def test_cp_in_running_and_stopped_container(box, tmp_path):
    (tmp_path / "f").write_text("host\n")
    (tmp_path / "dir/sub").mkdir(parents=True)
    (tmp_path / "dir/sub/x").write_text("x\n")
    os.chown(tmp_path / "f", 1234, 1234)
    ok(run_pybuild("cp", str(tmp_path / "f"), "box:/tmp/f"))
    ok(run_pybuild("cp", str(tmp_path / "dir"), "box:/d"))
    ok(run_pybuild("cp", "-a", str(tmp_path / "f"), "box:/owned"))
    assert sh("box", "cat /tmp/f /d/dir/sub/x; stat -c %u /tmp/f /owned") == "host\nx\n0\n1234\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        info = tarfile.TarInfo("streamed")
        info.size = 3
        t.addfile(info, io.BytesIO(b"s!\n"))
    ok(run_pybuild("cp", "-", "box:/tmp", input=buf.getvalue()))
    assert sh("box", "cat /tmp/streamed") == "s!\n"

    ok(run_pybuild("stop", "-t", "0", "box"))
    # stopped: written through an overlay of its own layers, so deleting over the image works
    (tmp_path / "passwd").write_text("replaced\n")
    ok(run_pybuild("cp", str(tmp_path / "passwd"), "box:/etc/passwd"))
    ok(run_pybuild("cp", str(tmp_path / "f"), "box:/stopped"))
    ok(run_pybuild("cp", "box:/tmp/streamed", str(tmp_path / "back")))
    assert (tmp_path / "back").read_text() == "s!\n"
    ok(run_pybuild("start", "box"))
    assert sh("box", "cat /stopped /etc/passwd /tmp/f") == "host\nreplaced\nhost\n"
    with open("/proc/self/mountinfo") as f:
        assert "pybuild-merged" not in f.read()     # nothing left mounted here


def test_symlink_in_the_container_never_leads_to_the_host(box, tmp_path):
    with open("/etc/shadow") as f:
        host_shadow = f.read()
    ok(run_pybuild("cp", "box:/evil/etc/shadow", str(tmp_path / "s")))
    assert (tmp_path / "s").read_text() == "inside\n" != host_shadow
    ok(run_pybuild("cp", "-L", "box:/evil/etc", str(tmp_path / "etc")))
    assert (tmp_path / "etc/shadow").read_text() == "inside\n"
    assert sorted(os.listdir(tmp_path / "etc")) != sorted(os.listdir("/etc"))
    marker = f"pybuild-cp-escape-{os.getpid()}"
    (tmp_path / "x").write_text("in\n")
    ok(run_pybuild("cp", str(tmp_path / "x"), f"box:/evil/tmp/{marker}"))
    assert not os.path.exists(f"/tmp/{marker}")
    assert sh("box", f"cat /tmp/{marker}") == "in\n"
    ok(run_pybuild("stop", "-t", "0", "box"))
    ok(run_pybuild("cp", str(tmp_path / "x"), f"box:/evil/tmp/{marker}2"))
    ok(run_pybuild("cp", "box:/evil/etc/shadow", str(tmp_path / "s2")))
    assert not os.path.exists(f"/tmp/{marker}2")
    assert (tmp_path / "s2").read_text() == "inside\n"


def test_cp_into_a_stopped_container_s_volumes(root, tmp_path):
    host = tmp_path / "bind"
    host.mkdir()
    run_d("--name", "vols", "-v", f"{host}:/hb", "-v", "cpvol:/nv", "-v", "cpro:/ro:ro",
          "busybox", "sh", "-c", "echo v > /nv/x")
    ok(run_pybuild("wait", "vols"))
    (tmp_path / "f").write_text("f\n")
    ok(run_pybuild("cp", str(tmp_path / "f"), "vols:/hb/f"))
    ok(run_pybuild("cp", str(tmp_path / "f"), "vols:/nv/f"))
    assert (host / "f").read_text() == "f\n"
    assert (root / "volumes/cpvol/_data/f").read_text() == "f\n"
    ok(run_pybuild("cp", "vols:/nv/x", str(tmp_path / "x")))
    assert (tmp_path / "x").read_text() == "v\n"
    one_error_line(run_pybuild("cp", str(tmp_path / "f"), "vols:/ro/f"),
                   "mounted volume is marked read-only", code=1)
    cid = ok(run_pybuild("inspect", "-f", "{{.Id}}", "vols")).stdout.strip()
    assert os.listdir(root / "containers" / cid / "upper") == []   # mount points left out


def test_cp_out_of_a_stopped_container_through_a_symlink_to_root_reads_its_files(box, tmp_path):
    """The stopped container's tree is walked chrooted into its overlay, as a running one's:
    /evil -> / is the container's root, for a file and for a directory walk."""
    with open("/etc/os-release") as f:
        host = f.read()
    sh("box", "echo inside > /etc/os-release")
    ok(run_pybuild("stop", "-t", "0", "box"))
    ok(run_pybuild("cp", "box:/evil/etc/os-release", str(tmp_path / "os")))
    assert (tmp_path / "os").read_text() == "inside\n" != host
    ok(run_pybuild("cp", "-L", "box:/evil", str(tmp_path / "root")))    # the whole tree
    assert (tmp_path / "root/etc/os-release").read_text() == "inside\n"
    assert not (tmp_path / "root/etc/debian_version").exists()     # the host's, not the box's
    assert os.path.isfile("/etc/debian_version")
    assert os.path.islink(tmp_path / "root/evil")
    r = run_pybuild("cp", "box:/evil/etc/.", "-", input=b"")
    assert r.returncode == 0, r.stderr
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as t:
        assert "./os-release" in t.getnames() or "os-release" in t.getnames()
        assert not any("debian_version" in n for n in t.getnames())


def test_cp_out_of_a_stopped_container_while_a_dir_becomes_a_link_to_root(root, tmp_path):
    """A bind source (shared, changeable by anyone) swapped mid-walk: a dir not yet read
    becomes `-> /etc`; the walk, chrooted into the container, reads the container's /etc."""
    import subprocess
    import sys

    from busybox_fixture import REPO

    host = tmp_path / "bind"
    (host / "a").mkdir(parents=True)
    with open(host / "a/big", "wb") as f:
        f.truncate(64 << 20)        # far more than the pipe and buffers between us hold
    (host / "z").mkdir()
    (host / "z/mine").write_text("m\n")
    run_d("--name", "swap", "-v", f"{host}:/hb", "busybox", "true")
    ok(run_pybuild("wait", "swap"))
    p = subprocess.Popen([sys.executable, "-m", "builder", "cp", "swap:/hb", "-"], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = b""
    while b"hb/a/big\0" not in head:            # the walk is at a/big, z listed, not read
        chunk = p.stdout.read(512)
        assert chunk, p.stderr.read()
        head += chunk
    (host / "z").rename(host / "z.old")
    os.symlink("/etc", host / "z")
    rest = p.stdout.read()
    assert p.wait(timeout=60) == 0, p.stderr.read()
    with tarfile.open(fileobj=io.BytesIO(head + rest)) as t:
        names = t.getnames()
    assert "hb/a/big" in names
    assert not any("debian_version" in n or "os-release" in n for n in names), names
    assert os.path.isfile("/etc/debian_version")
