"""`pybuild build`'s progress as BuildKit's (docker 20.10, DOCKER_BUILDKIT=1) where users read it:
the same Dockerfiles through pybuild and the private dockerd, plain lines compared after times,
sizes and digests are normalised; the terminal view under a pty of 60 and 120 columns."""
from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from busybox_fixture import REPO

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds need root (run as root)")

MULTI = """\
FROM busybox AS base
ARG GREETING=hello
ENV WHO=world
LABEL a=b
WORKDIR /app
RUN echo "$GREETING $WHO" > /greet && echo line1 && echo line2
COPY f.txt /app/$GREETING.txt

FROM base AS second
ENV DIR=/opt/$WHO
RUN cat /greet
WORKDIR $DIR
COPY --from=base /greet $DIR/
ADD f.txt /x/${WHO}
RUN echo "a step whose command is longer than eighty columns, which BuildKit's plain printer never cuts"
USER root
CMD ["sh"]
"""

FAILING = "FROM busybox\nENV X=1\nRUN echo before && exit 3\nRUN echo never\n"


def context(tmp_path: Path, dockerfile: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    (ctx / "f.txt").write_text("hi\n")
    return ctx


def normalised(text: str) -> list[str]:
    """Plain progress with times, sizes and digests made constant; docker 20.10's `#N sha256:`
    line under each name (the vertex digest, which pybuild has not) and pybuild's `cache miss`
    lines dropped."""
    out = []
    for line in text.splitlines():
        if re.fullmatch(r"#\d+ sha256:[0-9a-f]{64}", line) or re.match(r"#\d+ cache miss: ", line):
            continue    # pybuild's own: why a step missed the cache (builder.explain)
        line = re.sub(r"sha256:[0-9a-f]{64}", "sha256:D", line)
        line = re.sub(r"^(#\d+) \d+\.\d+ ", r"\1 T ", line)        # a log line's offset
        line = re.sub(r" \d+(\.\d+)?s( done)?$", r"\2", line)      # DONE 0.1s, a status's time
        line = re.sub(r": \d+(\.\d+)?[kMG]?B", ": SIZE", line)     # transferring ...: 375B
        out.append(line)
    return out


def vertices(text: str) -> dict[str, list[str]]:
    """{vertex name: its other lines, in order}, numbers dropped (the plain printer repeats a
    name when another vertex's lines came between)."""
    names: dict[str, str] = {}
    out: dict[str, list[str]] = {}
    for line in normalised(text):
        m = re.fullmatch(r"#(\d+) (.*)", line)
        if not m:
            if line:        # the error the build ends with: the progress is over
                break
            continue        # a blank line between vertices
        num, rest = m.groups()
        if num not in names:
            names[num] = rest
            out[rest] = []
        elif rest != names[num] and rest != "...":
            out[names[num]].append(rest)
    return out


def numbered_in_order(text: str) -> None:
    """Vertices are #1, #2, ... by first appearance, as BuildKit numbers them."""
    seen = []
    for line in text.splitlines():
        m = re.match(r"#(\d+) ", line)
        if m and int(m.group(1)) not in seen:
            seen.append(int(m.group(1)))
    assert sorted(seen) == list(range(1, len(seen) + 1)), seen


def docker_build(docker, ctx: Path, tag: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*docker, "build", "--network", "host", "--progress", "plain", "-t", tag,
                           *args, str(ctx)], capture_output=True, text=True, check=False,
                          env={**os.environ, "DOCKER_BUILDKIT": "1"}, timeout=300)


def outcome(lines: list[str]) -> str:
    return lines[-1].split()[0].rstrip(":") if lines else ""


def test_plain_multi_stage_as_buildkit(docker_busybox, busybox_root, pybuild, tmp_path):
    ctx = context(tmp_path, MULTI)
    theirs = docker_build(docker_busybox, ctx, "prog-multi")
    ours = pybuild("build", "--progress", "plain", "-t", "prog-multi", str(ctx))
    assert theirs.returncode == ours.returncode == 0, (theirs.stderr, ours.stderr)
    numbered_in_order(ours.stderr)
    d, p = vertices(theirs.stderr), vertices(ours.stderr)
    # the same vertices under the same names: [stage i/n] over the vertex steps only, ARG and
    # ENV values in, nothing cut, no FROM for the stage built on another; the [internal] loads
    assert sorted(p) == sorted(d), (sorted(p), sorted(d))
    assert "[second 5/5] RUN echo \"a step whose command is longer than eighty columns, which " \
           "BuildKit's plain printer never cuts\"" in p
    assert "[second 3/5] COPY --from=base /greet /opt/world/" in p
    for name in d:
        if name.startswith(("[internal]", "exporting")):    # their sub-tasks too
            assert [x for x in p[name] if "done" in x] == [x for x in d[name] if "done" in x], name
        if " RUN " in name:                                 # the output and how it ended
            assert p[name] == d[name], name
    assert p["exporting to image"] == ["exporting layers done", "writing image sha256:D done",
                                       "naming to docker.io/library/prog-multi done", "DONE"]
    assert re.search(r"\n\n#(\d+) exporting to image\n(#\1 .*\n)+\Z", ours.stderr), ours.stderr
    assert "#1 DONE 0.0s\n\n#2 [internal] load .dockerignore\n" in ours.stderr

    # a fully cached rebuild: every step CACHED in both (pybuild's is a replay of its record)
    theirs = docker_build(docker_busybox, ctx, "prog-multi")
    replayed = pybuild("build", "--progress", "plain", "-t", "prog-multi", str(ctx))
    assert theirs.returncode == replayed.returncode == 0
    d, p = vertices(theirs.stderr), vertices(replayed.stderr)
    assert sorted(p) == sorted(d)
    for name in d:
        if "] FROM " not in name and name.startswith("["):
            want = "DONE" if "[internal]" in name else "CACHED"
            assert outcome(p[name]) == outcome(d[name]) == want, name
    # and a full cached build (no record to replay) prints what the replay printed
    for f in (busybox_root / "replay").iterdir():
        f.unlink()
    full = pybuild("build", "--progress", "plain", "-t", "prog-multi", str(ctx))
    assert normalised(full.stderr) == normalised(replayed.stderr)


def test_plain_failing_run_as_buildkit(docker_busybox, busybox_root, pybuild, tmp_path):
    ctx = context(tmp_path, FAILING)
    theirs = docker_build(docker_busybox, ctx, "prog-fail")
    ours = pybuild("build", "--progress", "plain", "-t", "prog-fail", str(ctx))
    assert theirs.returncode == ours.returncode == 1
    d, p = vertices(theirs.stderr), vertices(ours.stderr)
    assert sorted(p) == sorted(d)       # no export, nothing of the step after
    step = "[2/3] RUN echo before && exit 3"
    assert p[step][0] == d[step][0] == "T before"
    assert p[step][-1].startswith("ERROR: ") and d[step][-1].startswith("ERROR: ")
    assert "echo never" not in ours.stderr


# -- the terminal view ------------------------------------------------------------------------
def in_pty(argv: list[str], cols: int, rows: int = 40, env: dict | None = None) -> str:
    """What `argv` wrote to a terminal of `cols` x `rows` (stdout and stderr)."""
    pid, fd = pty.fork()
    if pid == 0:        # the child: its terminal is the pty
        try:
            os.chdir(REPO)
            os.execvpe(argv[0], argv, env or os.environ)
        finally:
            os._exit(127)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:     # EIO: the child closed its side
            break
        if not chunk:
            break
        out += chunk
    os.waitpid(pid, 0)
    os.close(fd)
    return out.decode("utf-8", "replace")


SGR = re.compile(r"\x1b\[[0-9;]*m")
CURSOR = re.compile(r"\x1b\[(\?25[hl]|\d*[ABGK])")


def screen_lines(raw: str) -> list[str]:
    return [CURSOR.sub("", SGR.sub("", x)).lstrip("\r") for x in raw.split("\r\n")]


def final_frame(raw: str) -> list[str]:
    lines = screen_lines(raw)
    start = max(i for i, x in enumerate(lines) if x.startswith("[+] Building"))
    return [x for x in lines[start:] if x.strip() and not x.startswith("pybuild:")]


def pybuild_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "builder", "build", *args]


@pytest.mark.parametrize("cols", [60, 120])
def test_tty_fits_the_terminal(busybox_root, tmp_path, cols):
    ctx = context(tmp_path, "FROM busybox\nARG N=5\n"
                  "RUN for i in $(seq 1 $N); do echo \"output line $i of a step, long enough to "
                  "wrap in a narrow terminal\"; sleep 0.3; done\nCOPY f.txt /f\n")
    raw = in_pty(pybuild_argv("-t", "prog-tty", str(ctx)), cols)
    lines = screen_lines(raw)
    assert all(len(x) <= cols for x in lines), [x for x in lines if len(x) > cols]
    frame = final_frame(raw)
    assert re.fullmatch(r"\[\+\] Building \d+\.\ds \((\d+)/\1\) FINISHED *", frame[0]), frame
    assert any(x.startswith(" => [2/3] RUN for i in $(seq 1 5)") for x in frame), frame
    assert all(re.search(r" \d+\.\ds$", x) for x in frame[1:]), frame    # every line has its time
    assert " => => naming to docker.io/library/prog-tty" in "\n".join(frame)
    logs = [x for x in lines if x.startswith(" => => # ")]
    assert any("output line 2" in x for x in logs), lines      # the running step's output
    assert "\x1b[34m" in raw        # finished lines in blue

    again = in_pty(pybuild_argv("-t", "prog-tty", str(ctx)), cols)   # a replay: one frame
    frame = final_frame(again)
    cached = [x for x in frame if x.startswith(" => CACHED ")]
    assert len(cached) == 3 and all(re.search(r" 0\.0s$", x) for x in cached), frame


def test_tty_error_no_color_and_pipe(busybox_root, tmp_path):
    ctx = context(tmp_path, FAILING)
    raw = in_pty(pybuild_argv("-t", "prog-fail", str(ctx)), 80,
                 env={**os.environ, "NO_COLOR": "1"})
    frame = final_frame(raw)
    assert re.fullmatch(r"\[\+\] Building \d+\.\ds \(\d+/\d+\) *", frame[0]), frame  # not FINISHED
    assert any(x.startswith(" => ERROR [2/3] RUN echo before && exit 3 ") for x in frame), frame
    assert not any("echo never" in x for x in frame)
    assert SGR.search(raw) is None and "\x1b[" in raw      # no colour, cursor moves only
    raw = in_pty(pybuild_argv("-t", "prog-fail", str(ctx)), 80,
                 env={**os.environ, "BUILDKIT_COLORS": "error=green"})
    assert "\x1b[32m => ERROR [2/3]" in raw
    # --progress tty into a pipe: plain lines, as docker's CLI falls back to
    r = subprocess.run(pybuild_argv("--progress", "tty", str(ctx)), capture_output=True, text=True,
                       cwd=REPO, check=False)
    assert r.returncode == 1 and "\x1b[" not in r.stderr
    assert "#5 [2/3] RUN echo before && exit 3\n#5 " in r.stderr, r.stderr


def test_tty_as_docker_on_a_cached_rebuild(docker_busybox, busybox_root, tmp_path):
    """The last frame of a cached rebuild at 60 columns: the same lines as docker's, times and
    digests aside (docker lists its vertices in the order they started, which may differ)."""
    ctx = context(tmp_path, MULTI)
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    for _ in range(2):
        theirs = in_pty([*docker_busybox, "build", "--network", "host", "-t", "prog-cmp", str(ctx)],
                        60, env=env)
        ours = in_pty(pybuild_argv("-t", "prog-cmp", str(ctx)), 60)

    def norm(frame):
        out = []
        for x in frame[1:]:
            x = re.sub(r" +\d+\.\ds$", "", x).rstrip()
            x = re.sub(r"sha256:[0-9a-f]+", "sha256:D", x)
            x = re.sub(r"(: )\d+(\.\d+)?[kMG]?B$", r"\1SIZE", x)
            out.append(x.replace("CACHED [base 1/4] FROM", "[base 1/4] FROM"))
        return sorted(out)
    assert norm(final_frame(ours)) == norm(final_frame(theirs))
    assert re.search(r"\(\d+/\d+\) FINISHED", final_frame(theirs)[0])
