"""builder.progress's layouts, printer by printer: BuildKit's plain lines and terminal frame."""
from __future__ import annotations

import io
import re

import grammar
from builder.plan import plan
from builder.progress import PlainProgress, Progress, colors, frame, log_time, size_text
from builder.solve import vertex_prefix, vertex_total
from cache.refs import display

NO_SGR = {"run": "", "error": "", "cancel": "", "log": "", "reset": ""}


def test_plain_lines_blank_between_vertices_and_a_running_one_interrupted():
    out = io.StringIO()
    p = PlainProgress(out)
    a = p.start("[1/3] RUN a")
    p.log(a, b"one\n")
    b = p.start("[2/3] RUN b")      # a still runs: BuildKit says so and shows b's header
    p.log(b, b"two\n")
    p.done(b)
    p.log(a, b"three\n")            # a's header comes again
    p.status(a, "writing image sha256:x")
    p.cached(a)
    lines = [re.sub(r"^(#\d) \d\.\d{3} ", r"\1 T ", x) for x in out.getvalue().splitlines()]
    assert lines == ["#1 [1/3] RUN a", "#1 T one", "#1 ...", "", "#2 [2/3] RUN b", "#2 T two",
                     re.sub(r"[\d.]+s$", "", lines[6]) + lines[6][-4:], "", "#1 [1/3] RUN a",
                     "#1 T three", "#1 writing image sha256:x done", "#1 CACHED"]
    assert re.fullmatch(r"#2 DONE \d\.\ds", lines[6])


def test_log_times_and_sizes_as_buildkit_writes_them():
    assert [log_time(x) for x in (0.0811, 12.3456, 123.45)] == ["0.081", "12.35", "123.5"]
    assert [size_text(x) for x in (0, 375, 1234, 2_500_000)] == ["0B", "375B", "1.23kB", "2.50MB"]


def _progress(names: list[str], running: int = 0) -> Progress:
    p = Progress(io.StringIO())
    for i, name in enumerate(names):
        v = p.start(name)
        if i < len(names) - running:
            p.done(v)
    return p


def test_frame_fits_the_width_and_skips_what_cannot_show():
    long = "[stage-1 2/4] RUN " + "x" * 200
    p = _progress(["[internal] load build definition from Dockerfile", long])
    p.status(p.vertices[0], "transferring dockerfile: 32B")
    for width in (40, 60, 120):
        lines = frame(p, width, 30, True, NO_SGR)
        assert all(len(x) == width - 1 for x in lines), lines
        assert re.fullmatch(r"\[\+\] Building \d+\.\ds \(2/2\) FINISHED *", lines[0])
        assert lines[2].startswith(" => => transferring dockerfile: 32B"[:width - 7])
        assert lines[3].startswith(" => [stage-1 2/4] RUN xxx") and lines[3].endswith(" 0.0s")
        assert len(lines[3].rstrip("0123456789.s").rstrip()) == width - 7   # cut at width-11
    assert frame(p, 20, 30, True, NO_SGR)[1:] == []     # no room for a name: no line


def test_frame_cached_error_canceled_and_colours():
    p = _progress(["[1/3] FROM x", "[2/3] RUN y"], running=1)
    p.expected = 3      # the plan's [3/3] never started: not FINISHED
    p.cached(p.vertices[0])
    p.fail(p.vertices[1], "exit code: 3")
    sgr = colors({})
    lines = frame(p, 80, 30, True, sgr)
    assert lines[1] == "\x1b[34m" + " => CACHED [1/3] FROM x".ljust(73) + "  0.0s\x1b[0m"
    assert lines[2].startswith("\x1b[31m => ERROR [2/3] RUN y")
    assert "FINISHED" not in lines[0]
    q = _progress(["[2/3] RUN z"], running=1)
    q.cancel(q.vertices[0])
    assert frame(q, 80, 30, True, sgr)[1].startswith("\x1b[33m => CANCELED [2/3] RUN z")


def test_running_steps_show_their_last_log_rows_and_the_frame_keeps_to_the_height():
    p = _progress([f"[{i}/30] RUN s{i}" for i in range(1, 31)], running=1)
    run = p.vertices[-1]
    p.log(run, b"".join(b"line %d\n" % i for i in range(10)))
    roomy = frame(p, 60, 60, False, NO_SGR)
    logs = [x for x in roomy if x.startswith(" => => # ")]
    assert [x.split()[-1] for x in logs] == ["4", "5", "6", "7", "8", "9"]   # the last 6 rows
    assert all(len(x) == 59 for x in logs)
    short = frame(p, 60, 12, False, NO_SGR)     # 10 lines for jobs; no room for logs
    assert len(short) == 11 and short[-1].startswith(" => [30/30] RUN s30")
    assert not any(x.startswith(" => => # ") for x in short)


def test_no_color_and_buildkit_colors():
    assert set(colors({"NO_COLOR": "1"}).values()) == {""}
    c = colors({"BUILDKIT_COLORS": "run=green:error=light-red:cancel=255,0,255:warning=blue:x"})
    assert (c["run"], c["error"], c["cancel"]) == ("\x1b[32m", "\x1b[91m", "\x1b[38;5;201m")
    assert colors({"BUILDKIT_COLORS": "run=nosuch"})["run"] == "\x1b[34m"


def test_vertex_numbering_as_dockerfile2llb():
    df = grammar.parse("FROM busybox AS base\nARG A=1\nENV B=2\nWORKDIR /app\n"
                       + "RUN x\n" * 10 + "COPY a b\n"
                       "FROM base\nLABEL x=y\nRUN y\n"
                       "FROM scratch AS empty\nCMD [\"x\"]\n")
    pl = plan(df, {}, None)
    base, child, empty = pl.stages
    assert [vertex_total(s) for s in pl.stages] == [13, 1, 0]   # FROM image, WORKDIR, RUN, COPY
    assert vertex_prefix(pl, base, 1, 13) == "[base  1/13] "
    assert vertex_prefix(pl, child, 1, 1) == "[stage-1 1/1] "
    assert vertex_prefix(pl, empty, 1, 0) == ""
    single = plan(grammar.parse("FROM busybox AS only\nRUN x\n"), {}, None)
    assert vertex_prefix(single, single.stages[0], 2, 2) == "[2/2] "   # one stage: no name


def test_references_as_buildkit_names_them():
    assert display("busybox", default_tag=False) == "docker.io/library/busybox"
    assert display("busybox", default_tag=True) == "docker.io/library/busybox:latest"
    assert display("localhost:5000/a/b:v1", default_tag=False) == "localhost:5000/a/b:v1"
    assert display("Not A Ref", default_tag=True) == "Not A Ref"
