"""`inspect -f`, `ps --format` and `images`-style templates give what docker's give: the same
templates on the same busybox image through `pybuild inspect -f` and the private dockerd's
`docker inspect -f`, and template errors as one line."""
from __future__ import annotations

import os
import subprocess

import pytest
from e2e_helpers import one_error_line

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the store needs root (run as root)")

# fields whose values pybuild and docker agree on for the same image
TEMPLATES = [
    "{{.Id}}",
    "{{.Os}}/{{.Architecture}}",
    "{{index .RepoTags 0}}",
    "{{range .RepoTags}}<{{.}}>{{end}}",
    "{{json .RepoTags}}",
    "{{.Config.Env}}",
    "{{json .Config.Cmd}}",
    '{{join .Config.Cmd " "}}',
    "{{range $i, $l := .RootFS.Layers}}{{$i}}:{{$l}} {{end}}",
    "{{len .RootFS.Layers}}",
    "{{.RootFS.Type | upper}}",
    '{{if eq .Os "linux"}}linux{{else}}other{{end}}',
    "{{with .Config}}{{.WorkingDir}}|{{.User}}{{end}}",
    '{{printf "%.19s" .Id}}',
    "{{.Config.Labels}}",
    "{{json .ContainerConfig.Cmd}} {{.DockerVersion}}|{{.ContainerConfig.Tty}}|{{.Container}}",
]
# Not compared: Size and VirtualSize (docker counts file bytes, pybuild the layer tar's),
# GraphDriver (docker's overlay2 dirs; pybuild's layer dirs, Name "overlay"), and a null list
# or map printed bare (docker's typed struct prints [] or map[], pybuild's JSON document
# <nil>; json shows null in both).


@pytest.mark.parametrize("template", TEMPLATES)
def test_inspect_f_as_docker(docker_busybox, busybox_root, pybuild, template):
    theirs = subprocess.run([*docker_busybox, "inspect", "-f", template, "busybox:latest"],
                            capture_output=True, text=True, check=False)
    mine = pybuild("inspect", "-f", template, "busybox:latest")
    assert theirs.returncode == 0, theirs.stderr
    assert mine.returncode == 0, mine.stderr
    assert mine.stdout == theirs.stdout


@pytest.mark.parametrize("template, words", [
    ("{{.Os", "unclosed action"),
    ("{{nofunc .Os}}", 'function "nofunc" not defined'),
    ("{{index .RepoTags 9}}", "index out of range"),
    ("{{.Nope}}", 'map has no entry for key "Nope"'),
])
def test_bad_templates_are_one_line(busybox_root, pybuild, template, words):
    r = pybuild("inspect", "-f", template, "busybox:latest")
    assert r.returncode != 0
    one_error_line(r, "template", words)


def test_ps_format_methods_and_fields(busybox_root, pybuild):
    r = pybuild("create", "--name", "fmt1", "--label", "team=core", "busybox", "true")
    assert r.returncode == 0, r.stderr
    try:
        out = pybuild("ps", "-a", "--format", '{{.Names}} {{.Label "team"}} {{.State | upper}}')
        assert out.stdout == "fmt1 core CREATED\n", out.stderr
        out = pybuild("ps", "-a", "--format", "table {{.Names}}\t{{.Image}}")
        assert out.stdout.splitlines()[0].split() == ["NAMES", "IMAGE"]
        r = pybuild("ps", "-a", "--format", "{{.Nope}}")
        one_error_line(r, "can't evaluate field Nope in type *formatter.ContainerContext")
    finally:
        pybuild("rm", "-f", "fmt1")
