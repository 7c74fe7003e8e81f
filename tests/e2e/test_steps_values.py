"""Values that validation and the build both parse (issue 8): mount booleans, Go durations,
WORKDIR as BuildKit normalises it, deeply nested `${}`; each through `pybuild build`."""
import pytest
from e2e_helpers import build

from grammar import gopath

pytestmark = pytest.mark.usefixtures("busybox_root")


def _build_fails(pybuild, ctx, dockerfile):
    (ctx / "Dockerfile").write_text(dockerfile)
    r = pybuild("build", "--progress", "plain", "-t", "t-fails", str(ctx))
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    return r


def test_cache_mount_readonly_false_is_writable(tmp_path, pybuild):
    _, fs = build(pybuild, tmp_path, """\
FROM busybox
RUN --mount=type=cache,id=c1,target=/c,readonly=false echo kept > /c/f
RUN --mount=type=cache,id=c1,target=/c,ro=0 cat /c/f > /seen
""")
    with fs() as root:
        assert (root / "seen").read_text() == "kept\n"


def test_cache_mount_readonly_is_read_only(tmp_path, pybuild):
    r = _build_fails(pybuild, tmp_path,
                     "FROM busybox\nRUN --mount=type=cache,target=/c,readonly touch /c/f\n")
    assert "Read-only file system" in r.stdout + r.stderr


def test_bind_mount_rw_false_is_read_only(tmp_path, pybuild):
    (tmp_path / "d").mkdir()
    r = _build_fails(pybuild, tmp_path,
                     "FROM busybox\nRUN --mount=type=bind,source=d,target=/m,rw=false touch /m/x\n")
    assert "Read-only file system" in r.stdout + r.stderr


def test_bind_mount_rw_true_writes_are_thrown_away(tmp_path, pybuild):
    (tmp_path / "d").mkdir()
    _, fs = build(pybuild, tmp_path, """\
FROM busybox
RUN --mount=type=bind,source=d,target=/m,readwrite=True touch /m/x && ls /m > /listed
""")
    with fs() as root:
        assert (root / "listed").read_text() == "x\n"
    assert not (tmp_path / "d/x").exists()


def test_bad_mount_boolean_is_one_line_error(tmp_path, pybuild):
    r = _build_fails(pybuild, tmp_path, "FROM busybox\nRUN --mount=type=cache,target=/c,readonly=yes true\n")
    assert r.stderr.strip().splitlines()[-1] == ("pybuild: error: Dockerfile:2: "
                                                 "invalid value for readonly: yes")


def test_healthcheck_go_durations_land_in_config_and_history(tmp_path, pybuild):
    cfg, _ = build(pybuild, tmp_path, """\
FROM busybox
HEALTHCHECK --interval=.5s --timeout=1h30m --start-period=300ms --start-interval=1.5h CMD true
""")
    hc = cfg["config"]["Healthcheck"]
    assert (hc["Interval"], hc["Timeout"], hc["StartPeriod"], hc["StartInterval"]) == (
        500_000_000, 5_400_000_000_000, 300_000_000, 5_400_000_000_000)
    assert cfg["history"][-1]["created_by"] == (
        "HEALTHCHECK {Test:[CMD-SHELL true] Interval:500ms Timeout:1h30m0s StartPeriod:300ms "
        "StartInterval:1h30m0s Retries:0}")


def test_healthcheck_bad_duration_fails_before_any_step(tmp_path, pybuild):
    r = _build_fails(pybuild, tmp_path, "FROM busybox\nRUN true\nHEALTHCHECK --interval=1x CMD true\n")
    assert 'Dockerfile:3: time: unknown unit "x" in duration "1x"' in r.stderr


@pytest.mark.parametrize(("lines", "want"), [
    (["WORKDIR /app/"], "/app/"),
    (["WORKDIR /a/", "WORKDIR b/"], "/a/b"),
    (["WORKDIR /a", "WORKDIR ../c/./d/"], "/c/d"),
    (["WORKDIR /x/../y"], "/x/../y"),
])
def test_workdir_absolute_kept_as_written_relative_joined_and_cleaned(tmp_path, pybuild, lines, want):
    cfg, fs = build(pybuild, tmp_path, "FROM busybox\n" + "\n".join(lines) + "\nRUN pwd > /pwd\n")
    assert cfg["config"]["WorkingDir"] == want
    with fs() as root:
        assert (root / "pwd").read_text().strip() == gopath.clean(want)


@pytest.mark.parametrize("depth", [300, 3000])
def test_deeply_nested_substitution_builds(tmp_path, pybuild, depth):
    word = "${A:-" * depth + "deep" + "}" * depth
    cfg, _ = build(pybuild, tmp_path, f"FROM busybox\nENV A={word}\nENV B=${{A}}\n")
    assert "B=deep" in cfg["config"]["Env"] and "A=deep" in cfg["config"]["Env"]


def test_mount_targets_relative_to_workdir_absolute_as_given(tmp_path, pybuild):
    _, fs = build(pybuild, tmp_path, """\
FROM busybox
WORKDIR /w/
RUN --mount=type=cache,target=c --mount=type=tmpfs,target=/abs touch c/x /abs/y && ls /w/c /abs > /seen
""")
    with fs() as root:
        assert (root / "seen").read_text() == "/abs:\ny\n\n/w/c:\nx\n"
