"""`pybuild run` as a user types it: a separate process, on busybox:latest made by fixtures/busybox.py."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rootfs_helpers import requires_root

REPO = Path(__file__).resolve().parents[2]

pytestmark = requires_root


def test_default_cmd_env_and_exit_code(busybox_root, pybuild):
    r = pybuild("run", "--rm", "busybox", "sh", "-c", 'echo "$PATH"; hostname; exit 3')
    assert r.returncode == 3, r.stderr
    path, host = r.stdout.split()
    assert path == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert len(host) == 12


def test_image_cmd_is_used_without_args(busybox_root, pybuild):
    r = pybuild("run", "-i", "busybox", input="echo from-image-cmd; exit 4\n")
    assert (r.returncode, r.stdout) == (4, "from-image-cmd\n")


def test_flags_env_workdir_user_entrypoint(busybox_root, pybuild, tmp_path):
    envfile = tmp_path / "env"
    envfile.write_text("# comment\nB=from-file\n")
    r = pybuild("run", "-e", "A=1", "--env-file", str(envfile), "-w", "/made/here", "-u", "app",
                "--hostname", "box", "busybox", "sh", "-c", 'echo $A $B $HOSTNAME $(pwd) $(id -un)')
    assert r.stdout == "1 from-file box /made/here app\n", r.stderr
    r = pybuild("run", "--entrypoint", "echo", "busybox", "hi")
    assert r.stdout == "hi\n"


def test_stdin_only_with_i(busybox_root, pybuild):
    assert pybuild("run", "-i", "busybox", "cat", input="in\n").stdout == "in\n"
    assert pybuild("run", "busybox", "cat", input="in\n").stdout == ""


def test_network_none(busybox_root, pybuild):
    r = pybuild("run", "--network", "none", "busybox", "ls", "/sys/class/net")
    assert r.stdout.split() == ["lo"]


def test_errors_follow_docker_exit_codes(busybox_root, pybuild):
    r = pybuild("run", "--pull", "never", "nosuchimage")
    assert r.returncode == 125 and r.stderr == "pybuild: error: no such image: nosuchimage\n"
    r = pybuild("run", "nosuchimage")  # pulled from docker.io, which this machine cannot reach
    lines = r.stderr.splitlines()
    assert r.returncode == 125 and lines[0] == "Unable to find image 'nosuchimage' locally"
    assert len(lines) == 2 and lines[1].startswith("pybuild: error: nosuchimage: "), r.stderr
    r = pybuild("run", "busybox", "nosuchcmd")
    assert r.returncode == 127
    assert r.stderr == 'pybuild: error: exec: "nosuchcmd": executable file not found in $PATH\n'
    r = pybuild("run", "busybox", "/etc/passwd")
    assert r.returncode == 126
    r = pybuild("run", "-u", "bob", "busybox", "true")
    assert r.returncode == 125
    assert r.stderr == "pybuild: error: unable to find user bob: no matching entries in passwd file\n"
    r = pybuild("run", "--network", "nosuchnet", "busybox", "true")
    assert r.returncode == 125 and r.stderr == "pybuild: error: network nosuchnet not found\n"


def test_nothing_is_left_in_the_store_tmp(busybox_root, pybuild):
    before = set(os.listdir(busybox_root / "tmp"))
    assert pybuild("run", "busybox", "sh", "-c", "echo x > /new").returncode == 0
    assert set(os.listdir(busybox_root / "tmp")) == before


def test_tty(busybox_root, pybuild):
    """-t: the command's stdio is a pty of the container's own devpts."""
    import pty
    import select
    master, slave = pty.openpty()
    env = dict(os.environ, PYBUILD_ROOT=str(busybox_root))
    p = subprocess.Popen([sys.executable, "-m", "builder", "run", "-t", "busybox", "sh", "-c", "tty; exit 6"],
                         stdin=slave, stdout=slave, stderr=slave, env=env, cwd=REPO)
    os.close(slave)
    out = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 30)
            if not ready:
                break
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        rc = p.wait(timeout=30)
        os.close(master)
    assert rc == 6
    assert b"/dev/pts/0" in out


def test_docker_rules_for_hostname_user_workdir_and_env(busybox_root, pybuild):
    import socket
    # --network host given: the host's name, as docker (the default network gets the ID's 12 hex)
    r = pybuild("run", "--network", "host", "busybox", "sh", "-c", "hostname; echo $HOSTNAME")
    assert r.stdout == f"{socket.gethostname()}\n" * 2, r.stderr
    # -e K=V overrides the image's PATH in place; a bare unset name removes the image's variable
    r = pybuild("run", "-e", "PATH=/bin", "-e", "NOT_SET_HERE_X", "busybox", "env")
    lines = r.stdout.splitlines()
    assert lines[0] == "PATH=/bin" and not any(ln.startswith("NOT_SET_HERE_X") for ln in lines)
    r = pybuild("run", "-w", "rel", "busybox", "true")
    assert r.returncode == 125
    assert r.stderr == ("pybuild: error: the working directory 'rel' is invalid, it needs to be an "
                        "absolute path\n")
    r = pybuild("run", "--entrypoint", "", "busybox")
    assert (r.returncode, r.stderr) == (125, "pybuild: error: no command specified\n")


def test_env_file_values_are_passed_through_untrimmed(busybox_root, pybuild, tmp_path):
    envfile = tmp_path / "env"
    envfile.write_text("  A=  two spaces  \n")
    r = pybuild("run", "--env-file", str(envfile), "busybox", "sh", "-c", 'printf "[%s]" "$A"')
    assert r.stdout == "[  two spaces  ]", r.stderr
    r = pybuild("run", "--env-file", str(tmp_path / "missing"), "busybox", "true")
    assert r.returncode == 125 and r.stderr.startswith("pybuild: error: --env-file ")
