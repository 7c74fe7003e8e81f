"""`pybuild build` and `pybuild run` as a real non-root user (nobody, via setpriv): one clear
error line that says root is needed, a non-zero exit, no traceback, and the store untouched.
With user namespaces available the line says rootless mode is not supported yet; without them
(a user namespace whose user.max_user_namespaces is 0) it also says why they are missing."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534
SETPRIV = shutil.which("setpriv")
DROP = [SETPRIV or "setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups"]


def _interpreter() -> tuple[list[str], dict[str, str]] | None:
    """A python with pybuild's dependencies that nobody can execute: the venv's own, or the
    system python3 given the venv's site-packages (the venv may sit under root's 0700 home)."""
    if os.geteuid() != 0 or SETPRIV is None:
        return None
    site = sysconfig.get_paths()["purelib"]
    for argv, extra in (([sys.executable], {}),
                        (["/usr/bin/python3"], {"PYTHONPATH": f"{REPO}:{site}"})):
        r = subprocess.run([*DROP, *argv, "-c", "import lark, builder.cli"], cwd="/",
                           env={"PATH": os.environ["PATH"], **extra}, capture_output=True, check=False)
        if r.returncode == 0:
            return argv, extra
    return None


INTERP = _interpreter()
pytestmark = pytest.mark.skipif(
    INTERP is None, reason="needs root, setpriv (util-linux) and a python3 with pybuild's "
                           "dependencies that uid 65534 can run (apt-get install python3)")


@pytest.fixture
def home(busybox_root):
    """A dir nobody owns (pytest's tmp dirs are root's 0700), with a copy of the busybox store."""
    d = Path(tempfile.mkdtemp(prefix="pybuild-nobody-", dir="/tmp"))
    try:
        subprocess.run(["cp", "-a", str(busybox_root), str(d / "store")], check=True)
        (d / "ctx").mkdir()
        (d / "ctx/f.txt").write_text("x\n")
        subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(d)], check=True)
        d.chmod(0o755)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _as_nobody(home: Path, *args: str, wrap: list[str] = ()) -> subprocess.CompletedProcess:
    argv, extra = INTERP
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "PYBUILD_ROOT": str(home / "store"),
           **extra}
    return subprocess.run([*wrap, *DROP, *argv, "-m", "builder", *args], cwd=home, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def _store_state(root: Path) -> dict[str, tuple]:
    """Every path with its mode, size and (for files) mtime. Directory mtimes are left out: a
    scratch dir that was made and removed again leaves nothing but its parent's new mtime."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = Path(dirpath) / n
            st = os.lstat(p)
            out[str(p.relative_to(root))] = (st.st_mode, st.st_size,
                                             0 if n in dirs else st.st_mtime_ns)
    return out


def _one_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode != 0
    assert "Traceback" not in r.stderr, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("pybuild: error:")]
    assert len(errors) == 1, r.stderr
    assert "pybuild needs root to build images and run containers (running as uid 65534)" in errors[0]
    assert "run pybuild as root" in errors[0]
    return errors[0]


@pytest.mark.parametrize("dockerfile", ["FROM busybox\nRUN echo hi > /x\n",
                                        "FROM busybox\nWORKDIR /a/b\n",
                                        "FROM busybox\nCOPY f.txt /\n"],
                         ids=["RUN", "WORKDIR", "COPY"])
def test_build_as_nobody_is_one_clear_error_and_writes_nothing(home, dockerfile):
    (home / "ctx/Dockerfile").write_text(dockerfile)
    before = _store_state(home / "store")
    r = _as_nobody(home, "build", "-t", "mine", "ctx")
    assert r.returncode == 1
    _one_error(r)
    assert _store_state(home / "store") == before


def test_run_as_nobody_is_one_clear_error_and_writes_nothing(home):
    before = _store_state(home / "store")
    r = _as_nobody(home, "run", "--rm", "busybox", "true")
    _one_error(r)
    assert _store_state(home / "store") == before


def _userns_for_nobody() -> bool:
    return subprocess.run([*DROP, "unshare", "-U", "true"], capture_output=True,
                          check=False).returncode == 0


@pytest.mark.skipif(not _userns_for_nobody(), reason="user namespaces are off for uid 65534 "
                    "(the other test covers that wording)")
def test_with_user_namespaces_the_error_says_rootless_is_not_supported_yet(home):
    (home / "ctx/Dockerfile").write_text("FROM busybox\nRUN true\n")
    line = _one_error(_as_nobody(home, "build", "ctx"))
    assert "rootless mode (user namespaces) is not supported yet" in line


# Runs argv in a new user namespace (ids 0-65535 mapped 1:1) whose user.max_user_namespaces is
# 0, so a process there cannot create user namespaces: a machine without them, for one command.
NO_USERNS = """\
import os, sys
sys.path.insert(0, sys.argv[1])
from runtime import kernel
go_r, go_w = os.pipe()
ready_r, ready_w = os.pipe()
pid = os.fork()
if pid == 0:
    kernel.unshare(kernel.CLONE_NEWUSER)
    os.write(ready_w, b"u")
    os.read(go_r, 1)
    with open("/proc/sys/user/max_user_namespaces", "w") as f:
        f.write("0")
    os.execvp(sys.argv[2], sys.argv[2:])
os.read(ready_r, 1)
for name in ("uid_map", "gid_map"):
    with open(f"/proc/{pid}/{name}", "w") as f:
        f.write("0 0 65536\\n")
os.write(go_w, b"x")
sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


def test_without_user_namespaces_the_error_says_what_is_missing(home):
    (home / "ctx/Dockerfile").write_text("FROM busybox\nRUN true\n")
    wrap = [sys.executable, "-c", NO_USERNS, str(REPO)]
    probe = subprocess.run([*wrap, *DROP, "unshare", "-U", "true"], capture_output=True, text=True,
                           check=False)
    assert probe.returncode != 0, "the wrapper should leave nobody without user namespaces"
    before = _store_state(home / "store")
    line = _one_error(_as_nobody(home, "build", "ctx", wrap=wrap))
    assert "user namespaces, which this user cannot create here " \
           "(sysctl user.max_user_namespaces is 0)" in line
    assert _store_state(home / "store") == before
