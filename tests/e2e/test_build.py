"""`pybuild build` end to end, as a user runs it: a context dir, a Dockerfile, the CLI.

The built filesystem is checked through a read-only overlay of the image's layers, the config
through the store: what `docker run` / `docker inspect` of the image would show.
"""
import json
import os
import stat

import pytest
from e2e_helpers import build, config_of

pytestmark = pytest.mark.usefixtures("busybox_root")


def test_hello_fixture_builds_and_runs(pybuild, repo_root):
    r = pybuild("build", "-t", "hello", str(repo_root / "fixtures" / "hello"))
    assert r.returncode == 0, r.stderr
    r = pybuild("run", "--rm", "hello")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "Hello from pybuild!\nbuilt by pybuild\n"


def test_workdir_chain_and_relative_copy(tmp_path, pybuild):
    (tmp_path / "f.txt").write_text("x")
    cfg, fs = build(pybuild, tmp_path, """\
FROM busybox
WORKDIR /a
WORKDIR b
WORKDIR ../c/d
COPY f.txt .
RUN pwd > /pwd.txt
""")
    assert cfg["config"]["WorkingDir"] == "/a/c/d"
    with fs() as root:
        assert (root / "a/c/d/f.txt").read_text() == "x"
        assert (root / "a/b").is_dir()
        assert (root / "pwd.txt").read_text() == "/a/c/d\n"


def test_copy_semantics_dirs_wildcards_renames_trailing_slash(tmp_path, pybuild):
    (tmp_path / "dir/sub").mkdir(parents=True)
    (tmp_path / "dir/a.txt").write_text("a")
    (tmp_path / "dir/sub/b.txt").write_text("b")
    (tmp_path / "one.py").write_text("1")
    (tmp_path / "two.py").write_text("2")
    _, fs = build(pybuild, tmp_path, """\
FROM busybox
COPY dir /copied
COPY dir/ /copied2/
COPY *.py /py/
COPY one.py /renamed.py
COPY one.py /intodir/
""")
    with fs() as root:
        assert (root / "copied/a.txt").read_text() == "a"  # a directory copies its contents
        assert (root / "copied/sub/b.txt").read_text() == "b"
        assert not (root / "copied/dir").exists()
        assert (root / "copied2/sub/b.txt").exists()
        assert sorted(p.name for p in (root / "py").iterdir()) == ["one.py", "two.py"]
        assert (root / "renamed.py").read_text() == "1"
        assert (root / "intodir/one.py").read_text() == "1"


def test_copy_ownership_and_modes(tmp_path, pybuild):
    (tmp_path / "s.sh").write_text("#!/bin/sh\n")
    os.chmod(tmp_path / "s.sh", 0o4755)
    (tmp_path / "data").write_text("d")
    _, fs = build(pybuild, tmp_path, """\
FROM busybox
COPY s.sh /bin/s.sh
COPY --chown=app:app data /home/app/data
COPY --chown=1234:5678 --chmod=640 data /numeric
""")
    with fs() as root:
        st = os.lstat(root / "bin/s.sh")
        assert stat.S_IMODE(st.st_mode) == 0o4755  # setuid kept
        assert (st.st_uid, st.st_gid) == (0, 0)
        st = os.lstat(root / "home/app/data")
        assert (st.st_uid, st.st_gid) == (1000, 1000)
        st = os.lstat(root / "numeric")
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o640)


def test_dockerignore_hides_files_and_exceptions_bring_them_back(tmp_path, pybuild):
    (tmp_path / "keep.txt").write_text("k")
    (tmp_path / "secret.key").write_text("s")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs/a.log").write_text("a")
    (tmp_path / "logs/important.log").write_text("i")
    (tmp_path / ".dockerignore").write_text("*.key\nlogs/*.log\n!logs/important.log\n")
    _, fs = build(pybuild, tmp_path, "FROM busybox\nCOPY . /ctx/\n")
    with fs() as root:
        assert (root / "ctx/keep.txt").exists()
        assert not (root / "ctx/secret.key").exists()
        assert not (root / "ctx/logs/a.log").exists()
        assert (root / "ctx/logs/important.log").exists()


def test_deletions_and_opaque_dirs_show_in_the_image(tmp_path, pybuild):
    _, fs = build(pybuild, tmp_path, """\
FROM busybox
RUN mkdir -p /d/old && echo x > /d/old/f && echo y > /d/keep && echo z > /gone
RUN rm /gone && rm -rf /d && mkdir /d && echo new > /d/new
""")
    with fs() as root:
        assert not (root / "gone").exists()
        assert sorted(p.name for p in (root / "d").iterdir()) == ["new"]


def test_hard_and_symbolic_links_and_fifos_and_empty_dirs(tmp_path, pybuild):
    _, fs = build(pybuild, tmp_path, """\
FROM busybox
RUN echo data > /f && ln /f /hard && ln -s /f /soft && mkfifo /fifo && mkdir /empty
""")
    with fs() as root:
        a, b = os.lstat(root / "f"), os.lstat(root / "hard")
        assert a.st_ino == b.st_ino and a.st_nlink == 2
        assert os.readlink(root / "soft") == "/f"
        assert stat.S_ISFIFO(os.lstat(root / "fifo").st_mode)
        assert list((root / "empty").iterdir()) == []


def test_multistage_copy_from_and_target(tmp_path, pybuild):
    text = """\
FROM busybox AS builder
RUN echo built > /artifact
FROM busybox AS other
RUN echo other > /other
FROM busybox
COPY --from=builder /artifact /artifact
"""
    _, fs = build(pybuild, tmp_path, text)
    with fs() as root:
        assert (root / "artifact").read_text() == "built\n"
        assert not (root / "other").exists()
    _, fs = build(pybuild, tmp_path, text, "--target", "other", tag="t-other")
    with fs() as root:
        assert (root / "other").exists()
        assert not (root / "artifact").exists()


def test_arg_and_env_precedence(tmp_path, pybuild):
    cfg, fs = build(pybuild, tmp_path, """\
ARG V=meta
FROM busybox
ARG V
ARG W=default
ENV X=$W-env
RUN echo "$V $W $X" > /out
ENV W=from-env
RUN echo "$W" > /out2
""", "--build-arg", "W=cli")
    with fs() as root:
        assert (root / "out").read_text() == "meta cli cli-env\n"
        assert (root / "out2").read_text() == "from-env\n"  # ENV overrides ARG
    env = cfg["config"]["Env"]
    assert "X=cli-env" in env and not any(e.startswith("V=") for e in env)


@pytest.mark.parametrize("expr,expected", [
    ("${U:-d}", "d"), ("${S:-d}", "set"), ("${E:-d}", "d"), ("${E-d}", ""),
    ("${S:+alt}", "alt"), ("${U:+alt}", ""), ("${P#*/}", "b/c"), ("${P##*/}", "c"),
    ("${P%/*}", "a/b"), ("${P%%/*}", "a"), ("${P/b/X}", "a/X/c"), ("${P//\\//-}", "a-b-c"),
])
def test_substitution_modifiers_in_env(tmp_path, pybuild, expr, expected):
    cfg, _ = build(pybuild, tmp_path, f"FROM busybox\nENV S=set E= P=a/b/c\nENV R={expr}\n")
    assert f"R={expected}" in cfg["config"]["Env"]


def test_cmd_entrypoint_interplay_and_shell(tmp_path, pybuild):
    cfg, _ = build(pybuild, tmp_path, """\
FROM busybox
CMD ["a"]
ENTRYPOINT ["/bin/echo"]
""")
    assert cfg["config"]["Entrypoint"] == ["/bin/echo"] and cfg["config"]["Cmd"] == ["a"]
    cfg, _ = build(pybuild, tmp_path, """\
FROM busybox
SHELL ["/bin/sh", "-xc"]
ENTRYPOINT echo hi
""")
    assert cfg["config"]["Entrypoint"] == ["/bin/sh", "-xc", "echo hi"]
    assert cfg["config"]["Cmd"] is None  # ENTRYPOINT clears an inherited CMD


def test_user_applies_to_run_and_config(tmp_path, pybuild):
    cfg, fs = build(pybuild, tmp_path, """\
FROM busybox
USER app
RUN id -u > /tmp/uid && touch /tmp/mine
""")
    assert cfg["config"]["User"] == "app"
    with fs() as root:
        assert (root / "tmp/uid").read_text() == "1000\n"
        assert os.lstat(root / "tmp/mine").st_uid == 1000


def test_heredocs_in_run_and_copy(tmp_path, pybuild):
    _, fs = build(pybuild, tmp_path, """\
FROM busybox
ENV NAME=world
RUN <<EOF
echo one > /one
echo two > /two
EOF
COPY <<EOT /greeting
hello $NAME
EOT
RUN cat <<'X' > /quoted
keep $NAME
X
""")
    with fs() as root:
        assert (root / "one").read_text() == "one\n" and (root / "two").read_text() == "two\n"
        assert (root / "greeting").read_text() == "hello world\n"
        assert (root / "quoted").read_text() == "keep $NAME\n"


def test_metadata_instructions_land_in_config(tmp_path, pybuild):
    cfg, _ = build(pybuild, tmp_path, """\
FROM busybox
LABEL a=1 "b c"="2"
EXPOSE 80 53/udp 8000-8001
VOLUME /data
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s --retries=2 CMD true
""", "--label", "from-cli=yes")
    c = cfg["config"]
    new_labels = {k: v for k, v in c["Labels"].items() if not k.startswith("org.pybuild.fixture")}
    assert new_labels == {"a": "1", "b c": "2", "from-cli": "yes"}
    assert set(c["ExposedPorts"]) == {"80/tcp", "53/udp", "8000/tcp", "8001/tcp"}
    assert c["Volumes"] == {"/data": {}}
    assert c["StopSignal"] == "SIGINT"
    assert c["Healthcheck"] == {"Test": ["CMD-SHELL", "true"], "Interval": 5_000_000_000, "Retries": 2}
    hist = [h["created_by"] for h in cfg["history"]][-5:]
    assert hist[0] == "LABEL a=1 b c=2"
    assert all(h.get("empty_layer") for h in cfg["history"][-5:])


def test_add_local_tar_is_extracted(tmp_path, pybuild):
    import tarfile

    src = tmp_path / "src"
    src.mkdir()
    (src / "inside.txt").write_text("in tar")
    with tarfile.open(tmp_path / "bundle.tar.gz", "w:gz") as tf:
        tf.add(src / "inside.txt", arcname="pkg/inside.txt")
    _, fs = build(pybuild, tmp_path, "FROM busybox\nADD bundle.tar.gz /opt/\n")
    with fs() as root:
        assert (root / "opt/pkg/inside.txt").read_text() == "in tar"


def test_escape_directive(tmp_path, pybuild):
    _, fs = build(pybuild, tmp_path, "# escape=`\nFROM busybox\nRUN echo a `\n  b > /out\n")
    with fs() as root:
        assert (root / "out").read_text() == "a b\n"


def test_fully_cached_rebuild_and_touch_keep_the_cache_content_change_busts_it(tmp_path, pybuild):
    (tmp_path / "f").write_text("1")
    text = "FROM busybox\nCOPY f /f\nRUN cat /f > /g\n"
    (tmp_path / "Dockerfile").write_text(text)
    first = pybuild("build", "--progress", "plain", "-t", "c1", str(tmp_path))
    assert first.returncode == 0, first.stderr
    again = pybuild("build", "--progress", "plain", "-t", "c2", str(tmp_path))
    assert again.stderr.count("CACHED") == 3  # the FROM (in the store: no pull) and both steps
    os.utime(tmp_path / "f", (1, 1))
    touched = pybuild("build", "--progress", "plain", "-t", "c3", str(tmp_path))
    assert touched.stderr.count("CACHED") == 3
    (tmp_path / "f").write_text("2")
    changed = pybuild("build", "--progress", "plain", "-t", "c4", str(tmp_path))
    assert changed.stderr.count("CACHED") == 1
    ids = [config_of(pybuild, t)["_id"] for t in ("c1", "c2", "c3", "c4")]
    assert ids[0] == ids[1] == ids[2] != ids[3]
    nocache = pybuild("build", "--no-cache", "--progress", "plain", "-t", "c5", str(tmp_path))
    assert nocache.stderr.count("CACHED") == 1
    assert config_of(pybuild, "c5")["_id"] == ids[3]  # reproducible: same digest without cache


def test_failing_run_reports_line_command_exit_code_and_tags_nothing(tmp_path, pybuild):
    (tmp_path / "Dockerfile").write_text("FROM busybox\nRUN echo before\nRUN echo oops >&2; exit 3\n")
    r = pybuild("build", "--progress", "plain", "-t", "broken", str(tmp_path))
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()
    err = [line for line in last if line.startswith("pybuild: error:")]
    assert err and "Dockerfile:3" in err[0] and "exit code: 3" in err[0]
    assert "oops" in r.stderr
    assert "Traceback" not in r.stderr
    assert pybuild("inspect", "broken").returncode != 0


def test_a_mistake_late_in_the_dockerfile_fails_before_any_step(tmp_path, pybuild):
    (tmp_path / "Dockerfile").write_text("FROM busybox\nRUN touch /ran\n" + "LABEL a=b\n" * 38 + "RUNN x\n")
    r = pybuild("build", "--progress", "plain", str(tmp_path))
    assert r.returncode == 1
    assert r.stderr.strip() == "pybuild: error: Dockerfile:41: unknown instruction: RUNN (did you mean RUN?)"


def test_same_dockerfile_same_digest_on_two_store_roots(tmp_path, pybuild, busybox_root, other_busybox_root):
    (tmp_path / "f").write_text("content")
    (tmp_path / "Dockerfile").write_text("FROM busybox\nCOPY f /f\nRUN echo hi > /hi\n"
                                         "CMD [\"cat\", \"/hi\"]\n")
    ids = []
    for root in (busybox_root, other_busybox_root):
        r = pybuild("--root", str(root), "build", "-q", str(tmp_path))
        assert r.returncode == 0, r.stderr
        ids.append(r.stdout.strip())
    assert ids[0] == ids[1] and ids[0].startswith("sha256:")


def test_history_matches_buildkit_format(tmp_path, pybuild):
    cfg, _ = build(pybuild, tmp_path, """\
FROM busybox
ARG A=1
RUN echo $A
ENV K=v
CMD echo hi
""")
    new = [h["created_by"] for h in cfg["history"]][-4:]
    assert new == ["ARG A=1", "RUN |1 A=1 /bin/sh -c echo $A # buildkit", "ENV K=v",
                   'CMD ["/bin/sh" "-c" "echo hi"]']
    assert json.dumps(cfg).count("1970-01-01T00:00:00Z") >= 5


def test_run_mounts_cache_tmpfs_secret_bind(tmp_path, pybuild):
    (tmp_path / "tok").write_text("s3cret")
    (tmp_path / "ctxfile").write_text("from context")
    _, fs = build(pybuild, tmp_path, """\
FROM busybox
RUN --mount=type=cache,target=/cache echo x >> /cache/n && wc -l < /cache/n > /count
RUN --mount=type=tmpfs,target=/t touch /t/x && ls /t > /tlist
RUN --mount=type=secret,id=tok cat /run/secrets/tok > /secret-len-check && wc -c < /run/secrets/tok > /len
RUN --mount=type=bind,source=ctxfile,target=/m cat /m > /bound
""", "--secret", f"id=tok,src={tmp_path / 'tok'}")
    with fs() as root:
        assert (root / "count").read_text().strip() == "1"
        # BuildKit's stub cleaner removes a mount target the RUN made (executor/stubs.go)
        assert not (root / "cache").exists()
        assert (root / "tlist").read_text() == "x\n"
        assert (root / "len").read_text().strip() == "6"
        assert not (root / "run/secrets/tok").exists()
        assert (root / "bound").read_text() == "from context"


def test_onbuild_triggers_run_in_the_child_and_are_cleared(tmp_path, pybuild):
    (tmp_path / "base").mkdir()
    (tmp_path / "base/Dockerfile").write_text(
        "FROM busybox\nONBUILD RUN echo triggered > /onbuild\nONBUILD COPY marker /marker\n")
    r = pybuild("build", "-t", "onbase", str(tmp_path / "base"))
    assert r.returncode == 0, r.stderr
    assert config_of(pybuild, "onbase")["config"]["OnBuild"] == [
        "RUN echo triggered > /onbuild", "COPY marker /marker"]
    (tmp_path / "child").mkdir()
    (tmp_path / "child/marker").write_text("m")
    cfg, fs = build(pybuild, tmp_path / "child", "FROM onbase\nRUN cat /onbuild\n")
    assert not cfg["config"].get("OnBuild")  # no grandchildren
    with fs() as root:
        assert (root / "onbuild").read_text() == "triggered\n"
        assert (root / "marker").read_text() == "m"


def test_copy_from_an_image_in_the_store(tmp_path, pybuild):
    _, fs = build(pybuild, tmp_path, "FROM scratch\nCOPY --from=busybox:latest /bin/busybox /bb\n")
    with fs() as root:
        assert os.access(root / "bb", os.X_OK)
        assert sorted(p.name for p in root.iterdir()) == ["bb"]


def test_dockerfile_from_stdin_iidfile_and_json_progress(tmp_path, pybuild):
    iid = tmp_path / "iid"
    r = pybuild("build", "-f", "-", "--iidfile", str(iid), "--progress", "json", "-t", "stdin",
                str(tmp_path), input="FROM busybox\nRUN echo from-stdin\n")
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
    assert any(e["status"] == "log" and e["line"] == "from-stdin" for e in events)
    assert any(e["status"] == "done" and "RUN echo from-stdin" in e["name"] for e in events)
    assert iid.read_text() == config_of(pybuild, "stdin")["_id"]


def test_output_writes_an_archive_that_load_takes_back(tmp_path, pybuild, other_busybox_root):
    (tmp_path / "Dockerfile").write_text("FROM busybox\nRUN echo out > /out\n")
    dest = tmp_path / "img.tar"
    r = pybuild("build", "-t", "outimg", "--output", f"type=docker,dest={dest}", str(tmp_path))
    assert r.returncode == 0, r.stderr
    r = pybuild("--root", str(other_busybox_root), "load", "-i", str(dest))
    assert r.returncode == 0, r.stderr
    r = pybuild("--root", str(other_busybox_root), "run", "--rm", "outimg", "cat", "/out")
    assert r.stdout == "out\n"


def test_missing_copy_source_is_one_line_with_the_dockerfile_line(tmp_path, pybuild):
    (tmp_path / "Dockerfile").write_text("FROM busybox\nCOPY nothere /x\n")
    r = pybuild("build", "--progress", "plain", str(tmp_path))
    assert r.returncode == 1
    err = [line for line in r.stderr.splitlines() if line.startswith("pybuild: error:")]
    assert err == ['pybuild: error: Dockerfile:2: failed to compute cache key: "/nothere": not found']


def test_unknown_base_image_says_where_it_looked(tmp_path, pybuild):
    """Not in the store, so it is pulled from docker.io, which this machine cannot reach (or,
    on one that can, has no such image): one line that names the image and the registry."""
    (tmp_path / "Dockerfile").write_text("FROM nosuch-pybuild-test:1\n")
    r = pybuild("build", "--progress", "plain", str(tmp_path))
    assert r.returncode == 1
    err = [line for line in r.stderr.splitlines() if line.startswith("pybuild:")]
    assert len(err) == 1 and err[0].startswith("pybuild: error: Dockerfile:1: nosuch-pybuild-test:1: ")
    assert "docker.io" in err[0]
    assert "Traceback" not in r.stderr


def test_run_on_a_rootfs_without_dev_proc_sys_leaves_them_as_buildkit_does(tmp_path, pybuild):
    """runc makes /dev, /proc, /sys as mount points and BuildKit keeps them in the RUN's layer;
    /etc/hosts, /etc/resolv.conf (and an /etc made for them) are stubs it removes."""
    cfg, fs = build(pybuild, tmp_path, """\
FROM busybox AS bb
FROM scratch
COPY --from=bb /bin /bin
RUN ["/bin/sh", "-c", "echo made > /made"]
RUN ["/bin/true"]
""")
    with fs() as root:
        assert sorted(p.name for p in root.iterdir()) == ["bin", "dev", "made", "proc", "sys"]
        for name in ("dev", "proc", "sys"):
            st = os.lstat(root / name)
            assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755
            assert (st.st_uid, st.st_gid) == (0, 0) and not list((root / name).iterdir())
    from cache.store import Store

    store = Store.open()
    sizes = [store.layer_info(d)["size"] for d in cfg["rootfs"]["diff_ids"]]
    assert sizes[-1] == 1024  # the second RUN finds them in its base: an empty layer


def test_platform_flag_accepts_the_host_in_any_spelling_and_refuses_others(tmp_path, pybuild):
    """`--platform` is the host's (with what it leaves out taken from the host) or one clear line."""
    from cache import platform

    (tmp_path / "Dockerfile").write_text("FROM busybox\nENV A=1\n")
    host = platform.host()
    for spec in ("linux", platform.to_string(host), "linux/" + os.uname().machine):
        r = pybuild("build", "-q", "--platform", spec, str(tmp_path))
        assert r.returncode == 0, (spec, r.stderr)
    other = "linux/s390x" if host["architecture"] != "s390x" else "linux/amd64"
    for spec, why in ((other, f"only {platform.to_string(host)} (this machine) is supported"),
                      ("linux//x", "expected os[/arch[/variant]]")):
        r = pybuild("build", "-q", "--platform", spec, str(tmp_path))
        assert r.returncode == 1 and r.stderr.count("\n") == 1 and why in r.stderr, r.stderr


def test_a_secret_from_the_environment_is_never_left_on_disk(tmp_path, pybuild, busybox_root, monkeypatch):
    """`--secret id=tok,env=VAR` reaches RUN --mount=type=secret; the file pybuild writes it to
    lives in the store's tmp/ only while the build runs (it was left in /tmp for good)."""
    import glob

    monkeypatch.setenv("PB_TEST_TOKEN", "s3cret-value")
    before = set(glob.glob("/tmp/pybuild-secret-*"))
    _, fs = build(pybuild, tmp_path, "FROM busybox\n"
                  "RUN --mount=type=secret,id=tok cp /run/secrets/tok /seen\n",
                  "--secret", "id=tok,env=PB_TEST_TOKEN")
    with fs() as root:
        assert (root / "seen").read_text() == "s3cret-value"
    assert set(glob.glob("/tmp/pybuild-secret-*")) == before
    assert not list((busybox_root / "tmp").glob("secret-*"))


def test_a_secret_as_env_may_hold_any_bytes(tmp_path, pybuild):
    """`RUN --mount=type=secret,id=s,env=X`: the file's bytes reach X whatever they are (a
    non-UTF-8 secret was an internal error)."""
    (tmp_path / "s").write_bytes(b"ab\xff\xfe\n")
    _, fs = build(pybuild, tmp_path, "FROM busybox\n"
                  "RUN --mount=type=secret,id=s,env=X printf %s \"$X\" | od -An -tx1 | tr -d ' \\n' > /x\n",
                  "--secret", f"id=s,src={tmp_path / 's'}")
    with fs() as root:
        assert (root / "x").read_text() == "6162fffe"


def test_build_and_throw_away_overlays_are_volatile_a_kept_containers_is_not(tmp_path, pybuild):
    """A RUN's upper dir is synced by its commit and a foreground `pybuild run`'s is thrown
    away, so neither overlay syncs the whole disk at unmount (volatile); a container that keeps
    its upper dir mounts it again at each start, which a volatile mount would forbid."""
    root_line = "grep ' / / ' /proc/self/mountinfo"
    _, fs = build(pybuild, tmp_path, f"FROM busybox\nRUN {root_line} > /mi\n")
    with fs() as root:
        assert "volatile" in (root / "mi").read_text()
    r = pybuild("run", "--rm", "busybox", "sh", "-c", root_line)
    assert r.returncode == 0 and "volatile" in r.stdout, r.stderr
    assert pybuild("create", "--name", "kept", "busybox", "sh", "-c", root_line).returncode == 0
    for _ in range(2):
        r = pybuild("start", "-a", "kept")
        assert r.returncode == 0 and "overlay" in r.stdout and "volatile" not in r.stdout, r.stderr
    assert pybuild("rm", "kept").returncode == 0
