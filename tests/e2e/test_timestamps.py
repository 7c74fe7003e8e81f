"""Issue 12's timestamps, as a user sees them: one time per file whoever looks (a later RUN over
the layer dirs, `pybuild save`'s tars), the build's epoch from SOURCE_DATE_EPOCH (environment or
--build-arg), a git context's HEAD commit time, or `--timestamp`."""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from e2e_helpers import ok

pytestmark = pytest.mark.usefixtures("busybox_root")

EPOCH = 1700000000  # 2023-11-14T22:13:20Z


def saved_mtimes(pybuild, ref: str, tmp_path: Path) -> dict[str, int]:
    """name -> mtime of every entry in the image's own layers, as `pybuild save` writes them
    (a later layer's entry wins)."""
    out = tmp_path / "saved.tar"
    ok(pybuild("save", "-o", str(out), ref))
    got: dict[str, int] = {}
    with tarfile.open(out) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))
        for layer in manifest[0]["Layers"]:
            with tarfile.open(fileobj=outer.extractfile(layer), mode="r:*") as t:
                for m in t:
                    got[m.name.rstrip("/")] = int(m.mtime)
    return got


def build_ok(pybuild, ctx: Path, dockerfile: str, *args: str, env=None, tag="ts") -> str:
    (ctx / "Dockerfile").write_text(dockerfile)
    return ok(pybuild("build", "--progress", "plain", "-q", "-t", tag, *args, str(ctx),
                      **({"env": env} if env else {}))).stdout.strip()


def test_a_later_step_and_save_see_the_same_mtimes(pybuild, tmp_path, monkeypatch):
    """A file a RUN wrote (now, later than the epoch: clamped), one it dated before the epoch
    (kept), a dir it made: the next RUN's `stat` over the layer dirs and the saved tar agree."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(EPOCH))
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    build_ok(pybuild, ctx, "FROM busybox\n"
             "RUN mkdir /d && echo new > /d/new && touch -d @1600000000 /d/old\n"
             "RUN stat -c '%n %Y' /d /d/new /d/old > /seen\n")
    r = ok(pybuild("run", "--rm", "ts", "sh", "-c", "cat /seen; stat -c '%n %Y' /d/new /seen"))
    seen = dict(line.split() for line in r.stdout.splitlines()[:3])
    assert seen == {"/d": str(EPOCH), "/d/new": str(EPOCH), "/d/old": "1600000000"}
    run_view = dict(line.split() for line in r.stdout.splitlines()[3:])
    saved = saved_mtimes(pybuild, "ts", tmp_path)
    assert {k: saved[k] for k in ("d", "d/new", "d/old")} == {
        "d": EPOCH, "d/new": EPOCH, "d/old": 1600000000}
    assert int(run_view["/seen"]) == saved["seen"] == EPOCH


ENV_PROBE = ("FROM busybox\nRUN echo \"sde=$SOURCE_DATE_EPOCH\" > /sde && touch /made\n")


def created(pybuild, ref: str) -> tuple[str, list[str], list[str]]:
    """(config created, every history created, config Env) of `ref`, via `pybuild inspect`."""
    info = json.loads(ok(pybuild("inspect", ref)).stdout)[0]
    from cache.store import Store

    cfg = Store.open().image(ref).config
    return info["Created"], [h["created"] for h in cfg["history"] if "pybuild fixture" not in
                             h.get("comment", "")], cfg["config"].get("Env") or []


def iso(t: int) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@pytest.mark.parametrize("how", ["env", "build-arg"])
def test_source_date_epoch_sets_created_and_reaches_run_but_not_the_config(pybuild, tmp_path,
                                                                          monkeypatch, how):
    args = ()
    if how == "env":
        monkeypatch.setenv("SOURCE_DATE_EPOCH", str(EPOCH))
    else:
        args = ("--build-arg", f"SOURCE_DATE_EPOCH={EPOCH}")
    build_ok(pybuild, tmp_path, ENV_PROBE, *args)
    when, history, env = created(pybuild, "ts")
    assert when == iso(EPOCH) and history == [iso(EPOCH)]
    assert not any(e.startswith("SOURCE_DATE_EPOCH=") for e in env), env
    assert ok(pybuild("run", "--rm", "ts", "cat", "/sde")).stdout == f"sde={EPOCH}\n"
    r = ok(pybuild("run", "--rm", "ts", "sh", "-c", "echo \"[$SOURCE_DATE_EPOCH]\""))
    assert r.stdout == "[]\n"  # a container of the image does not get it
    assert saved_mtimes(pybuild, "ts", tmp_path)["made"] == EPOCH


def test_a_bad_source_date_epoch_is_one_error_line(pybuild, tmp_path, monkeypatch):
    from e2e_helpers import one_error_line

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    (tmp_path / "Dockerfile").write_text(ENV_PROBE)
    one_error_line(pybuild("build", str(tmp_path)), "SOURCE_DATE_EPOCH='yesterday'", code=1)
    one_error_line(pybuild("build", "--timestamp", "soon", str(tmp_path)), "--timestamp", code=1)


def git(repo: Path, *args: str, when: int | None = None) -> str:
    import subprocess

    env = {"PATH": "/usr/bin:/bin", "HOME": str(repo), "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com"}
    if when is not None:
        env["GIT_COMMITTER_DATE"] = f"@{when} +0000"
    r = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env,
                       check=False)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def git_context(path: Path, when: int) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q")
    (path / "Dockerfile").write_text(ENV_PROBE + "COPY Dockerfile /df\n")
    git(path, "add", "Dockerfile")
    git(path, "commit", "-q", f"--date=@{when} +0000", "-m", "one", when=when)
    assert git(path, "log", "-1", "--format=%ct") == str(when)
    return path


def test_a_git_context_is_dated_by_its_head_commit_and_images_lists_newest_first(
        pybuild, tmp_path, monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    newer = git_context(tmp_path / "newer", 1710000000)   # 2024-03-09
    older = git_context(tmp_path / "older", 1600000000)   # 2020-09-13
    ok(pybuild("build", "-q", "-t", "newer", str(newer)))
    ok(pybuild("build", "-q", "-t", "older", str(older)))  # built last, committed first
    assert created(pybuild, "newer")[0] == iso(1710000000)
    assert created(pybuild, "older")[:2] == (iso(1600000000), [iso(1600000000)] * 2)
    assert ok(pybuild("run", "--rm", "older", "cat", "/sde")).stdout == "sde=1600000000\n"
    assert saved_mtimes(pybuild, "older", tmp_path)["df"] == 1600000000  # COPY clamped too
    lines = ok(pybuild("images")).stdout.splitlines()
    names = [ln.split()[0] for ln in lines[1:]]
    assert names.index("newer") < names.index("older") < names.index("busybox")
    assert "years ago" in lines[names.index("older") + 1]
    # a subdir of the work tree, and a second work tree (`.git` is a file there) as context
    (newer / "sub").mkdir()
    (newer / "sub" / "Dockerfile").write_text(ENV_PROBE)
    ok(pybuild("build", "-q", "-t", "sub", str(newer / "sub")))
    assert created(pybuild, "sub")[0] == iso(1710000000)
    git(newer, "worktree", "add", "-q", "-b", "side", str(tmp_path / "side"))
    assert (tmp_path / "side" / ".git").is_file()
    (tmp_path / "side" / "x").write_text("x")
    git(tmp_path / "side", "add", "x")
    git(tmp_path / "side", "commit", "-q", "-m", "two", when=1720000000)
    ok(pybuild("build", "-q", "-t", "side", str(tmp_path / "side")))
    assert created(pybuild, "side")[0] == iso(1720000000)
    # the environment wins over git
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(EPOCH))
    ok(pybuild("build", "-q", "-t", "env", str(newer)))
    assert created(pybuild, "env")[0] == iso(EPOCH)


def test_a_packed_head_commit_after_git_gc(pybuild, tmp_path, monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    repo = git_context(tmp_path / "repo", 1650000000)
    git(repo, "gc", "-q")
    assert not list((repo / ".git" / "objects").glob("??/*"))  # no loose object left
    first = ok(pybuild("build", "-q", "-t", "packed", str(repo))).stdout.strip()
    assert created(pybuild, "packed")[0] == iso(1650000000)
    # a new commit moves the epoch: the replayed build must see it, not its record
    (repo / "y").write_text("y")
    git(repo, "add", "y")
    git(repo, "commit", "-q", "-m", "later", when=1660000000)
    again = ok(pybuild("build", "-q", "-t", "packed", str(repo))).stdout.strip()
    assert again != first and created(pybuild, "packed")[0] == iso(1660000000)


def test_timestamp_now_keeps_real_times_and_no_variable(pybuild, tmp_path, monkeypatch):
    import time

    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(EPOCH))  # --timestamp wins over it
    t0 = int(time.time())
    build_ok(pybuild, tmp_path, ENV_PROBE, "--timestamp", "now")
    t1 = int(time.time()) + 1
    when, history, _ = created(pybuild, "ts")
    assert iso(t0) <= when <= iso(t1) and all(iso(t0) <= h <= iso(t1) for h in history)
    assert ok(pybuild("run", "--rm", "ts", "cat", "/sde")).stdout == "sde=\n"
    assert t0 <= saved_mtimes(pybuild, "ts", tmp_path)["made"] <= t1
    build_ok(pybuild, tmp_path, ENV_PROBE, "--timestamp", "1650000000")
    assert created(pybuild, "ts")[0] == iso(1650000000)
    assert saved_mtimes(pybuild, "ts", tmp_path)["made"] == 1650000000


def test_a_detached_head_stored_as_a_packed_delta_falls_back_to_git_log(pybuild, tmp_path,
                                                                      monkeypatch):
    """git stores older commits of a pack as deltas of newer ones; the one case read by `git
    log -1 --format=%ct`. HEAD detached at such a commit still dates the image by it."""
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    repo = git_context(tmp_path / "repo", 1600000000)
    body = "a long commit message, the same every time, so git deltifies the commits " * 100
    for i in range(1, 6):
        (repo / "f").write_text(str(i))
        git(repo, "add", "f")
        git(repo, "commit", "-q", "-m", f"c{i}", "-m", body, when=1600000000 + i)
    git(repo, "repack", "-adfq", "--window=50", "--depth=50")
    packed = git(repo, "verify-pack", "-v", *map(str, (repo / ".git/objects/pack").glob("*.idx")))
    deltas = [ln.split()[0] for ln in packed.splitlines()
              if ln.split()[1:2] == ["commit"] and len(ln.split()) > 5]
    assert deltas, packed
    git(repo, "checkout", "-q", deltas[0])
    want = int(git(repo, "log", "-1", "--format=%ct"))
    ok(pybuild("build", "-q", "-t", "delta", str(repo)))
    assert created(pybuild, "delta")[0] == iso(want)
