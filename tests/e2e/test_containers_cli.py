"""The container commands around the lifecycle as a docker user types them, on busybox:latest,
each its own process: `ps --filter/--format/-n/-l`, `container prune`, `logs --since/--until/-n`,
`top`, `port`, and the `container ...` management forms."""
from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest
import test_containers
from busybox_fixture import run_pybuild
from e2e_helpers import ok, one_error_line
from test_containers import ID, poll, run_d, state

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
    assert names("-n", "0") == ["new", "three", "up"]             # docker: no limit, every state
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
    assert ok(run_pybuild("ps", "-s")).stdout.split("\n")[0].endswith("SIZE")   # test_cli_rare_flags
    assert ok(run_pybuild("container", "ls", "-q")).stdout == up[:12] + "\n"
    assert ok(run_pybuild("container", "list", "-a", "--format", "{{.Names}}")).stdout.split() \
        == ["new", "three", "up"]


def test_container_prune_asks_then_removes_every_stopped_one(root):
    up = run_d("--name", "up", "busybox", "sleep", "30")
    gone = run_d("--name", "gone", "busybox", "sh", "-c", "echo data > /file")
    ok(run_pybuild("wait", "gone"))
    fresh = created("fresh", "true")

    r = run_pybuild("container", "prune", input="n\n")
    assert r.stdout == ("WARNING! This will remove all stopped containers.\n"
                        "Are you sure you want to continue? [y/N] ")
    one_error_line(r, "container prune has been cancelled", code=1)
    assert len(ps("-aq").split()) == 3

    r = ok(run_pybuild("container", "prune", "--filter", "until=2000-01-01T00:00:00Z", "-f"))
    assert r.stdout == "Total reclaimed space: 0B\n"             # all are newer than that
    r = ok(run_pybuild("container", "prune", "--filter", "label=no.such.label", "-f"))
    assert r.stdout == "Total reclaimed space: 0B\n"

    dead = run_d("--name", "dead", "busybox", "sleep", "30")     # its supervisor killed
    os.kill(int(state(root, dead)["supervisor"].split(".")[0]), signal.SIGKILL)
    poll(lambda: ps("-f", "status=dead", "--format", "{{.Names}} {{.State}}") == "dead dead\n")
    r = ok(run_pybuild("container", "prune", "-f", "--filter",
                       "label!=org.pybuild.fixture.busybox.sha256"))   # every one has it
    assert r.stdout == "Total reclaimed space: 0B\n"

    r = ok(run_pybuild("container", "prune", "--filter", "label!=no.such.label", input="y\n"))
    head, _, rest = r.stdout.partition("[y/N] ")
    assert head.startswith("WARNING!")
    lines = rest.split("\n")
    assert lines[0] == "Deleted Containers:" and sorted(lines[1:4]) == sorted([gone, fresh, dead])
    assert lines[4] == "" and lines[5] == "Total reclaimed space: 5B"   # /file: "data\n"
    assert lines[6:] == [""]
    assert ps("-aq", "--no-trunc").split() == [up]
    assert not (root / "containers" / gone).exists()
    assert ok(run_pybuild("container", "prune", "-f")).stdout == "Total reclaimed space: 0B\n"
    one_error_line(run_pybuild("container", "prune", "-f", "--filter", "name=x"),
                   "invalid filter 'name'", code=1)


def test_logs_since_until_and_n(root):
    cid = run_d("--name", "talk", "busybox", "sh", "-c",
                "echo one; sleep 1.2; echo two; echo three; sleep 30")
    poll(lambda: ok(run_pybuild("logs", "talk")).stdout.count("\n") == 3)
    log = (root / "containers" / cid / f"{cid}-json.log").read_text().splitlines()
    t_two = json.loads(log[1])["time"]

    assert ok(run_pybuild("logs", "--since", t_two, "talk")).stdout == "two\nthree\n"
    assert ok(run_pybuild("logs", "--until", t_two, "talk")).stdout == "one\ntwo\n"
    assert ok(run_pybuild("logs", "--since", "10m", "talk")).stdout == "one\ntwo\nthree\n"
    assert ok(run_pybuild("logs", "--until", "10m", "talk")).stdout == ""
    assert ok(run_pybuild("logs", "--since", str(int(time.time()) + 60), "talk")).stdout == ""
    assert ok(run_pybuild("logs", "--since", "2000-01-01", "talk")).stdout == "one\ntwo\nthree\n"
    assert ok(run_pybuild("logs", "-n", "2", "talk")).stdout == "two\nthree\n"
    assert ok(run_pybuild("logs", "-n", "2", "--since", t_two, "talk")).stdout == "two\nthree\n"
    r = ok(run_pybuild("logs", "-f", "--until", "0.1s", "talk", timeout=10))   # follow ends
    assert r.stdout == "one\ntwo\nthree\n"
    one_error_line(run_pybuild("logs", "--since", "yesterday", "talk"), "--since", code=1)


def test_top_shows_the_containers_processes_and_port_is_empty(root):
    cid = run_d("--name", "busy", "busybox", "sh", "-c", "sleep 31 & exec sleep 32")
    doc = json.loads(ok(run_pybuild("inspect", "busy")).stdout)[0]
    pid1 = doc["State"]["Pid"]

    def rows():
        lines = ok(run_pybuild("top", "busy")).stdout.splitlines()
        return lines if len(lines) == 3 else None
    lines = poll(rows)
    assert re.split(r"\s{2,}", lines[0]) == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME",
                                             "CMD"]
    assert lines[0].index("PID") == 20                   # docker's tabwriter: min width 20
    cells = [re.split(r"\s{2,}", ln.strip(), maxsplit=7) for ln in lines[1:]]
    by_cmd = {c[-1]: c for c in cells}
    # host pids; the command (sh exec'd into sleep 32) is the container's pid 1
    assert set(by_cmd) == {"sleep 31", "sleep 32"}
    assert by_cmd["sleep 32"][:2] == ["root", str(pid1)]
    assert by_cmd["sleep 31"][2] == str(pid1)
    assert all(c[5] == "?" and re.fullmatch(r"\d\d:\d\d:\d\d", c[6]) for c in cells)
    assert all(re.fullmatch(r"\d\d:\d\d", c[4]) for c in cells)

    aux = ok(run_pybuild("top", "busy", "-o", "pid,args")).stdout.splitlines()
    assert aux[0].split() == ["PID", "COMMAND"] and len(aux) == 3
    assert {ln.split(None, 1)[1] for ln in aux[1:]} == {"sleep 31", "sleep 32"}

    r = ok(run_pybuild("port", "busy"))
    assert (r.stdout, r.stderr) == ("", "")
    one_error_line(run_pybuild("port", "busy", "80"), "No public port '80/tcp' published for busy",
                   code=1)
    one_error_line(run_pybuild("port", "nope"), "No such container: nope", code=1)
    ok(run_pybuild("container", "kill", "busy"))
    ok(run_pybuild("container", "wait", "busy"))
    one_error_line(run_pybuild("top", "busy"), f"Container {cid} is not running", code=1)
    assert ok(run_pybuild("container", "rm", "busy")).stdout == "busy\n"
    assert ok(run_pybuild("container", "ls", "-aq")).stdout == ""
