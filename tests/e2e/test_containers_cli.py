"""The container commands around the lifecycle as a docker user types them, on busybox:latest,
each its own process: `ps --filter/--format/-n/-l`, `container prune`, `logs --since/--until/-n`,
`top`, `port`, and the `container ...` management forms."""
from __future__ import annotations

import json
import os
import re
import time

import pytest
import test_containers
from busybox_fixture import run_pybuild
from e2e_helpers import ok, one_error_line
from test_containers import ID, poll, run_d

root = test_containers.root     # the fixture: a busybox store, every container removed after

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="containers need root (run as root)")


def ps(*flags: str) -> str:
    return ok(run_pybuild("ps", *flags)).stdout


def created(name: str, *cmd: str) -> str:
    cid = ok(run_pybuild("create", "--name", name, "busybox", *cmd)).stdout.strip()
    assert ID.match(cid)
    return cid


def test_ps_filter_format_last_latest(root):
    up = run_d("--name", "up", "busybox", "sleep", "30")
    ok(run_pybuild("run", "--name", "three", "-d", "busybox", "sh", "-c", "exit 3"))
    assert ok(run_pybuild("wait", "three")).stdout == "3\n"
    new = created("new", "true")

    def names(*flags):
        return ps("--format", "{{.Names}}", *flags).split()

    assert names() == ["up"]
    assert names("-a") == ["new", "three", "up"]                 # newest first
    assert names("--filter", "status=exited") == ["three"]       # a status filter: every state
    assert names("-f", "status=created", "-f", "status=running") == ["new", "up"]
    assert names("-a", "--filter", "name=e") == ["new", "three"]  # a substring, as docker
    assert names("-a", "--filter", "name=^up$") == ["up"]
    assert names("-a", "-f", f"id={up[:5]}") == ["up"]
    assert names("-f", "exited=3") == ["three"] and names("-f", "exited=0") == []
    assert names("-a", "-f", "ancestor=busybox") == ["new", "three", "up"]
    image_id = json.loads(ok(run_pybuild("inspect", "busybox")).stdout)[0]["Id"]
    assert names("-a", "-f", f"ancestor={image_id.removeprefix('sha256:')[:12]}") == \
        ["new", "three", "up"]
    assert names("-a", "-f", "ancestor=nosuchimage") == []
    assert names("-a", "-f", "label=nosuchlabel") == []
    assert names("-a", "-f", "name=up", "-f", "status=exited") == []   # keys AND'ed
    assert names("-n", "2") == ["new", "three"] and names("--last", "1") == ["new"]
    assert names("-l") == ["new"] and ps("-lq") == new[:12] + "\n"

    three = ps("-aq", "-f", "name=three").strip()
    line = ps("--format", "{{.ID}}|{{.Image}}|{{.Command}}|{{.State}}|{{.Status}}", "-af",
              "name=three")
    assert re.fullmatch(rf'{three}\|busybox\|"sh -c exit 3"\|exited\|Exited \(3\) .+ ago\n',
                        line), line
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4} \w+\n",
                        ps("-l", "--format", "{{.CreatedAt}}"))
    key = "org.pybuild.fixture.busybox.sha256"      # the fixture image's label
    labels = ps("--format", "{{.ID}} {{.Labels}}")
    assert re.fullmatch(rf"{up[:12]} {re.escape(key)}=[0-9a-f]{{64}}\n", labels), labels
    value = labels.strip().partition("=")[2]
    assert ps("--format", f'{{{{.Label "{key}"}}}}') == value + "\n"
    assert names("-a", "-f", f"label={key}") == names("-a", "-f", f"label={key}={value}") == \
        ["new", "three", "up"]
    assert names("-a", "-f", f"label={key}=x") == []
    assert ps("--no-trunc", "--format", "{{.ID}}") == up + "\n"
    doc = json.loads(ps("--format", "{{json .}}"))
    assert doc["ID"] == up[:12] and doc["Names"] == "up" and doc["State"] == "running"
    assert doc["Command"] == '"sleep 30"' and doc["Status"].startswith("Up ")
    assert ps("--format", "{{json .Names}}") == '"up"\n'

    table = ps("-a", "--format", "table {{.Names}}\\t{{.State}}").splitlines()
    assert table == ["NAMES     STATE", "new       created", "three     exited",
                     "up        running"]
    assert ps("-a", "-f", "name=nomatch", "--format", "table {{.ID}}\\t{{.Names}}") == \
        "CONTAINER ID   NAMES\n"

    one_error_line(run_pybuild("ps", "--filter", "colour=red"), "invalid filter 'colour'", code=1)
    one_error_line(run_pybuild("ps", "--filter", "status=sleeping"),
                   "invalid filter 'status=sleeping'", code=1)
    one_error_line(run_pybuild("ps", "--filter", "status"), "bad format of filter", code=1)
    one_error_line(run_pybuild("ps", "--format", "{{.Nope}}"), "can't evaluate field Nope",
                   code=1)
    one_error_line(run_pybuild("ps", "-s"), "--size", code=1)
    assert ok(run_pybuild("container", "ls", "-q")).stdout == up[:12] + "\n"
    assert ok(run_pybuild("container", "list", "-a", "--format", "{{.Names}}")).stdout.split() \
        == ["new", "three", "up"]
