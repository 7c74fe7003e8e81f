"""The CLI's refusals in docker's words: an unknown command names the nearest one, an unknown
flag is `unknown flag` with exit 125, a missing argument says what is required (exit 1), each
with `See 'pybuild CMD --help'.`; `prune -a` asks first unless -f, and a refusal removes
nothing."""
from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the store needs root (run as root)")


def lines(r) -> list[str]:
    assert "Traceback" not in r.stderr and "usage:" not in r.stderr, r.stderr
    return r.stderr.splitlines()


@pytest.mark.parametrize("word, near", [("biuld", "build"), ("imgaes", "images"),
                                        ("netwrok", "network"), ("qqqzzz", None)])
def test_unknown_command_names_the_nearest(store_root, pybuild, word, near):
    r = pybuild(word)
    assert r.returncode == 1
    hint = f"; did you mean '{near}'?" if near else ""
    assert lines(r) == [f"pybuild: '{word}' is not a pybuild command{hint}", "See 'pybuild --help'."]


def test_unknown_flag_and_missing_arguments(store_root, pybuild):
    r = pybuild("images", "--nope")
    assert r.returncode == 125
    assert lines(r) == ["pybuild: error: unknown flag: --nope", "See 'pybuild images --help'."]
    r = pybuild("tag")
    assert r.returncode == 1
    out = lines(r)
    assert out[0].startswith('pybuild: error: "pybuild tag" requires SOURCE_IMAGE')
    assert out[1:] == ["See 'pybuild tag --help'."]
    r = pybuild("build", "--progress", "sideways", ".")
    assert r.returncode == 125 and "invalid choice: 'sideways'" in lines(r)[0]


def test_prune_all_asks_and_a_no_keeps_everything(busybox_root, pybuild):
    first = pybuild("build", "-q", "-t", "x", "-", input="FROM busybox\nLABEL v=1\n")
    image_id = first.stdout.strip()
    assert first.returncode == 0 and image_id.startswith("sha256:"), first.stderr
    again = pybuild("build", "-q", "-t", "x", "-", input="FROM busybox\nLABEL v=2\n")
    assert again.returncode == 0                           # the first is now untagged
    assert pybuild("inspect", image_id).returncode == 0
    r = pybuild("prune", "-a", input="n\n")
    assert r.returncode == 1 and "Are you sure you want to continue? [y/N]" in r.stdout
    assert lines(r) == ["pybuild: error: prune has been cancelled"]
    r = pybuild("prune", "-a", input="")                   # no answer (a closed stdin) is a no
    assert r.returncode == 1
    assert pybuild("inspect", image_id).returncode == 0
    r = pybuild("prune", "-a", input="y\n")
    assert r.returncode == 0 and "Total reclaimed space" in r.stdout, r.stderr
    assert pybuild("inspect", image_id).returncode == 1
    assert pybuild("prune", "-a", "-f").returncode == 0


def test_a_mistyped_image_name_names_the_stored_one(busybox_root, pybuild, tmp_path):
    r = pybuild("run", "--rm", "--pull", "never", "busybx", "true")
    assert r.returncode == 125
    assert "did you mean 'busybox:latest', which is in the store?" in r.stderr, r.stderr
    r = pybuild("run", "--rm", "--pull", "never", "qqqzzz", "true")
    assert r.returncode == 125 and "did you mean" not in r.stderr
    # FROM a typo of a stored name whose registry (a closed loopback port) cannot answer
    assert pybuild("tag", "busybox", "127.0.0.1:9/tools/busybox:1").returncode == 0
    (tmp_path / "Dockerfile").write_text("FROM 127.0.0.1:9/tools/busybx:1\n")
    r = pybuild("build", str(tmp_path))
    assert r.returncode == 1
    assert "did you mean '127.0.0.1:9/tools/busybox:1'" in r.stderr.splitlines()[-1], r.stderr


def test_groups_alias_the_commands(busybox_root, pybuild):
    assert pybuild("image", "ls").stdout == pybuild("images").stdout
    assert pybuild("image", "list", "-q").stdout == pybuild("images", "-q").stdout
    assert pybuild("image", "inspect", "-f", "{{.Os}}", "busybox").stdout == "linux\n"
    assert pybuild("image", "tag", "busybox", "bb2:1").returncode == 0
    r = pybuild("image", "rm", "bb2:1")
    assert r.returncode == 0 and "Untagged: bb2:1" in r.stdout
    assert pybuild("help", "tag").stdout == pybuild("tag", "--help").stdout
    r = pybuild("builder", "build", "-q", "-", input="FROM busybox\nLABEL g=1\n")
    assert r.returncode == 0 and r.stdout.startswith("sha256:"), r.stderr


def test_image_builder_and_system_prune(busybox_root, pybuild):
    a = pybuild("build", "-q", "-t", "p", "-", input="FROM busybox\nLABEL v=1\n").stdout.strip()
    b = pybuild("build", "-q", "-t", "p", "-", input="FROM busybox\nLABEL v=2\n").stdout.strip()
    r = pybuild("image", "prune", input="n\n")
    assert r.returncode == 1 and "WARNING! This will remove all dangling images." in r.stdout
    r = pybuild("image", "prune", "-f")
    assert r.returncode == 0 and f"deleted: {a}" in r.stdout and b not in r.stdout, r.stdout
    assert pybuild("inspect", a).returncode == 1 and pybuild("inspect", b).returncode == 0
    r = pybuild("builder", "prune", "-f")
    assert r.returncode == 0 and r.stdout.startswith("Deleted build cache objects: ")
    r = pybuild("system", "prune", "-a", "-f")
    assert r.returncode == 0, r.stderr
    assert "untagged: p:latest" in r.stdout and f"deleted: {b}" in r.stdout
    # (busybox stays: the test session's own process holds it, cache.leases, as a build would)
    assert pybuild("inspect", b).returncode == 1


def test_version_info_and_df(busybox_root, pybuild):
    r = pybuild("version")
    assert r.returncode == 0 and r.stdout.startswith("Client: pybuild\n Version:")
    assert pybuild("version", "-f", "{{.Client.Os}}").stdout == "linux\n"
    assert pybuild("info", "-f", "{{.Images}} {{.OSType}}").stdout == "1 linux\n"
    assert pybuild("system", "info", "-f", "{{.DockerRootDir}}").stdout == f"{busybox_root}\n"
    out = pybuild("system", "df").stdout.splitlines()
    assert out[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    assert [ln.split()[0] for ln in out[1:]] == ["Images", "Containers", "Local", "Build"]
    assert out[1].split()[1:3] == ["1", "0"]


def test_headers_are_docker_s(docker_busybox, busybox_root, pybuild):
    import subprocess

    for args in (["system", "df"], ["image", "ls"], ["ps", "-a"]):
        theirs = subprocess.run([*docker_busybox, *args], capture_output=True, text=True,
                                check=False)
        assert theirs.returncode == 0, theirs.stderr
        assert pybuild(*args).stdout.splitlines()[0].split() == \
            theirs.stdout.splitlines()[0].split(), args


def test_import_change_sets_the_config(busybox_root, pybuild, tmp_path):
    import io
    import shutil
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        t.add(shutil.which("busybox") or "/bin/busybox", "bin/busybox")
    r = pybuild("import", "-c", 'CMD ["/bin/busybox", "echo", "hi"]', "-c", "ENV A=1",
                "-c", "WORKDIR /tmp", "-c", "LABEL team=core", "-", "imp:1", input=buf.getvalue())
    assert r.returncode == 0, r.stderr
    out = pybuild("inspect", "-f", "{{.Config.Env}} {{.Config.WorkingDir}} {{.Config.Labels}}",
                  "imp:1")
    assert out.stdout == "[A=1] /tmp map[team:core]\n"
    assert pybuild("run", "--rm", "--network", "none", "imp:1").stdout == "hi\n"
    r = pybuild("import", "-c", "RUN true", "-", "bad:1", input=buf.getvalue())
    assert r.returncode == 1
    assert r.stderr.decode().splitlines() == ["pybuild: error: 'RUN' is not a valid change command"]
    assert pybuild("images", "-q", "bad").stdout == ""


def test_progress_quiet_buildkit_progress_and_lowercase_dockerfile(busybox_root, pybuild, tmp_path):
    import os as _os

    (tmp_path / "dockerfile").write_text("FROM busybox\nRUN echo lower > /f\n")
    r = pybuild("build", "--progress", "quiet", "-t", "low", str(tmp_path))
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stderr
    assert pybuild("run", "--rm", "--network", "none", "low", "cat", "/f").stdout == "lower\n"
    import json

    env = {**_os.environ, "BUILDKIT_PROGRESS": "json"}
    for extra in ([], ["--no-cache"]):          # a replay, then a full build
        r = pybuild("build", *extra, "-t", "low", str(tmp_path), env=env)
        assert r.returncode == 0, r.stderr
        events = [json.loads(ln) for ln in r.stderr.splitlines() if ln.startswith("{")]
        assert events, r.stderr
    r = pybuild("build", "--progress", "quiet", "-t", "low", str(tmp_path))
    assert r.returncode == 0 and r.stderr == ""


def test_build_add_host_reaches_run_steps_and_keys_them(busybox_root, pybuild, tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM busybox\nRUN grep myhost /etc/hosts > /h || true\n")
    r = pybuild("build", "-q", "--add-host", "myhost:10.1.2.3", "-t", "h1", str(tmp_path))
    assert r.returncode == 0, r.stderr
    out = pybuild("run", "--rm", "--network", "none", "h1", "cat", "/h").stdout
    assert out.split() == ["10.1.2.3", "myhost"], out
    plain = pybuild("build", "-q", "-t", "h2", str(tmp_path))       # another key: not CACHED
    assert plain.stdout != r.stdout
    assert pybuild("run", "--rm", "--network", "none", "h2", "cat", "/h").stdout == ""
    bad = pybuild("build", "--add-host", "nocolon", str(tmp_path))
    assert bad.returncode == 1 and "bad format for add-host" in bad.stderr
