"""Why a step rebuilt (issue 12): after a build, every step that missed the cache says which of
its inputs changed since the last build of the same Dockerfile and tag — one line under the step
in plain progress, the structured reason in `--progress json`, all of it with --explain-cache."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from e2e_helpers import ok

pytestmark = pytest.mark.usefixtures("busybox_root")

DOCKERFILE = """\
FROM busybox
ARG VERSION=1.2
COPY app /app
RUN echo $VERSION > /v
COPY --chown=1000 extra /extra
RUN cat /v
"""


@pytest.fixture
def ctx(tmp_path) -> Path:
    c = tmp_path / "ctx"
    (c / "app").mkdir(parents=True)
    (c / "app" / "main.py").write_text("print(1)\n")
    (c / "app" / "cfg.toml").write_text("a = 1\n")
    (c / "app" / "old.txt").write_text("old\n")
    (c / "extra").write_text("x\n")
    (c / "Dockerfile").write_text(DOCKERFILE)
    return c


def build(pybuild, ctx: Path, *args: str) -> dict[str, str]:
    """{step text: the cache-miss line under it} of a plain build (cached steps: "CACHED"),
    the layer steps' only (their names show ARG values, as BuildKit's do)."""
    r = ok(pybuild("build", "--progress", "plain", "-t", "why", *args, str(ctx)))
    names, out = {}, {}
    for line in r.stderr.splitlines():
        num, _, rest = line.partition(" ")
        if rest.startswith("[") and not rest.startswith("[internal]") and "] FROM " not in rest:
            names[num] = rest.split("] ", 1)[1]
        elif num in names and rest == "CACHED":
            out[names[num]] = "CACHED"
        elif num in names and rest.startswith("cache miss: "):
            out[names[num]] = rest[len("cache miss: "):]
    return out


def test_first_build_then_each_kind_of_change(pybuild, ctx, tmp_path):
    first = build(pybuild, ctx)  # said once, under the first step that ran
    assert list(first.values()) == ["no earlier build of this Dockerfile and tag to compare with"]
    assert set(build(pybuild, ctx, "--no-cache").values()) == set()  # asked for: nothing to say
    # file content and mode; an added and a removed file
    (ctx / "app" / "main.py").write_text("print(2)\n")
    (ctx / "app" / "cfg.toml").chmod(0o600)
    (ctx / "app" / "new.txt").write_text("new\n")
    (ctx / "app" / "old.txt").unlink()
    got = build(pybuild, ctx)
    assert got["COPY app /app"] == ("4 files changed: app/cfg.toml (mode), app/main.py (content), "
                                   "app/new.txt (added) and 1 more")
    assert got["RUN echo 1.2 > /v"] == "an earlier step changed: COPY app /app"
    assert got["COPY --chown=1000 extra /extra"].startswith("an earlier step changed")
    # ARG / --build-arg
    got = build(pybuild, ctx, "--build-arg", "VERSION=1.3")
    # the ARG step rolls the key of every later step (pybuild keys config steps too)
    assert got["COPY app /app"] == "an earlier step changed: ARG VERSION=1.2 → ARG VERSION=1.3"
    assert got["RUN echo 1.3 > /v"] == "ARG VERSION 1.2 → 1.3"
    assert got["RUN cat /v"] == "ARG VERSION 1.2 → 1.3"
    # a Dockerfile line edit (the --chown owner of one step)
    (ctx / "Dockerfile").write_text(DOCKERFILE.replace("--chown=1000", "--chown=2000"))
    got = build(pybuild, ctx, "--build-arg", "VERSION=1.3")
    assert got["COPY --chown=2000 extra /extra"] == (
        "Dockerfile line 5 changed: COPY --chown=1000 extra /extra → COPY --chown=2000 extra /extra")
    assert got["RUN cat /v"] == ("an earlier step changed: COPY --chown=1000 extra /extra → "
                                 "COPY --chown=2000 extra /extra")


def test_dockerignore_owner_epoch_and_base_retag(pybuild, ctx, tmp_path, monkeypatch):
    build(pybuild, ctx)
    (ctx / ".dockerignore").write_text("app/old.txt\n")
    got = build(pybuild, ctx)
    assert got["COPY app /app"] == ".dockerignore changed; 1 file changed: app/old.txt (removed)"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    got = build(pybuild, ctx)
    assert got["COPY app /app"] == "epoch SOURCE_DATE_EPOCH 0 → 1700000000"
    assert got["RUN echo 1.2 > /v"] == "epoch SOURCE_DATE_EPOCH 0 → 1700000000"
    # busybox:latest retagged to another image: FROM says so
    other = tmp_path / "other"
    other.mkdir()
    (other / "Dockerfile").write_text("FROM busybox\nRUN echo new > /new\n")
    new_id = ok(pybuild("build", "-q", "-t", "busybox", str(other))).stdout.strip()
    got = build(pybuild, ctx)
    assert got["COPY app /app"] == f"FROM: busybox now points at {new_id}"


def test_json_progress_and_explain_cache_in_full(pybuild, ctx):
    build(pybuild, ctx)
    for i in range(5):
        (ctx / "app" / f"f{i}").write_text(str(i))
    r = ok(pybuild("build", "--progress", "json", "--explain-cache", "-t", "why", str(ctx)))
    events = [json.loads(ln) for ln in r.stderr.splitlines() if ln.startswith("{")]
    miss = [e for e in events if e["status"] == "cache-miss"]
    assert miss[0]["name"].endswith("COPY app /app")
    change = miss[0]["reason"]["changes"][0]
    assert change["kind"] == "files" and [f["path"] for f in change["changes"]] == [
        f"app/f{i}" for i in range(5)] and {f["what"] for f in change["changes"]} == {"added"}
    assert miss[0]["line"].endswith("and 2 more")
    report = r.stderr[r.stderr.index("explain-cache:"):]
    assert "explain-cache: 4 steps missed the cache" in report
    assert all(f"    app/f{i}: added" in report for i in range(5)), report
    r = ok(pybuild("build", "--progress", "plain", "--explain-cache", "-t", "why", str(ctx)))
    assert "cache miss" not in r.stderr and "explain-cache: every step was cached" in r.stderr


def test_a_fully_cached_rebuild_never_loads_the_explainer(busybox_root, ctx):
    """Nothing is computed or imported for explanations when every step hits: the replayed
    build loads neither builder.explain nor the solver; the full build before it did."""
    import subprocess
    import sys

    from busybox_fixture import REPO

    code = ("import sys; from builder.cli import main; rc = main(['build', '--progress', 'plain',"
            f" '-t', 'why', {str(ctx)!r}]);"
            "print(rc, sorted(m for m in ('builder.explain', 'builder.solve', 'subprocess')"
            " if m in sys.modules))")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           cwd=REPO, check=False) for _ in range(2)]
    assert "builder.explain" in runs[0].stdout, runs[0].stderr
    assert runs[1].stdout.strip() == "0 []", runs[1].stderr


def test_stages_say_which_stage_changed(pybuild, ctx):
    (ctx / "Dockerfile").write_text("""\
FROM busybox AS build
COPY app /app
RUN cat /app/main.py > /out
FROM build AS child
RUN cat /out > /child
FROM busybox
COPY --from=child /child /child
""")
    build(pybuild, ctx)
    (ctx / "app" / "main.py").write_text("print(3)\n")
    got = build(pybuild, ctx)
    assert got["COPY app /app"] == "1 file changed: app/main.py (content)"
    assert got["RUN cat /app/main.py > /out"] == "an earlier step changed: COPY app /app"
    assert got["RUN cat /out > /child"] == "FROM build: that stage changed"
    assert got["COPY --from=child /child /child"] == (
        "what it copies changed (the stage or image it reads, or a heredoc)")
