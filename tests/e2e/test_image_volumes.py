"""The image's VOLUME entries as `docker run` makes them: an anonymous volume per path, filled
from the image (docker's copy-up), unless a -v/--mount/--tmpfs covers that path; `run --rm` and
`rm -v` remove them, `commit` leaves their contents out."""
from __future__ import annotations

import json
import os

import pytest
import test_containers
from busybox_fixture import run_pybuild
from e2e_helpers import ok
from test_containers import run_d

root = test_containers.root     # a busybox store; every container removed after

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="containers need root (run as root)")


@pytest.fixture
def volimg(root, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN mkdir -p /data && echo seed > /data/f\n"
                                    "VOLUME /data /empty\n")
    ok(run_pybuild("build", "-q", "-t", "volimg", str(ctx)))
    return "volimg"


def volumes() -> list[str]:
    return ok(run_pybuild("volume", "ls", "-q")).stdout.split()


def test_image_volumes_are_anonymous_volumes_filled_from_the_image(volimg, tmp_path):
    r = ok(run_pybuild("run", "--rm", volimg, "sh", "-c",
                       "cat /data/f; grep -c -E ' /data | /empty ' /proc/mounts; echo x > /data/g"))
    assert r.stdout == "seed\n2\n"
    assert volumes() == []                                  # --rm took them
    cid = run_d(volimg, "sleep", "60")
    mounts = json.loads(ok(run_pybuild("inspect", "-f", "{{json .Mounts}}", cid)).stdout)
    assert sorted(m["Destination"] for m in mounts) == ["/data", "/empty"]
    assert all(m["Type"] == "volume" and len(m["Name"]) == 64 for m in mounts)
    assert sorted(volumes()) == sorted(m["Name"] for m in mounts)
    ok(run_pybuild("exec", cid, "sh", "-c", "echo vol > /data/v; echo rw > /rw"))
    ok(run_pybuild("commit", cid, "withvol"))               # volume contents stay out
    r = run_pybuild("run", "--rm", "-v", "/dummy", "withvol", "sh", "-c", "cat /rw; ls /data")
    assert r.stdout == "rw\nf\n", r.stdout
    ok(run_pybuild("rm", "-f", "-v", cid))
    assert volumes() == []


def test_a_mount_on_the_path_replaces_the_image_volume(volimg, tmp_path):
    (tmp_path / "host").mkdir()
    (tmp_path / "host/h").write_text("h\n")
    r = ok(run_pybuild("run", "--rm", "-v", f"{tmp_path}/host:/data", "--tmpfs", "/empty",
                       volimg, "sh", "-c", "ls /data; grep ' /empty ' /proc/mounts | cut -d' ' -f3"))
    assert r.stdout == "h\ntmpfs\n"
    assert volumes() == []
