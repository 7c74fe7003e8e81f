"""`images` and `history` as docker's: REPOSITORY[:TAG] with wildcards, --filter, --format
(Go templates, table), --digests, -q, compared line for line with the private dockerd's
`docker images` over the same images (a `pybuild save` loaded there)."""
from __future__ import annotations

import os
import subprocess

import pytest
from e2e_helpers import one_error_line

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the store needs root (run as root)")

NAMES = ("pbfmt/a:1", "pbfmt/a:2", "pbfmt/b:1")
FMT = "{{.Repository}}:{{.Tag}} {{.ID}}"


@pytest.fixture
def images(busybox_root, pybuild):
    for i, name in enumerate(NAMES):
        r = pybuild("build", "-q", "-t", name, "-", input=f"FROM busybox\nLABEL n={i} team=t{i % 2}\n")
        assert r.returncode == 0, r.stderr
    return NAMES


@pytest.fixture
def docker_images(docker_busybox, images, pybuild, tmp_path):
    tar = tmp_path / "imgs.tar"
    assert pybuild("save", "-o", str(tar), *images).returncode == 0
    subprocess.run([*docker_busybox, "load", "-i", str(tar)], check=True, capture_output=True)
    yield docker_busybox
    subprocess.run([*docker_busybox, "rmi", "-f", *images], capture_output=True, check=False)


@pytest.mark.parametrize("args", [
    ["pbfmt/a"], ["pbfmt/a:2"], ["pbfmt/*"], ["*/b"], ["--filter", "label=team=t0"],
    ["--filter", "label=n"], ["--filter", "reference=pbfmt/*:1"],
    ["--filter", "dangling=false", "pbfmt/b"], ["--filter", "since=pbfmt/a:1", "pbfmt/*"],
])
def test_same_rows_as_docker(docker_images, pybuild, args):
    theirs = subprocess.run([*docker_images, "images", "--format", FMT, *args], capture_output=True,
                            text=True, check=False)
    assert theirs.returncode == 0, theirs.stderr
    mine = pybuild("images", "--format", FMT, *args)
    assert mine.returncode == 0, mine.stderr
    assert sorted(mine.stdout.splitlines()) == sorted(theirs.stdout.splitlines()), args


def test_table_json_quiet_and_digests(images, pybuild):
    out = pybuild("images", "--digests", "pbfmt/a").stdout.splitlines()
    assert out[0].split() == ["REPOSITORY", "TAG", "DIGEST", "IMAGE", "ID", "CREATED", "SIZE"]
    assert len(out) == 3
    ids = pybuild("images", "-q", "pbfmt/*").stdout.split()
    assert len(ids) == 3 and all(len(i) == 12 for i in ids)
    import json

    row = json.loads(pybuild("images", "--format", "{{json .}}", "pbfmt/b").stdout)
    assert list(row) == sorted(row) and row["Repository"] == "pbfmt/b" and row["Tag"] == "1"
    out = pybuild("images", "--format", "table {{.Tag}}\t{{.Repository}}", "pbfmt/b").stdout
    assert out.splitlines() == ["TAG       REPOSITORY", "1         pbfmt/b"]


def test_bad_filter_and_format_are_one_line(images, pybuild):
    one_error_line(pybuild("images", "--filter", "color=red"), "color")
    one_error_line(pybuild("images", "--format", "{{.Nope}}"),
                   "can't evaluate field Nope in type *formatter.imageContext")
    one_error_line(pybuild("images", "--filter", "dangling=maybe"), "dangling=maybe")
    one_error_line(pybuild("images", "busy["), "not a valid pattern")
    one_error_line(pybuild("images", "--filter", "reference=["), "not a valid pattern")


def test_history_format_and_human(images, pybuild):
    out = pybuild("history", "--format", "{{.ID}}|{{.CreatedBy}}", "pbfmt/a:1").stdout.splitlines()
    assert out[0].endswith('|LABEL n=0 team=t0') and out[0].split("|")[0] != "<missing>"
    raw = pybuild("history", "-H=false", "--format", "{{.CreatedSince}} {{.Size}}", "pbfmt/a:1")
    assert raw.stdout.splitlines()[0] == "1970-01-01T00:00:00Z 0", raw.stdout
    header = pybuild("history", "pbfmt/a:1").stdout.splitlines()[0].split()
    assert header == ["IMAGE", "CREATED", "CREATED", "BY", "SIZE", "COMMENT"]
