"""An edited COPY made as a delta over the previous layer of its step (builder.delta), where it
must not be, and what the store does with deltas: each build equals a cold build of the same
context (image ID, diff_ids, saved bytes), whichever way the layer was made.

- a deletion of what a lower layer also has, a file that became a directory, many changes at
  once, `PYBUILD_COPY_DELTA=off`: a full layer;
- a directory that became a file: a delta;
- a damaged or missing kept tar: a full layer; a delta whose base's tar is gone still saves;
- an image with a delta layer as a base image, pushed and pulled into another store;
- removing every image and pruning leaves no layer, meta or mount behind."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from e2e_helpers import ok
from fs_probe import XATTR_REASON, xattrs_supported
from test_edit_rebuild import TAG, Builds, assert_same_as_cold, image, is_delta, make_context, saved_layers

from cache import layout
from runtime.mountinfo import mounts_under

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds mount overlays: run as root")


@pytest.fixture
def builds(pybuild, busybox_store, busybox_root, tmp_path, monkeypatch) -> Builds:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    monkeypatch.delenv("PYBUILD_COPY_DELTA", raising=False)
    return Builds(pybuild, busybox_root, busybox_store.root, tmp_path)


def copy_layer(b: Builds, ref: str = TAG, k: int = 1) -> str:
    return image(b.store, ref)["diff_ids"][k]


def test_deleting_what_a_lower_layer_has_too_is_a_full_layer(builds, pybuild, tmp_path):
    """COPY . /etc with a context file `group`: deleting it must show busybox's /etc/group
    again, which a whiteout in a delta would hide."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "group").write_text("mine:x:1:\n")
    (ctx / "other").write_text("other\n")
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY . /etc\nRUN cat /etc/group > /seen\n")
    builds.build(ctx)
    (ctx / "group").unlink()
    new = builds.build(ctx)
    assert not is_delta(builds.store, copy_layer(builds))
    assert_same_as_cold(builds, ctx, new)
    r = ok(pybuild("run", "--rm", "--network", "none", TAG, "cat", "/seen"))
    assert r.stdout.startswith("root:x:0:")


def test_a_file_that_becomes_a_directory_and_back(builds, tmp_path):
    ctx = tmp_path / "ctx"
    make_context(ctx, dirs=2, per_dir=20)
    builds.build(ctx)
    (ctx / "d0/f001").unlink()
    (ctx / "d0/f001").mkdir()
    (ctx / "d0/f001/inside").write_text("inside\n")
    new = builds.build(ctx)
    assert not is_delta(builds.store, copy_layer(builds))   # overlay would make it opaque
    assert_same_as_cold(builds, ctx, new)
    shutil.rmtree(ctx / "d1")
    (ctx / "d1").write_text("a file now\n")
    new = builds.build(ctx)
    assert_same_as_cold(builds, ctx, new)


def test_many_changes_at_once_make_a_full_layer(builds, tmp_path):
    ctx = tmp_path / "ctx"
    make_context(ctx, dirs=4, per_dir=100)
    builds.build(ctx)
    for j in range(100):        # 100 of 400 files: more than a fifth
        with open(ctx / f"d1/f{j:03d}", "a") as f:
            f.write("changed\n")
    new = builds.build(ctx)
    assert not is_delta(builds.store, copy_layer(builds))
    assert_same_as_cold(builds, ctx, new)
    with open(ctx / "d2/f000", "a") as f:   # the full layer is the new base
        f.write("one more\n")
    new = builds.build(ctx)
    base = layout.delta_base(builds.store, copy_layer(builds))
    assert base is not None and base != image(builds.store, new)["diff_ids"][0]
    assert_same_as_cold(builds, ctx, new)


def test_the_setting_off_makes_full_layers(builds, pybuild, tmp_path, monkeypatch):
    ctx = tmp_path / "ctx"
    make_context(ctx, dirs=2, per_dir=20)
    monkeypatch.setenv("PYBUILD_COPY_DELTA", "off")
    builds.build(ctx)
    (ctx / "d0/f000").write_text("edited\n")
    new = builds.build(ctx)
    assert not is_delta(builds.store, copy_layer(builds))
    assert not os.path.exists(builds.store / layout.LAYERMETA_DIR) or \
        os.listdir(builds.store / layout.LAYERMETA_DIR) == []
    assert_same_as_cold(builds, ctx, new)


def test_a_damaged_or_missing_kept_tar(builds, pybuild, tmp_path):
    ctx = tmp_path / "ctx"
    make_context(ctx, dirs=2, per_dir=50)
    first = builds.build(ctx)
    base = copy_layer(builds)
    kept = Path(layout.layer_meta_path(builds.store, base)) / "tar"
    (ctx / "d0/f000").write_text("edited\n")
    second = builds.build(ctx)
    assert layout.delta_base(builds.store, copy_layer(builds)) == base
    want = saved_layers(pybuild, builds.store, TAG, tmp_path / "a.tar")

    kept.unlink()                       # a delta still saves: the base's tar is made again
    assert saved_layers(pybuild, builds.store, TAG, tmp_path / "b.tar") == want
    (ctx / "d0/f001").write_text("edited too\n")
    third = builds.build(ctx)           # no kept tar to splice into: a full layer
    assert not is_delta(builds.store, copy_layer(builds))
    assert_same_as_cold(builds, ctx, third)

    # damaged in place: the splice's check of the base's tar against its diff_id refuses it
    ok(pybuild("tag", first, "edit/first"))
    kept = Path(layout.layer_meta_path(builds.store, copy_layer(builds))) / "tar"
    data = bytearray(kept.read_bytes())
    data[700] ^= 1
    kept.write_bytes(bytes(data))
    (ctx / "d1/f002").write_text("edited three\n")
    fourth = builds.build(ctx)
    assert not is_delta(builds.store, copy_layer(builds))
    assert_same_as_cold(builds, ctx, fourth)
    assert len({first, second, third, fourth}) == 4


def test_a_delta_image_as_a_base_image_and_through_a_registry(builds, pybuild, tmp_path,
                                                             registry):
    ctx = tmp_path / "ctx"
    make_context(ctx, dirs=2, per_dir=20)
    builds.build(ctx)
    (ctx / "d0/f000").write_text("edited\n")
    builds.build(ctx)
    assert is_delta(builds.store, copy_layer(builds))

    child = tmp_path / "child"
    child.mkdir()
    (child / "Dockerfile").write_text(f"FROM {TAG}\nRUN cat /app/d0/f000 /app/d1/f001 > /both\n")
    ok(pybuild("build", "-q", "-t", "edit/child", str(child)))
    r = ok(pybuild("run", "--rm", "--network", "none", "edit/child", "cat", "/both"))
    assert r.stdout == "edited\n" + (ctx / "d1/f001").read_text()

    ref = f"{registry.host}/delta/app:1"
    ok(pybuild("tag", TAG, ref))
    ok(pybuild("push", ref))
    other = tmp_path / "other"
    env = {**os.environ, "PYBUILD_ROOT": str(other)}
    ok(pybuild("pull", ref, env=env))
    assert image(other, ref)["diff_ids"] == image(builds.store, TAG)["diff_ids"]
    r = ok(pybuild("run", "--rm", "--network", "none", ref, "cat", "/app/d0/f000", env=env))
    assert r.stdout == "edited\n"


def test_removing_everything_and_pruning_leaves_nothing(builds, pybuild, tmp_path):
    """(The layers are looked at through the CLI: a Store opened in this process would hold
    them against the prune.)"""
    def diff_ids(ref: str) -> list[str]:
        return json.loads(ok(pybuild("inspect", "-f", "{{json .RootFS.Layers}}", ref)).stdout)

    ctx = tmp_path / "ctx"
    make_context(ctx, dirs=2, per_dir=20)
    build = ["build", "-q", "-t", TAG, str(ctx)]
    ok(pybuild(*build))
    for k in range(2):
        (ctx / f"d0/f00{k}").write_text(f"edit {k}\n")
        ok(pybuild(*build))
        ok(pybuild("tag", TAG, f"edit/v{k}"))
    assert layout.delta_base(builds.store, diff_ids(TAG)[1]) is not None
    busybox = {d[7:] for d in diff_ids("busybox")}
    before = set(os.listdir(builds.store / layout.LAYERS_DIR))
    assert len(before - busybox) >= 5       # the base, two deltas and their RUN layers
    ok(pybuild("rmi", TAG, "edit/v0", "edit/v1"))
    ok(pybuild("prune", "-a", "-f"))        # the untagged first image and the build cache too
    assert set(os.listdir(builds.store / layout.LAYERS_DIR)) == busybox
    assert os.listdir(builds.store / layout.LAYERMETA_DIR) == []
    assert mounts_under(builds.store) == []


# -- what a review found (each a delta that differed from a cold build) ------------------------
def test_a_parent_that_made_other_layers_under_the_same_key_is_no_base(builds, pybuild, tmp_path):
    """A RUN whose output differs run to run keeps its key; once the build cache is pruned it
    runs again and the COPY above it sits on other layers: not a delta over the old ones."""
    ctx = tmp_path / "ctx"
    make_context(ctx, dirs=2, per_dir=20)
    (ctx / "Dockerfile").write_text(
        "FROM busybox\nRUN cat /proc/sys/kernel/random/uuid > /stamp\nCOPY . /app\n")
    builds.build(ctx)
    first = image(builds.store, TAG)["diff_ids"]
    ok(pybuild("builder", "prune", "-a", "-f"))
    (ctx / "d0/f000").write_text("edited\n")
    builds.build(ctx)
    now = image(builds.store, TAG)["diff_ids"]
    assert now[1] != first[1]                           # the RUN made another layer
    assert not is_delta(builds.store, now[2])
    (ctx / "d0/f001").write_text("edited too\n")       # over the new RUN layer: a delta again
    builds.build(ctx)
    assert layout.delta_base(builds.store, copy_layer(builds, k=2)) == now[2]


@pytest.mark.skipif(not xattrs_supported("user.x"), reason=XATTR_REASON)
def test_a_directory_xattr_removed_from_the_context(builds, tmp_path):
    ctx = tmp_path / "ctx"
    make_context(ctx, dirs=2, per_dir=20)
    os.setxattr(ctx / "d1", "user.dx", b"1")
    builds.build(ctx)
    os.removexattr(ctx / "d1", "user.dx")
    (ctx / "d1/f000").write_text("edited\n")
    new = builds.build(ctx)
    assert is_delta(builds.store, copy_layer(builds))
    assert_same_as_cold(builds, ctx, new)


def test_a_file_over_a_directory_a_lower_layer_has_fails_as_a_cold_copy_does(builds, pybuild,
                                                                            tmp_path):
    ctx = tmp_path / "ctx"
    make_context(ctx, dirs=2, per_dir=20)
    (ctx / "Dockerfile").write_text(
        "FROM busybox\nRUN mkdir -p /app/x && echo lower > /app/x/l\nCOPY . /app\n")
    (ctx / "x").mkdir()
    (ctx / "x/mine").write_text("mine\n")
    builds.build(ctx)
    shutil.rmtree(ctx / "x")
    (ctx / "x").write_text("a file now\n")
    r = pybuild("build", "-q", "-t", TAG, str(ctx))
    assert r.returncode == 1 and "cannot replace to directory /app/x with file" in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_chown_names_come_from_the_image_not_from_the_copy(builds, tmp_path):
    """/etc/group is a link to a file the COPY overwrites: a cold copy resolves the name in
    the image's group file (555), never in the copied one (777)."""
    ctx = tmp_path / "ctx"
    (ctx / "conf").mkdir(parents=True)
    (ctx / "conf/group").write_text("mygrp:x:777:\n")
    (ctx / "conf/f1").write_text("one\n")
    (ctx / "Dockerfile").write_text(
        "FROM busybox\nRUN echo mygrp:x:555: >> /etc/group && mkdir -p /srv/etc && "
        "mv /etc/group /srv/etc/group && ln -s /srv/etc/group /etc/group\n"
        "COPY --chown=1:mygrp conf /srv/etc\n")
    builds.build(ctx)
    (ctx / "conf/f1").write_text("edited\n")
    new = builds.build(ctx)
    assert is_delta(builds.store, copy_layer(builds, k=2))
    assert_same_as_cold(builds, ctx, new)


def test_a_delta_whose_record_is_gone_is_an_error_not_half_a_filesystem(builds, pybuild,
                                                                       tmp_path):
    ctx = tmp_path / "ctx"
    make_context(ctx, dirs=2, per_dir=20)
    builds.build(ctx)
    (ctx / "d0/f000").write_text("edited\n")
    builds.build(ctx)
    d = copy_layer(builds)
    os.unlink(Path(layout.layer_meta_path(builds.store, d)) / "base")
    r = pybuild("run", "--rm", "--network", "none", TAG, "ls", "/app/d1")
    assert r.returncode == 125 and "delta record is damaged" in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1
