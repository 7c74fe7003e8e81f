"""docker as the judge: our saved image loads and runs in dockerd, and an image docker made
survives `docker save -> pybuild load -> pybuild save -> docker load` with the same ID, files and
config. Uses the session's private dockerd (tests/conftest.py)."""
from __future__ import annotations

import json
import subprocess


def docker(cli, *args, input=None, check=True):
    r = subprocess.run([*cli, *args], capture_output=True, input=input, timeout=120, check=False)
    if check:
        assert r.returncode == 0, r.stderr.decode(errors="replace")
    return r


def test_saved_image_loads_and_runs_in_docker(dockerd, busybox_root, pybuild, tmp_path):
    out = tmp_path / "bb.tar"
    assert pybuild("tag", "busybox", "pybuild-test/bb:1").returncode == 0
    assert pybuild("save", "-o", str(out), "pybuild-test/bb:1").returncode == 0
    r = docker(dockerd, "load", "-i", str(out))
    assert b"pybuild-test/bb:1" in r.stdout
    r = docker(dockerd, "run", "--rm", "--network", "none", "pybuild-test/bb:1", "sh", "-c",
               "id -un; cat /etc/passwd | grep app; ls -ld /tmp | cut -c1-10; echo $PATH")
    assert r.stdout.decode().splitlines() == [
        "root", "app:x:1000:1000:app:/home/app:/bin/sh", "drwxrwxrwt",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    r = docker(dockerd, "run", "--rm", "--network", "none", "-u", "app", "pybuild-test/bb:1",
               "sh", "-c", "id -u; pwd")
    assert r.stdout.decode().split()[0] == "1000"
    ours = json.loads(pybuild("inspect", "busybox").stdout)[0]["Id"]
    theirs = json.loads(docker(dockerd, "inspect", "pybuild-test/bb:1").stdout)[0]["Id"]
    assert ours == theirs  # image ID = config digest on both sides
    docker(dockerd, "rmi", "pybuild-test/bb:1")


def test_docker_made_image_round_trips(dockerd, busybox_root, pybuild, tmp_path):
    # an image docker itself built (its own layer tar, config, history) from our busybox
    out = tmp_path / "bb.tar"
    assert pybuild("save", "-o", str(out), "busybox").returncode == 0
    docker(dockerd, "load", "-i", str(out))
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM busybox\nRUN mkdir -p /data && echo from-docker > /data/f && rm -rf /home/app "
        "&& ln -s /data/f /data/link\nENV MODE=roundtrip\nCMD [\"cat\", \"/data/f\"]\n")
    r = docker(dockerd, "build", "--network", "none", "-t", "pybuild-test/rt:1", str(ctx), check=False)
    assert r.returncode == 0, f"docker build failed: {r.stderr.decode(errors='replace')[-300:]}"
    want_id = json.loads(docker(dockerd, "inspect", "pybuild-test/rt:1").stdout)[0]["Id"]
    want_fs = docker(dockerd, "run", "--rm", "--network", "none", "pybuild-test/rt:1",
                     "sh", "-c", "find / -xdev | sort | xargs ls -ld --full-time 2>/dev/null | "
                     "grep -v -e ' /proc' -e ' /sys' -e ' /etc/hosts' -e ' /etc/hostname' "
                     "-e ' /etc/resolv.conf' -e ' /dev' -e ' /.dockerenv' -e ' /$' -e ' /etc$'").stdout
    saved = tmp_path / "docker-saved.tar"
    docker(dockerd, "save", "-o", str(saved), "pybuild-test/rt:1")
    r = pybuild("load", "-i", str(saved))
    assert r.returncode == 0 and "pybuild-test/rt:1" in r.stdout, r.stderr
    again = tmp_path / "pybuild-saved.tar"
    assert pybuild("save", "-o", str(again), "pybuild-test/rt:1").returncode == 0
    docker(dockerd, "rmi", "pybuild-test/rt:1")
    docker(dockerd, "load", "-i", str(again))
    got = json.loads(docker(dockerd, "inspect", "pybuild-test/rt:1").stdout)[0]
    assert got["Id"] == want_id
    assert got["Config"]["Env"][-1] == "MODE=roundtrip" and got["Config"]["Cmd"] == ["cat", "/data/f"]
    got_fs = docker(dockerd, "run", "--rm", "--network", "none", "pybuild-test/rt:1",
                    "sh", "-c", "find / -xdev | sort | xargs ls -ld --full-time 2>/dev/null | "
                    "grep -v -e ' /proc' -e ' /sys' -e ' /etc/hosts' -e ' /etc/hostname' "
                    "-e ' /etc/resolv.conf' -e ' /dev' -e ' /.dockerenv' -e ' /$' -e ' /etc$'").stdout
    assert got_fs == want_fs and b"/data/link -> /data/f" in got_fs
    # the loaded layer also unpacks into our store with the deletion as an overlay whiteout
    from cache.store import Store
    store = Store.open()
    top = store.layer_dir(store.image("pybuild-test/rt:1").diff_ids[-1])
    assert (top / "data" / "f").read_text() == "from-docker\n"
    docker(dockerd, "rmi", "pybuild-test/rt:1", "busybox:latest")
