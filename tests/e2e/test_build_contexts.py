"""Build contexts that are not a local directory, as docker's CLI takes them: a tar archive on
stdin (plain or compressed), a Dockerfile alone on stdin, an http URL of a tarball or a
Dockerfile, and git repository URLs (git:// from a `git daemon` and git's dumb http, both on
loopback, with #ref:dir). Each builds the image the directory it came from builds, and leaves
nothing in the store's tmp/."""
from __future__ import annotations

import functools
import http.server
import io
import os
import shutil
import socket
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import pytest
from e2e_helpers import one_error_line

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (run as root)")

# what COPY gave, without times (a checkout's files are as new as the checkout)
DOCKERFILE = ("FROM busybox\nCOPY . /app\n"
              "RUN find /app -exec stat -c '%n %a %u %g %s' {} + | sort > /listing\n")
GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None, reason="git contexts need git (apt-get install git)")


@pytest.fixture
def ctx(tmp_path) -> Path:
    c = tmp_path / "ctx"
    (c / "sub").mkdir(parents=True)
    (c / "Dockerfile").write_text(DOCKERFILE)
    (c / "a.txt").write_text("a\n")
    (c / "run.sh").write_text("#!/bin/sh\necho run\n")
    (c / "run.sh").chmod(0o755)
    os.symlink("a.txt", c / "link")
    (c / "sub" / "Dockerfile.other").write_text("FROM busybox\nCOPY . /sub\n")
    return c


def _iid(r) -> str:
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode() if isinstance(r.stdout, bytes) else r.stdout
    return out.strip().splitlines()[-1]


def _tar(ctx: Path, mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as t:
        for p in sorted(ctx.rglob("*")):
            info = t.gettarinfo(str(p), str(p.relative_to(ctx)))
            info.uid, info.gid = 1000, 1000         # a user's tar: owners are reset as BuildKit does
            if info.isreg():
                with open(p, "rb") as f:
                    t.addfile(info, f)
            else:
                t.addfile(info)
    return buf.getvalue()


def _text(r) -> subprocess.CompletedProcess:
    """A run given bytes as input, its output as text (for one_error_line)."""
    return subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(), r.stderr.decode())


def _tmp_empty(root: Path) -> None:
    assert sorted(os.listdir(root / "tmp")) == [], "the made context was left in tmp/"


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_stdin_tar_builds_the_directory_s_image(busybox_root, pybuild, ctx, mode):
    want = _iid(pybuild("build", "-q", str(ctx)))
    assert _iid(pybuild("build", "-q", "-", input=_tar(ctx, mode))) == want
    _tmp_empty(busybox_root)


def test_stdin_tar_with_f_inside_it(busybox_root, pybuild, ctx):
    want = _iid(pybuild("build", "-q", "-f", str(ctx / "sub" / "Dockerfile.other"), str(ctx)))
    got = _iid(pybuild("build", "-q", "-f", "sub/Dockerfile.other", "-", input=_tar(ctx)))
    assert got == want


def test_stdin_dockerfile_alone_has_an_empty_context(busybox_root, pybuild, tmp_path):
    df = "FROM busybox\nCOPY . /app\nRUN find /app | sort > /listing && cat /listing\n"
    r = pybuild("build", "--progress", "plain", "-t", "alone", "-", input=df)
    assert r.returncode == 0, r.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "Dockerfile").write_text(df)
    want = _iid(pybuild("build", "-q", "-f", str(tmp_path / "Dockerfile"), str(empty)))
    assert _iid(pybuild("build", "-q", "-", input=df)) == want
    _tmp_empty(busybox_root)


def test_stdin_errors_are_one_line(busybox_root, pybuild, ctx):
    r = pybuild("build", "-f", "-", "-", input=b"FROM busybox\n")
    assert r.returncode == 1
    one_error_line(_text(r), "can't use stdin for both build context and dockerfile")
    r = pybuild("build", "-f", "Dockerfile", "-", input=b"FROM busybox\n")
    assert r.returncode == 1
    one_error_line(_text(r), "ambiguous Dockerfile source")
    r = pybuild("build", "-", input=b"\x1f\x8b\x08\x00" + b"\x00" * 40)   # gzip, then garbage
    assert r.returncode == 1
    one_error_line(_text(r), "unable to prepare context", "stdin")
    r = pybuild("build", "-", input=_tar(ctx)[:1500])                    # a truncated tar
    assert r.returncode == 1
    one_error_line(_text(r), "unable to prepare context")
    _tmp_empty(busybox_root)


def test_a_tar_cannot_write_outside_its_context(busybox_root, pybuild, tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        df = DOCKERFILE.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(df)
        t.addfile(info, io.BytesIO(df))
        evil = tarfile.TarInfo("../../../../../../tmp/pybuild-ctx-escape")
        evil.size = 1
        t.addfile(evil, io.BytesIO(b"x"))
    r = pybuild("build", "-q", "-", input=buf.getvalue())
    assert not Path("/tmp/pybuild-ctx-escape").exists()
    assert r.returncode == 1
    one_error_line(_text(r), "unable to prepare context")
    _tmp_empty(busybox_root)


def test_a_file_as_context_says_it_must_be_a_directory(busybox_root, pybuild, ctx):
    r = pybuild("build", str(ctx / "a.txt"))
    assert r.returncode == 1
    one_error_line(r, "unable to prepare context: context must be a directory", str(ctx / "a.txt"))


@pytest.fixture
def http_dir(tmp_path):
    """A plain http server on 127.0.0.1 serving tmp_path/www; yields (dir, base URL)."""
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                          functools.partial(Quiet, directory=str(www)))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield www, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_url_of_a_tarball_or_a_dockerfile(busybox_root, pybuild, ctx, http_dir):
    www, url = http_dir
    (www / "ctx.tar.gz").write_bytes(_tar(ctx, "w:gz"))
    (www / "Dockerfile").write_text("FROM busybox\nRUN echo from-url > /f\n")
    assert _iid(pybuild("build", "-q", f"{url}/ctx.tar.gz")) == _iid(pybuild("build", "-q", str(ctx)))
    r = pybuild("build", "-t", "fromurl", f"{url}/Dockerfile")
    assert r.returncode == 0, r.stderr
    out = pybuild("run", "--rm", "--network", "none", "fromurl", "cat", "/f")
    assert out.stdout == "from-url\n", out.stderr
    (www / "Dockerfile").write_text("FROM busybox\nRUN echo changed > /f\n")   # never replayed
    assert pybuild("build", "-t", "fromurl", f"{url}/Dockerfile").returncode == 0
    out = pybuild("run", "--rm", "--network", "none", "fromurl", "cat", "/f")
    assert out.stdout == "changed\n", out.stderr
    r = pybuild("build", f"{url}/missing.tar")
    assert r.returncode == 1
    one_error_line(r, "404")
    _tmp_empty(busybox_root)


def _git(*args, cwd):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})


@pytest.fixture
def repos(ctx, tmp_path, http_dir):
    """ctx as a git repository (a tag v1 at the first commit, then a change on main), served
    bare by `git daemon` (git://) and by the http dir (git's dumb http); yields
    (git base URL, http base URL, sha of v1)."""
    work = tmp_path / "work"
    shutil.copytree(ctx, work, symlinks=True)
    _git("init", "-q", "-b", "main", cwd=work)
    _git("add", ".", cwd=work)
    _git("commit", "-qm", "one", cwd=work)
    _git("tag", "v1", cwd=work)
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, capture_output=True, text=True,
                         check=True).stdout.strip()
    (work / "a.txt").write_text("changed\n")
    _git("commit", "-qam", "two", cwd=work)
    www, http_url = http_dir
    base = tmp_path / "git"
    base.mkdir()
    _git("clone", "-q", "--bare", str(work), str(base / "repo.git"), cwd=tmp_path)
    _git("clone", "-q", "--bare", str(work), str(www / "repo.git"), cwd=tmp_path)
    _git("update-server-info", cwd=www / "repo.git")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    daemon = subprocess.Popen(["git", "daemon", "--export-all", f"--base-path={base}",
                               "--listen=127.0.0.1", f"--port={port}", "--reuseaddr", str(base)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"git://127.0.0.1:{port}", http_url, sha
    finally:
        daemon.terminate()
        daemon.wait(10)


@needs_git
def test_git_urls_build_what_their_checkout_builds(busybox_root, pybuild, ctx, repos, tmp_path):
    git_url, http_url, sha = repos
    v1 = _iid(pybuild("build", "-q", str(ctx)))     # the tree as committed first, no .git
    for ref in ("v1", sha):
        assert _iid(pybuild("build", "-q", f"{git_url}/repo.git#{ref}")) == v1, ref
        assert _iid(pybuild("build", "-q", f"{http_url}/repo.git#{ref}")) == v1, ref
    (ctx / "a.txt").write_text("changed\n")
    head = _iid(pybuild("build", "-q", str(ctx)))
    assert head != v1
    assert _iid(pybuild("build", "-q", f"{git_url}/repo.git")) == head     # the remote's HEAD
    assert _iid(pybuild("build", "-q", f"{http_url}/repo.git#main")) == head
    # #ref:dir: that directory is the context; -f inside it
    sub = _iid(pybuild("build", "-q", "-f", "Dockerfile.other", f"{git_url}/repo.git#main:sub"))
    assert sub == _iid(pybuild("build", "-q", "-f", str(ctx / "sub" / "Dockerfile.other"),
                               str(ctx / "sub")))
    _tmp_empty(busybox_root)


@needs_git
def test_git_keep_git_dir_and_errors(busybox_root, pybuild, repos):
    git_url, _, _ = repos
    r = pybuild("build", "-t", "keep", "--build-arg", "BUILDKIT_CONTEXT_KEEP_GIT_DIR=1",
                f"{git_url}/repo.git")
    assert r.returncode == 0, r.stderr
    listing = pybuild("run", "--rm", "--network", "none", "keep", "cat", "/listing").stdout
    assert "/app/.git" in listing
    r = pybuild("build", "-t", "nokeep", f"{git_url}/repo.git")
    listing = pybuild("run", "--rm", "--network", "none", "nokeep", "cat", "/listing").stdout
    assert ".git" not in listing
    for url, words in ((f"{git_url}/nope.git", ("unable to 'git clone'", "nope.git")),
                       (f"{git_url}/repo.git#nobranch", ("couldn't find remote ref nobranch",)),
                       (f"{git_url}/repo.git#main:nodir", ("not a directory", "nodir")),
                       (f"{git_url}/repo.git#-x", ("invalid refspec",))):
        r = pybuild("build", url)
        assert r.returncode == 1, url
        one_error_line(r, *words)
    _tmp_empty(busybox_root)


def _tar_of(entries) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for info, data in entries:
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file(name: str, data: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name: str, target: str):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info, None


def test_a_context_s_links_never_reach_host_files(busybox_root, pybuild, tmp_path):
    """Somebody else's tar: a Dockerfile or .dockerignore that is a symlink is read as if the
    context were `/` (a link to a host file finds nothing of it), a device node is not made."""
    secret = tmp_path / "host-secret"
    secret.write_text("FROM secret-line-from-host\n")
    r = pybuild("build", "-", input=_tar_of([_link("Dockerfile", str(secret))]))
    err = r.stderr.decode()
    assert r.returncode == 1 and "secret-line-from-host" not in err, err
    inside = _tar_of([_file("real/df", b"FROM busybox\nCOPY . /c\n"), _link("Dockerfile", "/real/df"),
                      _link(".dockerignore", str(tmp_path / "ignore")), _file("kept", b"k")])
    (tmp_path / "ignore").write_text("kept\n")       # a host file: must not be read as ours
    r = pybuild("build", "-q", "-t", "linked", "-", input=inside)
    assert r.returncode == 0, r.stderr
    out = pybuild("run", "--rm", "--network", "none", "linked", "ls", "/c")
    assert "kept" in out.stdout.split(), out.stdout
    dev = tarfile.TarInfo("null2")
    dev.type, dev.devmajor, dev.devminor = tarfile.CHRTYPE, 1, 3
    r = pybuild("build", "-q", "-t", "nodev", "-",
                input=_tar_of([_file("Dockerfile", b"FROM busybox\nCOPY . /c\n"), (dev, None)]))
    assert r.returncode == 0, r.stderr
    out = pybuild("run", "--rm", "--network", "none", "nodev", "ls", "/c")
    assert "null2" not in out.stdout
    _tmp_empty(busybox_root)


@needs_git
def test_a_made_context_s_git_never_dates_the_build(busybox_root, pybuild, tmp_path):
    """A tar (or URL, or clone) is somebody else's tree: its .git is neither trusted (git log
    of it could run its config's programs) nor the build's epoch, which stays 0."""
    work = tmp_path / "w"
    work.mkdir()
    (work / "Dockerfile").write_text("FROM busybox\nLABEL x=1\n")
    _git("init", "-q", cwd=work)
    _git("add", ".", cwd=work)
    subprocess.run(["git", "commit", "-qm", "c", "--date", "2017-07-14T02:40:00Z"], cwd=work,
                   check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
                        "GIT_COMMITTER_DATE": "2017-07-14T02:40:00Z"})
    local = pybuild("build", "-q", str(work))
    assert pybuild("inspect", "-f", "{{.Created}}", local.stdout.strip()).stdout.startswith("2017-")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        t.add(str(work), ".")
    made = pybuild("build", "-q", "-", input=buf.getvalue())
    assert made.returncode == 0, made.stderr
    created = pybuild("inspect", "-f", "{{.Created}}", made.stdout.decode().strip()).stdout
    assert created == "1970-01-01T00:00:00Z\n"
