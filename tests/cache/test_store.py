"""The store contract other packages code against: root selection, layers, images, tags, refs,
the build-cache index, concurrency and prune."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cache import image as im
from cache.errors import StoreError
from cache.keys import step_key
from cache.store import Store, default_root
from runtime import mountinfo

REPO = Path(__file__).resolve().parents[2]


def test_root_from_env_then_root_default(monkeypatch, tmp_path):
    monkeypatch.setenv("PYBUILD_ROOT", str(tmp_path / "x"))
    assert Store.open().root == tmp_path / "x"
    assert json.loads((tmp_path / "x" / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    assert json.loads((tmp_path / "x" / "index.json").read_text())["schemaVersion"] == 2
    monkeypatch.delenv("PYBUILD_ROOT")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    expect = Path("/var/lib/pybuild") if os.geteuid() == 0 else tmp_path / "xdg" / "pybuild"
    assert default_root() == expect


def test_commit_layer_moves_dir_in_and_empty_dir_is_no_layer(store_root):
    store = Store.open()
    scratch = store.new_scratch()
    assert scratch.parent == store.root / "tmp"
    (scratch / "empty").mkdir()
    assert store.commit_layer(scratch / "empty") is None
    (scratch / "u").mkdir()
    (scratch / "u" / "hello").write_text("hi")
    diff_id = store.commit_layer(scratch / "u")
    assert diff_id.startswith("sha256:") and not (scratch / "u").exists()
    assert (store.layer_dir(diff_id) / "hello").read_text() == "hi"
    # the same content again: deduplicated, the second upper dir is dropped
    (scratch / "v").mkdir()
    (scratch / "v" / "hello").write_text("hi")
    os.utime(scratch / "v" / "hello", (5, 5))
    assert store.commit_layer(scratch / "v") == diff_id


def test_images_tags_and_docker_ref_normalisation(busybox_root):
    store = Store.open()
    bb = store.resolve("busybox")
    for ref in ("busybox:latest", "docker.io/library/busybox", "docker.io/library/busybox:latest",
                "library/busybox", bb, bb[7:], bb[7:19], bb[:14]):
        assert store.resolve(ref) == bb, ref
    img = store.image("busybox")
    assert img.id == bb and img.config["config"]["Cmd"] == ["sh"]
    assert img.container_config["Env"] == ["PATH=/usr/local/sbin:/usr/local/bin:"
                                           "/usr/sbin:/usr/bin:/sbin:/bin"]
    assert len(img.diff_ids) == 1 and (store.layer_dir(img.diff_ids[0]) / "bin" / "busybox").is_file()
    store.tag("localhost:5000/team/app:v1", bb)
    assert store.resolve("localhost:5000/team/app:v1") == bb
    with pytest.raises(StoreError, match="no such image: team/app:v1"):
        store.resolve("team/app:v1")
    with pytest.raises(StoreError, match="no such image: nothere"):
        store.image("nothere")
    with pytest.raises(StoreError, match="invalid reference format"):
        store.tag("Bad Name", bb)


def test_put_image_id_is_config_digest_and_history_like_buildkit(busybox_root):
    store = Store.open()
    base = store.image("busybox")
    cfg = im.add_step(base.config, 'ENV A=1', diff_id=None, created="1970-01-01T00:00:00Z")
    image_id = store.put_image(cfg)
    assert store.image(image_id).config["history"][-1] == {
        "created": "1970-01-01T00:00:00Z", "created_by": "ENV A=1",
        "comment": "buildkit.dockerfile.v0", "empty_layer": True}
    import hashlib
    assert image_id == "sha256:" + hashlib.sha256(store.blob_path(image_id).read_bytes()).hexdigest()
    assert store.put_image(cfg) == image_id  # deterministic config bytes
    bad = im.add_step(base.config, "RUN x", diff_id="sha256:" + "0" * 64)
    with pytest.raises(StoreError, match="not in the store"):
        store.put_image(bad)


def test_step_key_is_canonical():
    a = step_key("run", "sha256:" + "1" * 64, {"cmd": ["sh", "-c", "x"], "env": {"A": "1", "B": "2"}})
    b = step_key("run", "sha256:" + "1" * 64, {"env": {"B": "2", "A": "1"}, "cmd": ["sh", "-c", "x"]})
    assert a == b and a.startswith("sha256:") and len(a) == 71
    assert a != step_key("run", None, {"cmd": ["sh", "-c", "x"], "env": {"A": "1", "B": "2"}})


def test_cache_index(store_root):
    store = Store.open()
    assert store.cache_get("k") is None
    store.cache_put("k", {"diff_id": None, "config": {"a": 1}})
    assert Store.open().cache_get("k") == {"diff_id": None, "config": {"a": 1}}


def test_concurrent_writers_lose_no_update(store_root):
    """Four processes each add 25 cache entries at once: the file lock keeps all 100."""
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
            "from cache.store import Store\ns = Store.open()\n"
            "for i in range(25): s.cache_put(f'{sys.argv[1]}-{i}', {'i': i})\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(n)]) for n in range(4)]
    assert all(p.wait(60) == 0 for p in procs)
    assert len(json.loads((store_root / "cachekeys.json").read_text())) == 100


def test_prune_removes_garbage_never_a_referenced_blob(busybox_root, pybuild):
    store = Store.open()
    bb = store.image("busybox")
    store.manifest(bb.id, "gzip")  # makes compressed blobs + manifest, all referenced
    referenced = {p.name for p in store.blobs.iterdir()}
    # garbage: a dead process's tmp file, an unreferenced blob and layer, a cache-held layer
    (store.tmp / "w-999999999.1-dead").write_text("half written")
    stray = store.put_blob(b"nobody refers to me")
    s = store.new_scratch()
    (s / "u").mkdir()
    (s / "u" / "f").write_text("orphan")
    orphan = store.commit_layer(s / "u")
    (s / "c").mkdir()
    (s / "c" / "f").write_text("cached")
    cached = store.commit_layer(s / "c")
    store.cache_put("step", {"layer": cached})
    shutil.rmtree(s)
    store.leases.release()  # as if the committing build had exited
    r = pybuild("prune")
    assert r.returncode == 0, r.stderr
    assert "Total reclaimed space" in r.stdout
    left = {p.name for p in store.blobs.iterdir()}
    assert referenced <= left and stray[7:] not in left
    assert not (store.tmp / "w-999999999.1-dead").exists()
    assert not store.layer_path(orphan).exists() and store.layer_path(cached).exists()
    assert store.layer_path(bb.diff_ids[0]).exists()
    r = pybuild("prune", "-a", "-f")
    assert r.returncode == 0 and not store.layer_path(cached).exists()
    assert store.resolve("busybox") == bb.id and store.layer_path(bb.diff_ids[0]).exists()


def test_rmi_untags_then_deletes(busybox_root, pybuild):
    store = Store.open()
    bb = store.resolve("busybox")
    assert pybuild("tag", "busybox", "mine:1").returncode == 0
    r = pybuild("rmi", "mine:1")
    assert r.returncode == 0 and r.stdout.strip() == "Untagged: mine:1"
    assert store.resolve("busybox") == bb
    # the copied store holds the lease of the session that made busybox (it still runs)
    shutil.rmtree(store.root / "leases", ignore_errors=True)
    r = pybuild("rmi", "busybox")
    assert r.returncode == 0 and f"Deleted: {bb}" in r.stdout
    assert not any(store.layers.iterdir()) and not any(store.blobs.iterdir())
    r = pybuild("rmi", "busybox")
    assert r.returncode == 1 and r.stderr.strip() == "pybuild: error: no such image: busybox"


def test_images_inspect_history_cli(busybox_root, pybuild):
    r = pybuild("images")
    assert r.returncode == 0
    header, row = r.stdout.splitlines()[:2]
    assert header.split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert row.split()[:2] == ["busybox", "latest"]
    r = pybuild("inspect", "busybox")
    doc = json.loads(r.stdout)[0]
    assert doc["RepoTags"] == ["busybox:latest"] and doc["Config"]["Cmd"] == ["sh"]
    assert doc["RootFS"]["Layers"] == list(Store.open().image("busybox").diff_ids)
    assert pybuild("inspect", "-f", "{{json .Config.Cmd}}", "busybox").stdout == '["sh"]\n'
    r = pybuild("history", "busybox")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 2


def _child(code: str) -> subprocess.Popen:
    """A python child running `code` against this repo; it prints one line when ready."""
    p = subprocess.Popen([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(REPO)!r})\n" + code],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return p


def test_prune_all_spares_the_image_a_running_build_is_about_to_tag(busybox_root, pybuild):
    """A build's image is untagged between put_image and its tag: prune -a must leave it (the
    build still runs), and the tag then names a whole image. Once that process is gone, an
    untagged image is fair game again."""
    p = _child("from cache.store import Store\nfrom cache import image as im\ns = Store.open()\n"
               "cfg = im.add_step(s.image('busybox').config, 'ENV X=1', diff_id=None)\n"
               "iid = s.put_image(cfg)\nprint(iid, flush=True)\ninput()\ns.tag('built:1', iid)\n")
    image_id = p.stdout.readline().strip()
    r = pybuild("prune", "-a", "-f")
    assert r.returncode == 0, r.stderr
    p.stdin.write("\n")
    p.stdin.close()
    assert p.wait(30) == 0
    store = Store.open()
    assert store.resolve("built:1") == image_id and store.has_blob(image_id)
    # the same image untagged, its process gone: removed
    store.untag("built:1")
    assert pybuild("prune", "-a", "-f").returncode == 0
    assert image_id not in store.images() and not store.has_blob(image_id)


def test_tag_only_names_a_whole_image(busybox_root):
    store = Store.open()
    cfg = im.add_step(store.image("busybox").config, "ENV Y=1", diff_id=None)
    image_id = store.put_image(cfg)
    store.blob_path(image_id).unlink()  # as a prune racing the tag would leave it
    with pytest.raises(StoreError, match="missing from the store"):
        store.tag("half:1", image_id)
    assert "docker.io/library/half:1" not in store.tags()
    both = store.put_image(im.add_step(cfg, "ENV Z=1", diff_id=None), tags=["a:1", "b:1"])
    assert store.resolve("a:1") == store.resolve("b:1") == both


def test_prune_removes_a_killed_builds_scratch_never_a_live_one(busybox_root, pybuild):
    code = ("from cache.store import Store\nimport time\nd = Store.open().new_scratch()\n"
            "(d / 'upper').mkdir()\n(d / 'upper' / 'f').write_text('x')\nprint(d, flush=True)\n"
            "time.sleep(60)\n")
    live, killed = _child(code), _child(code)
    live_dir, killed_dir = Path(live.stdout.readline().strip()), Path(killed.stdout.readline().strip())
    killed.kill()
    killed.wait()
    store = Store.open()
    # the live process's pid with another start time: a pid the kernel reused, so a dead owner
    reused = store.tmp / f"scratch-{live.pid}.1-0000"
    reused.mkdir()
    try:
        from cache.gc import stale_scratch
        assert stale_scratch(store) == sorted([killed_dir, reused])
        r = pybuild("prune")
        assert r.returncode == 0, r.stderr
        assert not killed_dir.exists() and not reused.exists()
        assert (live_dir / "upper" / "f").read_text() == "x"
    finally:
        live.kill()
        live.wait()
    assert pybuild("prune").returncode == 0 and not live_dir.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_prune_never_deletes_through_a_mount_left_in_a_dead_scratch(busybox_root, pybuild, tmp_path):
    """A killed build may leave a mount (its overlay, a bind of the context) in its scratch:
    removing the dir with the mount in place would delete what the mount shows. gc alone
    leaves such a dir; `pybuild prune` first detaches the dead owner's mounts, then removes it."""
    from cache import gc

    users = tmp_path / "context"
    users.mkdir()
    (users / "precious").write_text("user data")
    store = Store.open()
    dead = store.tmp / "scratch-999999999.1-0000"
    (dead / "merged").mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(users), str(dead / "merged")], check=True)
    try:
        rep = gc.prune(store, mount_points=[os.path.realpath(dead / "merged")])
        assert rep.busy == 1 and (dead / "merged" / "precious").exists()
        r = pybuild("prune")
        assert r.returncode == 0, r.stderr
    finally:
        subprocess.run(["umount", str(dead / "merged")], capture_output=True, check=False)
    assert (users / "precious").read_text() == "user data"
    assert not dead.exists()
    assert not mountinfo.mounts_under(store.tmp)


def test_a_layer_a_live_process_uses_survives_prune_all(busybox_root, pybuild):
    """A build that found its step in the cache mounts that layer: prune -a (which drops the
    cache) must not take the layer from under it, as BuildKit's lease keeps it."""
    # an earlier build made the layer and exited
    made = _child("from cache.store import Store\ns = Store.open()\nd = s.new_scratch() / 'u'\n"
                  "d.mkdir()\n(d / 'f').write_text('cached step')\n"
                  "s.cache_put('step', {'diff_id': s.commit_layer(d)})\n")
    assert made.wait(30) == 0
    p = _child("from cache.store import Store\ns = Store.open()\nd = s.cache_get('step')['diff_id']\n"
               "print(s.layer_dir(d), flush=True)\ninput()\n")
    path = Path(p.stdout.readline().strip())
    try:
        r = pybuild("prune", "-a", "-f")
        assert r.returncode == 0, r.stderr
        assert (path / "f").read_text() == "cached step"
    finally:
        p.stdin.close()
        p.wait(30)
    assert pybuild("prune", "-a", "-f").returncode == 0 and not path.exists()


def test_a_blob_a_live_process_wrote_survives_prune_until_named(busybox_root, pybuild):
    """A pull writes blobs before the records naming them: prune keeps them for the writer."""
    p = _child("import io\nfrom cache.store import Store\n"
               "print(Store.open().ingest(io.BytesIO(b'pulled, not yet recorded'))[0], flush=True)\n"
               "input()\n")
    digest = p.stdout.readline().strip()
    store = Store.open()
    try:
        assert pybuild("prune", "-a", "-f").returncode == 0
        assert store.read_blob(digest) == b"pulled, not yet recorded"
    finally:
        p.stdin.close()
        p.wait(30)
    assert pybuild("prune").returncode == 0 and not store.has_blob(digest)
