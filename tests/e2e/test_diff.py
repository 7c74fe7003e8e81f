"""`pybuild diff A B` as a user runs it: store names, `pybuild save` and `docker save` archives,
an OCI layout dir and a registry reference; the file and attribute named for each change;
`--json`; exit 0 same, 1 different, 2 error (one line)."""
from __future__ import annotations

import json
import os
import subprocess
import tarfile

import pytest
from e2e_helpers import ok, one_error_line, store_snapshot
from fs_probe import XATTR_REASON, xattrs_supported

BASE = """FROM busybox
RUN mkdir /d && chmod 755 /d && echo one > /d/f && chmod 644 /d/f && ln -s f /d/l \\
 && echo bye > /d/gone && chmod 644 /d/gone && touch /d/own && chmod 644 /d/own
"""
CHANGED = """FROM busybox
RUN mkdir /d && chmod 755 /d && echo two > /d/f && chmod 600 /d/f && ln -s other /d/l \\
 && echo new > /d/added && chmod 644 /d/added && touch /d/own && chmod 644 /d/own \\
 && chown 1:2 /d/own
ENV X=1
"""


def build(pybuild, ctx, text: str, tag: str, *extra: str) -> str:
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(text)
    return ok(pybuild("build", "-q", "-t", tag, *extra, str(ctx))).stdout.strip()


@pytest.fixture
def two(pybuild, busybox_root, tmp_path):
    a = build(pybuild, tmp_path / "a", BASE, "diff-a")
    b = build(pybuild, tmp_path / "b", CHANGED, "diff-b")
    assert a != b
    return a, b


def test_each_changed_file_is_named_with_its_attribute(pybuild, two):
    r = pybuild("diff", "diff-a", "diff-b")
    assert r.returncode == 1, r.stderr
    out = r.stdout
    assert "~ /d/f: content, mode 0644 -> 0600" in out
    assert "      -one" in out and "      +two" in out
    assert '~ /d/l: link target "f" -> "other"' in out
    assert "~ /d/own: owner 0:0 -> 1:2" in out
    assert "- /d/gone: removed (file, 0644, 0:0, 4 bytes)" in out
    assert "+ /d/added: added (file, 0644, 0:0, 4 bytes)" in out
    assert 'config config.Env: added ("X=1")' in out
    assert "layer 1 [RUN mkdir /d" in out
    assert "layer 0" not in out  # busybox's layer is the same on both sides: not read


@pytest.mark.skipif(not xattrs_supported("user.x"), reason=XATTR_REASON)
def test_an_xattr_change_is_named(pybuild, busybox_root, tmp_path):
    for side, value in (("x1", b"1"), ("x2", b"2")):
        ctx = tmp_path / side
        ctx.mkdir()
        (ctx / "f").write_text("same\n")
        os.setxattr(ctx / "f", "user.note", value)
        # --no-cache: COPY's cache key does not see a changed user.* xattr (yet)
        build(pybuild, ctx, "FROM busybox\nCOPY f /f\n", side, "--no-cache")
    r = pybuild("diff", "x1", "x2")
    assert r.returncode == 1 and '~ /f: xattrs {"user.note": "1"} -> {"user.note": "2"}' in r.stdout, \
        r.stdout


def test_json_output_parses_and_lists_the_same(pybuild, two):
    r = pybuild("diff", "--json", "diff-a", "diff-b")
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert doc["same"] is False and doc["a"]["id"] == two[0] and doc["b"]["id"] == two[1]
    layer = next(d for d in doc["differences"] if d["kind"] == "layer")
    files = {f["path"]: f for f in layer["files"]}
    assert set(files["d/f"]["attrs"]) == {"content", "mode"}
    assert files["d/own"]["attrs"] == {"owner": {"a": "0:0", "b": "1:2"}}
    assert files["d/added"]["change"] == "added" and files["d/gone"]["change"] == "removed"
    assert any(d["kind"] == "config" and d["path"].startswith("config.Env") for d in doc["differences"])


def test_identical_images_exit_0(pybuild, two):
    r = pybuild("diff", "diff-a", two[0])
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"same image: {two[0]}\n"
    r = pybuild("diff", "--json", "diff-a", "diff-a")
    assert r.returncode == 0 and json.loads(r.stdout)["differences"] == []


def test_saved_archives_and_layout_dir_equal_the_store_image(pybuild, two, tmp_path):
    docker = tmp_path / "a-docker.tar"
    oci = tmp_path / "a-oci.tar"
    ok(pybuild("save", "-o", str(docker), "diff-a"))
    ok(pybuild("save", "--format", "oci", "--compression", "zstd", "-o", str(oci), "diff-a"))
    layout = tmp_path / "layout"
    layout.mkdir()
    with tarfile.open(oci) as tf:
        tf.extractall(layout)
    for src in (str(docker), f"docker-archive:{docker}", str(oci), str(layout), f"oci:{layout}"):
        r = pybuild("diff", src, "diff-a")
        assert r.returncode == 0, (src, r.stdout, r.stderr)
    r = pybuild("diff", str(layout), "diff-b")
    assert r.returncode == 1 and "~ /d/f: content" in r.stdout
    assert "(oci-layout, " in r.stdout


def test_docker_save_of_the_same_image_is_the_same(pybuild, two, tmp_path, dockerd):
    arch = tmp_path / "a.tar"
    ok(pybuild("save", "-o", str(arch), "diff-a"))
    subprocess.run([*dockerd, "load", "-i", str(arch)], check=True, capture_output=True)
    theirs = tmp_path / "docker-saved.tar"
    subprocess.run([*dockerd, "save", "-o", str(theirs), "diff-a"], check=True, capture_output=True)
    r = pybuild("diff", str(theirs), "diff-a")
    assert r.returncode == 0, (r.stdout, r.stderr)
    r = pybuild("diff", str(theirs), "diff-b")
    assert r.returncode == 1 and "/d/own: owner 0:0 -> 1:2" in r.stdout


def test_registry_reference_is_read_without_storing_it(pybuild, two, registry, busybox_root):
    ref = f"{registry.host}/diff/a:1"
    ok(pybuild("tag", "diff-a", ref))
    ok(pybuild("push", ref))
    ok(pybuild("rmi", ref))
    before = store_snapshot(busybox_root)
    r = pybuild("diff", f"docker://{ref}", "diff-b")
    assert r.returncode == 1, r.stderr
    assert "~ /d/f: content, mode 0644 -> 0600" in r.stdout and "(registry, " in r.stdout
    r = pybuild("diff", ref, "diff-a")  # not in the store: the registry's
    assert r.returncode == 0, r.stderr
    assert store_snapshot(busybox_root) == before  # nothing pulled, tagged or left in tmp/


def test_a_bad_argument_is_one_line_and_exit_2(pybuild, two, tmp_path):
    one_error_line(pybuild("diff", str(tmp_path / "none.tar"), "diff-a"), "none.tar", code=2)
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    one_error_line(pybuild("diff", str(junk), "diff-a"), "junk.tar", code=2)
    one_error_line(pybuild("diff", "docker-archive:/nonexistent/x.tar", "diff-a"), "x.tar", code=2)
    one_error_line(pybuild("diff", "diff-a", "sha256:" + "f" * 64), code=2)
    r = pybuild("diff", "diff-a")
    assert r.returncode == 2 and "the following arguments are required" in r.stderr


def test_an_archive_of_two_images_needs_a_name(pybuild, two, tmp_path):
    both = tmp_path / "both.tar"
    ok(pybuild("save", "-o", str(both), "diff-a", "diff-b"))
    one_error_line(pybuild("diff", str(both), "diff-a"), "holds 2 images", "diff-a", code=2)
    assert pybuild("diff", f"docker-archive:{both}:diff-a", "diff-a").returncode == 0
    r = pybuild("diff", f"oci-archive:{both}:diff-b", "diff-a")
    assert r.returncode == 1 and "/d/own: owner 1:2 -> 0:0" in r.stdout
    one_error_line(pybuild("diff", f"docker-archive:{both}:nope", "diff-a"), "no image named nope",
                   code=2)
