"""Overlay's own xattrs never come from user content: a build-context dir carrying
`user.overlay.opaque=y` (any user can set user.* xattrs on their files), or an ADDed tar entry
with `SCHILY.xattr.user.overlay.opaque` / `trusted.overlay.opaque`, must not turn into an opaque
marker that hides the base image's directory, and the xattr is not in the layer."""
from __future__ import annotations

import io
import json
import os
import tarfile

import pytest
from fs_probe import XATTR_REASON, xattrs_supported

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="building needs root"),
    pytest.mark.skipif(os.geteuid() == 0 and not xattrs_supported("user.x", "trusted.x"),
                       reason=XATTR_REASON),
]

SNAPSHOTTERS = ["overlay", "native"]


def _layers(pybuild, tmp_path, tag: str) -> list[list[tarfile.TarInfo]]:
    """The members of each layer tar of `tag`, read from `pybuild save`."""
    out = tmp_path / f"{tag}.tar"
    r = pybuild("save", "-o", str(out), tag)
    assert r.returncode == 0, r.stderr
    with tarfile.open(out) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))
        layers = []
        for name in manifest[0]["Layers"]:
            with tarfile.open(fileobj=io.BytesIO(outer.extractfile(name).read())) as lt:
                layers.append(lt.getmembers())
    return layers


def _build(pybuild, monkeypatch, snap, ctx, dockerfile, tag="t"):
    monkeypatch.setenv("PYBUILD_SNAPSHOTTER", snap)
    (ctx / "Dockerfile").write_text(dockerfile)
    r = pybuild("build", "--progress", "plain", "-t", tag, str(ctx))
    assert r.returncode == 0, r.stderr


def _etc(pybuild, tag="t") -> list[str]:
    r = pybuild("run", "--rm", tag, "ls", "/etc")
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def _assert_no_overlay_xattr(layer: list[tarfile.TarInfo]) -> None:
    names = [m.name for m in layer]
    assert not any(n.endswith(".wh..wh..opq") for n in names), names
    for m in layer:
        assert not any("overlay." in k for k in m.pax_headers), (m.name, m.pax_headers)


@pytest.mark.parametrize("snap", SNAPSHOTTERS)
@pytest.mark.parametrize("xattr", ["user.overlay.opaque", "trusted.overlay.opaque"])
def test_copy_of_a_dir_with_overlays_opaque_xattr_keeps_the_base_dir(
        pybuild, busybox_root, tmp_path, monkeypatch, snap, xattr):
    ctx = tmp_path / "ctx"
    (ctx / "c" / "etc").mkdir(parents=True)
    (ctx / "c" / "etc" / "new").write_text("n\n")
    os.setxattr(ctx / "c" / "etc", xattr, b"y")
    _build(pybuild, monkeypatch, snap, ctx, "FROM busybox\nCOPY c/ /\n")
    etc = _etc(pybuild)
    assert "passwd" in etc and "new" in etc
    _assert_no_overlay_xattr(_layers(pybuild, tmp_path, "t")[-1])


@pytest.mark.parametrize("snap", SNAPSHOTTERS)
def test_add_of_a_tar_with_overlays_opaque_xattrs_keeps_the_base_dir(
        pybuild, busybox_root, tmp_path, monkeypatch, snap):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, key in (("etc", "user.overlay.opaque"), ("usr", "trusted.overlay.opaque")):
            d = tarfile.TarInfo(name)
            d.type, d.mode = tarfile.DIRTYPE, 0o755
            d.pax_headers = {f"SCHILY.xattr.{key}": "y", "SCHILY.xattr.user.kept": "k"}
            tf.addfile(d)
            f = tarfile.TarInfo(f"{name}/new")
            f.size = 2
            tf.addfile(f, io.BytesIO(b"n\n"))
    (ctx / "x.tar").write_bytes(buf.getvalue())
    _build(pybuild, monkeypatch, snap, ctx, "FROM busybox\nADD x.tar /\n")
    etc = _etc(pybuild)
    assert "passwd" in etc and "new" in etc
    r = pybuild("run", "--rm", "t", "ls", "/usr")
    assert "sbin" in r.stdout.split() and "new" in r.stdout.split(), r.stdout
    top = _layers(pybuild, tmp_path, "t")[-1]
    _assert_no_overlay_xattr(top)
    etc_entry = next(m for m in top if m.name.rstrip("/") == "etc")
    assert etc_entry.pax_headers.get("SCHILY.xattr.user.kept") == "k"   # other user.* stay


@pytest.mark.skipif(not xattrs_supported(), reason=XATTR_REASON)
def test_a_changed_user_xattr_on_a_source_file_misses_the_cache(busybox_root, pybuild, tmp_path):
    """A user.* xattr is part of what COPY copies, so it is part of COPY's key: changing it
    rebuilds the step (a replay does not take it for a touch) and the new layer has the new
    value; the explanation names it."""
    (tmp_path / "Dockerfile").write_text("FROM busybox\nCOPY f /f\n")
    f = tmp_path / "f"
    f.write_text("same bytes\n")
    os.setxattr(f, "user.note", b"one")
    first = pybuild("build", "-q", "-t", "xa", str(tmp_path))
    assert first.returncode == 0, first.stderr
    assert pybuild("build", "-q", "-t", "xa", str(tmp_path)).stdout == first.stdout   # cached
    os.setxattr(f, "user.note", b"two")
    r = pybuild("build", "--progress", "plain", "-t", "xa", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "f (xattrs)" in r.stderr, r.stderr
    second = pybuild("build", "-q", "-t", "xa", str(tmp_path)).stdout
    assert second != first.stdout
    tar = tmp_path / "xa.tar"
    assert pybuild("save", "-o", str(tar), "xa").returncode == 0
    with tarfile.open(tar) as outer:
        layers = [m for m in outer if m.name.startswith("blobs/sha256/")]
        notes = []
        for m in layers:
            try:
                with tarfile.open(fileobj=outer.extractfile(m)) as layer:
                    notes += [e.pax_headers.get("SCHILY.xattr.user.note") for e in layer
                              if e.name == "f"]
            except tarfile.ReadError:
                continue            # a config or manifest blob
    assert "two" in notes and "one" not in notes, notes
