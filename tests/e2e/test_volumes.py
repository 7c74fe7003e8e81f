"""Volumes as a user drives them on busybox:latest: -v binds (rw, ro, host changes seen live),
named volumes that outlive their container, docker's copy-up from the image, anonymous volumes
dropped by --rm, --tmpfs / --mount tmpfs, `volume create|ls|inspect|rm|prune`, a detached
container's volume seen through exec and logs, and the specs refused with one line (125)."""
from __future__ import annotations

import json
import os
import re
import time

import pytest
from busybox_fixture import run_pybuild
from e2e_helpers import ok, one_error_line

IMG = "busybox"
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="volumes need root (run as root)")


def sh(*args: str, script: str):
    return run_pybuild("run", "--rm", *args, IMG, "sh", "-c", script)


def test_bind_rw_ro_and_live(busybox_root, tmp_path):
    host = tmp_path / "h"
    host.mkdir()
    (host / "in.txt").write_text("from host\n")
    r = ok(sh("-v", f"{host}:/data", script="cat /data/in.txt; echo out > /data/out.txt"))
    assert r.stdout == "from host\n"
    assert (host / "out.txt").read_text() == "out\n"
    r = sh("-v", f"{host}:/data:ro", script="cat /data/in.txt; echo x > /data/y 2>&1; echo rc=$?")
    assert "from host" in r.stdout and "rc=1" in r.stdout
    assert "Read-only file system" in r.stdout + r.stderr
    assert not (host / "y").exists()
    r = ok(sh("--mount", f"type=bind,source={host},target=/m,readonly",
              script="touch /m/z 2>&1 || echo refused; grep ' /m ' /proc/mounts"))
    assert "refused" in r.stdout and " ro," in r.stdout
    # a missing host dir for -v is created (docker's rule); --mount requires it
    ok(sh("-v", f"{tmp_path}/new/dir:/n", script="echo hi > /n/f"))
    assert (tmp_path / "new/dir/f").read_text() == "hi\n"
    r = sh("--mount", f"type=bind,source={tmp_path}/nope,target=/n", script="true")
    assert r.returncode == 125 and "does not exist" in one_error_line(r)
    # binds see host changes while the container runs
    cid = ok(run_pybuild("run", "-d", "-v", f"{host}:/data", IMG, "sh", "-c",
                         "while ! test -f /data/go; do sleep 0.05; done; cat /data/go")).stdout.strip()
    (host / "go").write_text("live\n")
    ok(run_pybuild("wait", cid))
    assert ok(run_pybuild("logs", cid)).stdout == "live\n"
    ok(run_pybuild("rm", cid))


def test_named_volume_persists_and_copy_up(busybox_root):
    ok(sh("-v", "data:/data", script="echo kept > /data/f"))
    r = ok(sh("-v", "data:/other", script="cat /other/f"))
    assert r.stdout == "kept\n"
    assert ok(run_pybuild("volume", "ls", "-q")).stdout.split() == ["data"]
    # a new volume on /etc is filled from the image: files, modes, owners
    r = ok(sh("-v", "etcvol:/etc", script="head -1 /etc/passwd; stat -c '%a %u' /etc/passwd"))
    assert r.stdout.startswith("root:x:0:0:")
    mp = busybox_root / "volumes/etcvol/_data"
    st = os.stat(mp / "passwd")
    assert f"{st.st_mode & 0o7777:o} {st.st_uid}" == r.stdout.splitlines()[1]
    # not new any more: no second copy-up (a deleted file stays deleted)
    ok(sh("-v", "etcvol:/etc", script="rm /etc/group"))
    r = sh("-v", "etcvol:/etc", script="test -e /etc/group && echo back || echo gone")
    assert r.stdout == "gone\n"
    # an existing empty volume made by `volume create` is not new at run: no copy-up either
    ok(run_pybuild("volume", "create", "empty"))
    assert ok(sh("-v", "empty:/etc", script="ls /etc | wc -l")).stdout.strip() == "0"


def test_anonymous_volume_and_tmpfs(busybox_root):
    r = ok(sh("-v", "/anon", script="grep ' /anon ' /proc/mounts | wc -l; echo x > /anon/f"))
    assert r.stdout.strip() == "1"
    assert ok(run_pybuild("volume", "ls", "-q")).stdout == ""       # --rm removed it
    r = ok(run_pybuild("run", "-v", "/anon2", IMG, "true"))
    names = ok(run_pybuild("volume", "ls", "-q")).stdout.split()
    assert len(names) == 1 and re.fullmatch(r"[0-9a-f]{64}", names[0])
    r = ok(sh("--tmpfs", "/t:size=1m", script="grep ' /t ' /proc/mounts; ls -A /t | wc -l"))
    first, count = r.stdout.splitlines()
    assert first.split()[2] == "tmpfs" and "size=1024k" in first and count.strip() == "0"
    r = ok(sh("--mount", "type=tmpfs,target=/etc,tmpfs-size=2m",
              script="grep ' /etc ' /proc/mounts | cut -d' ' -f3; ls -A /etc | grep -c passwd; true"))
    assert r.stdout.split()[0] == "tmpfs" and r.stdout.split()[1] == "0"


def test_volume_commands(busybox_root):
    ok(run_pybuild("volume", "create", "--label", "a=b", "v1"))
    assert ok(run_pybuild("volume", "create", "v1")).stdout == "v1\n"      # docker: reused
    anon = ok(run_pybuild("volume", "create")).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", anon)
    out = ok(run_pybuild("volume", "ls")).stdout.splitlines()
    assert out[0].split() == ["DRIVER", "VOLUME", "NAME"] and ["local", "v1"] in [ln.split() for ln in out]
    doc = json.loads(ok(run_pybuild("volume", "inspect", "v1")).stdout)[0]
    assert doc["Name"] == "v1" and doc["Driver"] == "local" and doc["Scope"] == "local"
    assert doc["Labels"] == {"a": "b"} and doc["Mountpoint"] == str(busybox_root / "volumes/v1/_data")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", doc["CreatedAt"])
    r = run_pybuild("volume", "inspect", "nope")
    assert r.returncode == 1 and "no such volume" in one_error_line(r)
    r = run_pybuild("volume", "create", "bad!")
    assert r.returncode == 1 and "invalid characters" in one_error_line(r)
    # in use by a container (even a stopped one): refused, as docker does; -f removes it
    cid = ok(run_pybuild("create", "-v", "v1:/x", IMG, "true")).stdout.strip()
    r = run_pybuild("volume", "rm", "v1")
    assert r.returncode == 1 and f"volume is in use - [{cid}]" in one_error_line(r)
    r = run_pybuild("volume", "rm", "-f", "v1")  # -f does not take a volume from a container
    assert r.returncode == 1 and "volume is in use" in one_error_line(r)
    assert ok(run_pybuild("volume", "rm", "-f", "never-made")).stdout == ""
    # prune asks, keeps what is used, removes the rest
    r = run_pybuild("volume", "prune", input="n\n")
    assert r.returncode == 1 and "cancelled" in r.stderr
    ok(run_pybuild("volume", "create", "named-unused"))
    r = ok(run_pybuild("volume", "prune", "-f"))  # docker 23+: anonymous ones only
    assert f"Deleted Volumes:\n{anon}\n" in r.stdout and "Total reclaimed space" in r.stdout
    assert ok(run_pybuild("volume", "ls", "-q")).stdout.split() == ["named-unused", "v1"]
    r = ok(run_pybuild("volume", "prune", "-a", "-f"))
    assert "named-unused" in r.stdout
    assert ok(run_pybuild("volume", "ls", "-q")).stdout.split() == ["v1"]
    ok(run_pybuild("rm", cid))
    assert ok(run_pybuild("volume", "rm", "v1")).stdout == "v1\n"
    assert ok(run_pybuild("volume", "ls", "-q")).stdout == ""


def test_detached_container_with_volume(busybox_root):
    cid = ok(run_pybuild("run", "-d", "-v", "dv:/d", "-v", "/anon", IMG, "sh", "-c",
                         "echo started > /d/s; cat /d/s; sleep 30")).stdout.strip()
    end = time.monotonic() + 10
    while ok(run_pybuild("logs", cid)).stdout != "started\n":
        assert time.monotonic() < end
        time.sleep(0.05)
    assert ok(run_pybuild("exec", cid, "cat", "/d/s")).stdout == "started\n"
    mounts = json.loads(ok(run_pybuild("inspect", cid)).stdout)[0]["Mounts"]
    assert [(m["Type"], m.get("Name"), m["Destination"], m["RW"]) for m in mounts][0] == \
        ("volume", "dv", "/d", True)
    anon = mounts[1]["Name"]
    ok(run_pybuild("rm", "-f", "-v", cid))
    assert ok(run_pybuild("volume", "ls", "-q")).stdout.split() == ["dv"]    # anon went with -v
    assert not (busybox_root / "volumes" / anon).exists()
    assert ok(sh("-v", "dv:/d", script="cat /d/s")).stdout == "started\n"


@pytest.mark.parametrize("flag,value,words", [
    ("-v", "data:rel", "must be absolute"),
    ("-v", "/h:/a/../b", "'..'"),
    ("-v", "/h:/", "can't be '/'"),
    ("-v", "x!:/a", "invalid characters"),
    ("-v", "/a:/b:rx", "invalid volume specification"),
    ("--mount", "type=nfs,target=/a", "invalid mount type"),
    ("--mount", "type=volume,source=v", "target is required"),
    ("--tmpfs", "rel", "must be absolute"),
])
def test_bad_specs(busybox_root, flag, value, words):
    r = run_pybuild("run", "--rm", flag, value, IMG, "true")
    assert r.returncode == 125 and words in one_error_line(r)
    assert not (busybox_root / "volumes").exists() or not os.listdir(busybox_root / "volumes") \
        or os.listdir(busybox_root / "volumes") == ["lock"]


def test_name_taken_leaves_no_anonymous_volume(busybox_root):
    ok(run_pybuild("create", "--name", "c1", IMG, "true"))
    r = run_pybuild("run", "-d", "--name", "c1", "-v", "/anon", IMG, "true")
    assert r.returncode == 125 and "already in use" in one_error_line(r)
    assert ok(run_pybuild("volume", "ls", "-q")).stdout == ""
