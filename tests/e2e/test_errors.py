"""Whose fault is a failure, as the CLI tells it (builder.errors).

A user's mistake or a full disk: one line `pybuild: error: ...`, exit 1 (`run`: 125, docker's
code for its own failures, since every other code is the container's), no traceback, nothing
half-written. Anything else is a bug: `pybuild: internal error: ...`, exit 2 (`run`: 125), and
the traceback only with --debug.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SETPRIV = shutil.which("setpriv")


def one_line_error(r, *words: str) -> str:
    """The single `pybuild: error:` line of a failed command (no traceback, no second line)."""
    assert "Traceback" not in r.stderr, r.stderr
    errors = [x for x in r.stderr.splitlines() if x.startswith("pybuild:")]
    assert len(errors) == 1 and errors[0].startswith("pybuild: error: "), r.stderr
    for w in words:
        assert w in errors[0], r.stderr
    return errors[0]


@pytest.fixture
def ctx(tmp_path) -> Path:
    c = tmp_path / "ctx"
    c.mkdir()
    (c / "Dockerfile").write_text("FROM busybox\nCOPY . /ctx\n")
    (c / "f").write_text("f\n")
    return c


def test_missing_context_dir(store_root, pybuild, tmp_path):
    r = pybuild("build", str(tmp_path / "nowhere"))
    assert r.returncode == 1
    one_line_error(r, "unable to prepare context", "nowhere", "not found")


@pytest.mark.parametrize("name", ["missing", "afile/below"])
def test_missing_dockerfile(store_root, pybuild, ctx, name):
    (ctx / "afile").write_text("")
    r = pybuild("build", "-f", str(ctx / name), str(ctx))
    assert r.returncode == 1
    one_line_error(r, "failed to read Dockerfile", str(ctx / name))


def test_user_named_paths(busybox_root, pybuild, ctx, tmp_path):
    """--iidfile, --output, save -o, import and load -i name files the user chose: failing to
    write or read them is their error, said with the path, before or after the build."""
    nodir = tmp_path / "nodir"
    cases = [
        ("build", "--iidfile", str(nodir / "iid"), str(ctx)),
        ("build", "--output", f"type=docker,dest={nodir / 'out.tar'}", str(ctx)),
        ("save", "-o", str(nodir / "bb.tar"), "busybox"),
        ("save", "-o", str(tmp_path), "busybox"),  # a directory
        ("import", str(nodir / "rootfs.tar")),
        ("import", str(tmp_path)),
        ("load", "-i", str(nodir / "bb.tar")),
        ("--root", str(ctx / "f"), "images"),  # a store root that is a file
    ]
    for args in cases:
        r = pybuild(*args)
        assert r.returncode == 1, (args, r.stderr)
        one_line_error(r, str(tmp_path))
    assert list(tmp_path.parent.glob(f".{tmp_path.name}.*.tmp")) == []  # save's beside it


@pytest.mark.skipif(os.geteuid() != 0 or SETPRIV is None,
                    reason="needs root and setpriv (util-linux) to drop CAP_DAC_OVERRIDE")
@pytest.mark.parametrize("what", ["file", "dir", "Dockerfile"])
def test_unreadable_file_in_context(busybox_root, pybuild, ctx, what):
    """Root reads everything, so the build runs without CAP_DAC_OVERRIDE/DAC_READ_SEARCH:
    a mode-000 file is then unreadable, as it is to a user who does not own it."""
    target = {"file": ctx / "secret", "dir": ctx / "d", "Dockerfile": ctx / "Dockerfile"}[what]
    if what == "file":
        target.write_text("s\n")
    elif what == "dir":
        target.mkdir()
    target.chmod(0)
    r = subprocess.run([SETPRIV, "--bounding-set", "-dac_override,-dac_read_search",
                        sys.executable, "-m", "builder", "build", "--progress", "plain",
                        "-t", "app", str(ctx)], cwd=REPO, capture_output=True, text=True,
                       check=False)
    assert r.returncode == 1
    one_line_error(r, "Permission denied", target.name if what != "dir" else "/d")
    assert pybuild("inspect", "app").returncode != 0  # nothing tagged


@pytest.fixture
def tiny_root(tmp_path, monkeypatch):
    """A store root on a 1 MiB tmpfs."""
    root = tmp_path / "tiny"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(root)], check=True)
    monkeypatch.setenv("PYBUILD_ROOT", str(root))
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="the 1 MiB store is a tmpfs mount: run the suite as root")
@pytest.mark.parametrize("where", ["copy", "store"])
def test_disk_full(tiny_root, pybuild, tmp_path, where):
    """3 MB fails while COPY writes the step's upper dir; a file 8 KiB short of the free
    space fits there and the store's own writes fail instead (an OSError with no file name)."""
    assert pybuild("images", "-q").stdout == ""  # the store's own files exist now
    st = os.statvfs(tiny_root)
    size = 3_000_000 if where == "copy" else st.f_bavail * st.f_frsize - 8192
    ctx = tmp_path / "big"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY big /big\n")
    (ctx / "big").write_bytes(os.urandom(size))
    r = pybuild("build", "--progress", "plain", "-t", "big", str(ctx))
    assert r.returncode == 1
    line = one_line_error(r, "No space left on device")
    assert ("failed to copy" in line) == (where == "copy"), line
    assert list((tiny_root / "tmp").iterdir()) == []  # no scratch dir, no half-written file
    assert [p.name for p in tiny_root.iterdir() if ".tmp" in p.name] == []
    assert not (tiny_root / "replay").exists()
    r = pybuild("images", "-q")
    assert r.returncode == 0 and r.stdout == ""  # nothing named, nothing listed


@pytest.fixture
def broken_store(busybox_root):
    """A real fault no user can cause through pybuild: the tag index is a directory."""
    (busybox_root / "tags.json").unlink()
    (busybox_root / "tags.json").mkdir()
    return busybox_root


def test_internal_oserror_is_a_bug_not_a_user_error(broken_store, pybuild):
    r = pybuild("images")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("pybuild: internal error: IsADirectoryError"), r.stderr
    assert "--debug" in r.stderr
    r = pybuild("--debug", "images")
    assert r.returncode == 2
    assert "Traceback (most recent call last)" in r.stderr and "tags.json" in r.stderr
    assert r.stderr.rstrip().splitlines()[-1].startswith("pybuild: internal error: ")


def test_run_exits_125_for_every_failure_of_its_own(broken_store, pybuild, tmp_path):
    """`run` leaves every other exit code to the container's command."""
    r = pybuild("run", "busybox", "true")  # internal
    assert r.returncode == 125
    assert r.stderr.startswith("pybuild: internal error: "), r.stderr
    (tmp_path / "afile").write_text("")
    r = pybuild("--root", str(tmp_path / "afile"), "run", "busybox", "true")  # the user's
    assert r.returncode == 125
    one_line_error(r, "cannot use store", "afile")


def test_a_whiteout_name_in_the_context_is_named_as_the_image_path(busybox_root, pybuild, tmp_path):
    """`.wh.` names mean deletions in an OCI layer: pybuild refuses to store one, and the error
    names the path in the image, not the host's scratch dir."""
    (tmp_path / ".wh.x").write_text("x")
    (tmp_path / "Dockerfile").write_text("FROM busybox\nCOPY .wh.x /app/\n")
    r = pybuild("build", "-q", str(tmp_path))
    line = one_line_error(r, "/app/.wh.x", "names starting with .wh. cannot be stored")
    assert "scratch" not in line and str(busybox_root) not in line
