"""--ulimit and --shm-size as docker's: on `run` (and what `exec` gets in that container),
`run -d`, `create`/`start` through the record and `inspect`, and on every RUN of a build (in
its key); docker's error lines; a hard limit above pybuild's own is one line, exit 125. The
same probe through the private dockerd gives the same numbers."""
from __future__ import annotations

import os
import subprocess

import pytest
from e2e_helpers import one_error_line

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="containers need root (run as root)")

PROBE = "ulimit -Sn; ulimit -Hn; ulimit -u; df -k /dev/shm | tail -1 | awk '{print $2}'"
FLAGS = ["--ulimit", "nofile=512:1024", "--ulimit", "nproc=300", "--shm-size", "8m"]


def test_run_exec_and_inspect(busybox_root, pybuild):
    r = pybuild("run", "--rm", "--network", "none", *FLAGS, "busybox", "sh", "-c", PROBE)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["512", "1024", "300", "8192"]
    r = pybuild("run", "-d", "--name", "lim", "--network", "none", *FLAGS, "busybox", "sleep", "60")
    assert r.returncode == 0, r.stderr
    try:
        assert pybuild("exec", "lim", "sh", "-c", PROBE).stdout.split() == ["512", "1024", "300", "8192"]
        out = pybuild("inspect", "-f", "{{.HostConfig.ShmSize}} {{json .HostConfig.Ulimits}}", "lim")
        assert out.stdout.strip() == ('8388608 [{"Name":"nofile","Hard":1024,"Soft":512},'
                                      '{"Name":"nproc","Hard":300,"Soft":300}]')
        assert pybuild("restart", "-t", "0", "lim").returncode == 0     # the record keeps them
        assert pybuild("exec", "lim", "sh", "-c", PROBE).stdout.split() == ["512", "1024", "300", "8192"]
    finally:
        pybuild("rm", "-f", "lim")
    plain = pybuild("run", "--rm", "--network", "none", "busybox", "sh", "-c", PROBE).stdout.split()
    assert plain[3] == "65536"          # docker's default 64m


def test_same_numbers_as_docker(docker_busybox, busybox_root, pybuild):
    theirs = subprocess.run([*docker_busybox, "run", "--rm", "--network", "none", *FLAGS,
                             "busybox:latest", "sh", "-c", PROBE], capture_output=True, text=True)
    assert theirs.returncode == 0, theirs.stderr
    mine = pybuild("run", "--rm", "--network", "none", *FLAGS, "busybox", "sh", "-c", PROBE)
    assert mine.stdout.split() == theirs.stdout.split()


@pytest.mark.parametrize("flag, words", [
    (["--ulimit", "nofile=10:5"], "ulimit soft limit must be less than or equal to hard limit: 10 > 5"),
    (["--ulimit", "bogus=1"], "invalid ulimit type: bogus"),
    (["--ulimit", "nofile"], "invalid ulimit argument: nofile"),
    (["--ulimit", "nofile=x"], "invalid ulimit soft value x"),
    (["--shm-size", "lots"], 'invalid argument "lots" for "--shm-size" flag'),
    (["--ulimit", "nofile=64:999999999"], "setrlimit nofile=64:999999999"),
])
def test_bad_values_are_one_line_125(busybox_root, pybuild, flag, words):
    r = pybuild("run", "--rm", "--network", "none", *flag, "busybox", "true")
    one_error_line(r, words, code=125)


def test_build_applies_them_to_run_steps(busybox_root, pybuild, tmp_path):
    (tmp_path / "Dockerfile").write_text(f"FROM busybox\nRUN ({PROBE}) > /p\n")
    r = pybuild("build", "-q", *FLAGS, "-t", "lim:1", str(tmp_path))
    assert r.returncode == 0, r.stderr
    out = pybuild("run", "--rm", "--network", "none", "lim:1", "cat", "/p").stdout.split()
    assert out == ["512", "1024", "300", "8192"]
    again = pybuild("build", "-q", "-t", "lim:2", str(tmp_path))     # other limits: another key
    assert again.returncode == 0 and again.stdout != r.stdout
    bad = pybuild("build", "--ulimit", "nofile=2:1", str(tmp_path))
    one_error_line(bad, "ulimit soft limit must be less than or equal to hard limit", code=1)
