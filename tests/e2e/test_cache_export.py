"""`pybuild build --cache-to` / `--cache-from` through the CLI, as a user on two machines would:
one store exports its build cache to an OCI layout dir, a second, independent store (same
busybox base) builds from it.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from busybox_fixture import copy_store

SINGLE = """\
FROM busybox
COPY f /f
RUN echo RAN-ONE && cat /f > /g
WORKDIR /w
RUN echo RAN-TWO && echo two > /w/two
CMD ["cat", "/g"]
"""

MULTI = """\
FROM busybox AS builder
RUN echo RAN-BUILDER && echo built > /out
FROM busybox
COPY f /f
COPY --from=builder /out /out
RUN echo RAN-FINAL && cat /out /f > /both
"""


@pytest.fixture
def ctx(tmp_path) -> Path:
    c = tmp_path / "ctx"
    c.mkdir()
    (c / "f").write_text("hello\n")
    return c


def build(pybuild, root: Path, ctx: Path, dockerfile: str, *flags: str, ok: bool = True):
    """(image ID, {step name: "CACHED" | "DONE" | "ERROR"}, stderr) of one build in `root`."""
    (ctx / "Dockerfile").write_text(dockerfile)
    r = pybuild("--root", str(root), "build", "--progress", "plain", *flags, str(ctx))
    if ok:
        assert r.returncode == 0, r.stderr
    names, outcome = {}, {}
    for line in r.stderr.splitlines():
        m = re.match(r"#(\d+) (.*)$", line)
        if not m:
            continue
        n, rest = m.groups()
        if n not in names:
            names[n] = rest
        elif rest == "CACHED" or rest.startswith(("DONE", "ERROR")):
            outcome[names[n]] = rest.split()[0].rstrip(":")
    image = next((x.split()[3] for x in r.stderr.splitlines() if " writing image " in x), None)
    return image, outcome, r


def layer_steps(outcome: dict) -> dict:
    return {k: v for k, v in outcome.items() if re.search(r"\] (RUN|COPY|WORKDIR) ", k)}


def ran(r, marker: str) -> bool:
    """Did a RUN print `marker` (its output, not the step's name)?"""
    return re.search(rf"^#\d+ \d+\.\d+ {marker}$", r.stderr, re.M) is not None


def blobs(root: Path) -> set[str]:
    return {p.name for p in (root / "blobs" / "sha256").iterdir()}


def cache_doc(d: Path, tag: str = "latest") -> tuple[dict, dict]:
    """(manifest, config) of the cache tagged `tag` in dir `d`."""
    index = json.loads((d / "index.json").read_text())
    entry = next(m for m in index["manifests"]
                 if m["annotations"]["org.opencontainers.image.ref.name"] == tag)
    manifest = json.loads((d / "blobs" / "sha256" / entry["digest"][7:]).read_text())
    config = json.loads((d / "blobs" / "sha256" / manifest["config"]["digest"][7:]).read_text())
    return manifest, config


def test_another_store_builds_everything_from_the_exported_cache(pybuild, busybox_root,
                                                                 other_busybox_root, ctx, tmp_path):
    d = tmp_path / "cache"
    image_a, out_a, r_a = build(pybuild, busybox_root, ctx, SINGLE, "--cache-to", f"type=local,dest={d}")
    assert set(layer_steps(out_a).values()) == {"DONE"} and len(layer_steps(out_a)) == 4
    assert ran(r_a, "RAN-ONE") and f"exporting cache to local:{d}" in r_a.stderr
    manifest, config = cache_doc(d)
    assert manifest["artifactType"] == "application/vnd.pybuild.buildcache.v1"
    assert len(config["pybuild.cache"]["steps"]) == 4
    assert len(manifest["layers"]) == len(config["rootfs"]["diff_ids"]) == 4

    image_b, out_b, r_b = build(pybuild, other_busybox_root, ctx, SINGLE,
                                "--cache-from", f"type=local,src={d}", "--cache-to", f"type=local,dest={d}2")
    steps = layer_steps(out_b)
    assert len(steps) == 4 and set(steps.values()) == {"CACHED"}, out_b
    assert not ran(r_b, "RAN-ONE") and not ran(r_b, "RAN-TWO")  # no RUN executed
    assert "WARNING" not in r_b.stderr
    assert image_b == image_a
    # the second machine exports the same cache, byte for byte
    assert (d / "index.json").read_bytes() == (tmp_path / "cache2" / "index.json").read_bytes()

    # the layers imported are real layers of the store: `run` works from them
    r = pybuild("--root", str(other_busybox_root), "run", "--rm", image_b)
    assert r.returncode == 0 and r.stdout == "hello\n", r.stderr
    # and the local cache now has the keys: no cache source needed any more
    _, out_c, _ = build(pybuild, other_busybox_root, ctx, SINGLE)
    assert set(layer_steps(out_c).values()) == {"CACHED"}


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed (./install.sh --test)")
def test_skopeo_reads_the_exported_dir(pybuild, busybox_root, ctx, tmp_path):
    d = tmp_path / "cache"
    build(pybuild, busybox_root, ctx, SINGLE, "--cache-to", f"type=local,dest={d},tag=buildcache")
    r = subprocess.run(["skopeo", "inspect", f"oci:{d}:buildcache"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    manifest, _ = cache_doc(d, "buildcache")
    assert info["Layers"] == [x["digest"] for x in manifest["layers"]]
    assert info["Os"] == "linux"
    r = subprocess.run(["skopeo", "inspect", "--config", "--raw", f"oci:{d}:buildcache"],
                       capture_output=True, check=True)
    assert len(json.loads(r.stdout)["pybuild.cache"]["steps"]) == 4


def test_mode_max_exports_the_builder_stage_and_min_does_not(pybuild, busybox_store, busybox_root,
                                                             other_busybox_root, ctx, tmp_path):
    dmin, dmax = tmp_path / "min", tmp_path / "max"
    build(pybuild, busybox_root, ctx, MULTI, "--cache-to", f"type=local,dest={dmin}",
          "--cache-to", f"type=local,dest={dmax},mode=max")
    assert len(cache_doc(dmin)[1]["pybuild.cache"]["steps"]) == 3
    assert len(cache_doc(dmax)[1]["pybuild.cache"]["steps"]) == 4

    other = other_busybox_root
    _, out, r = build(pybuild, other, ctx, MULTI, "--cache-from", f"type=local,src={dmin}")
    steps = layer_steps(out)
    builder_run = next(k for k in steps if "RAN-BUILDER" in k)
    assert steps.pop(builder_run) == "DONE" and ran(r, "RAN-BUILDER")  # not in a min cache
    assert set(steps.values()) == {"CACHED"}, out  # the final stage's steps are

    third = copy_store(busybox_store.root, tmp_path / "third")
    _, out, r = build(pybuild, third, ctx, MULTI, "--cache-from", f"type=local,src={dmax}")
    assert set(layer_steps(out).values()) == {"CACHED"}, out
    assert not ran(r, "RAN-.*")


def test_import_fetches_only_the_blobs_of_steps_that_hit(pybuild, busybox_root, other_busybox_root,
                                                         ctx, tmp_path):
    d = tmp_path / "cache"
    first = "FROM busybox\nRUN echo one > /one\nRUN head -c 300000 /dev/urandom > /big\n"
    build(pybuild, busybox_root, ctx, first, "--cache-to", f"type=local,dest={d}")
    manifest, _ = cache_doc(d)
    layer_blobs = [x["digest"][7:] for x in manifest["layers"]]
    assert len(layer_blobs) == 2
    assert not blobs(other_busybox_root) & set(layer_blobs)

    changed = "FROM busybox\nRUN echo one > /one\nRUN echo small > /small\n"
    _, out, _ = build(pybuild, other_busybox_root, ctx, changed, "--cache-from", f"type=local,src={d}")
    assert list(layer_steps(out).values()) == ["CACHED", "DONE"]
    assert blobs(other_busybox_root) & blobs(d) == {layer_blobs[0]}  # not the big one, no config


def test_a_corrupt_blob_is_a_warning_and_the_step_runs(pybuild, busybox_root, other_busybox_root,
                                                       ctx, tmp_path):
    d = tmp_path / "cache"
    image_a, _, _ = build(pybuild, busybox_root, ctx, SINGLE, "--cache-to", f"type=local,dest={d}")
    manifest, _ = cache_doc(d)
    bad = manifest["layers"][1]["digest"][7:]  # the first RUN's layer
    path = d / "blobs" / "sha256" / bad
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    image_b, out, r = build(pybuild, other_busybox_root, ctx, SINGLE, "--cache-from", f"type=local,src={d}")
    warnings = [x for x in r.stderr.splitlines() if "WARNING" in x]
    assert len(warnings) == 1, r.stderr
    assert f"sha256:{bad}: the blob's bytes hash to" in warnings[0], warnings
    assert "running the step" in warnings[0]
    steps = list(layer_steps(out).values())
    assert steps == ["CACHED", "DONE", "CACHED", "CACHED"], out  # only the bad step ran
    assert ran(r, "RAN-ONE") and not ran(r, "RAN-TWO")
    assert image_b == image_a
    assert bad not in blobs(other_busybox_root)
    assert list((other_busybox_root / "tmp").glob("cache-*")) == []


def test_an_unreadable_cache_is_a_warning(pybuild, busybox_root, ctx, tmp_path):
    _, out, r = build(pybuild, busybox_root, ctx, SINGLE, "--cache-from", f"type=local,src={tmp_path}/none")
    assert set(layer_steps(out).values()) == {"DONE"}
    warnings = [x for x in r.stderr.splitlines() if "WARNING" in x]
    assert len(warnings) == 1, r.stderr
    assert "is not an OCI image layout (no oci-layout file) (building without it)" in warnings[0]

    d = tmp_path / "cache"
    build(pybuild, busybox_root, ctx, SINGLE, "--cache-to", f"type=local,dest={d}")
    manifest, _ = cache_doc(d)
    (d / "blobs" / "sha256" / manifest["config"]["digest"][7:]).write_text("{}")
    _, out, r = build(pybuild, busybox_root, ctx, SINGLE, "--no-cache", "--cache-from", f"type=local,src={d}")
    assert set(layer_steps(out).values()) == {"DONE"}  # --no-cache: no cache source is asked
    assert "WARNING" not in r.stderr


BAD_FLAGS = [
    ("--cache-to", "type=gha", "type=gha is not supported (use type=registry or type=local)"),
    ("--cache-to", "type=local", "type=local needs dest=DIR"),
    ("--cache-to", "type=local,dest=/x,mode=full", "mode=full: expected min or max"),
    ("--cache-to", "type=local,dest=/x,mode", "'mode' is not KEY=VALUE"),
    ("--cache-to", "type=local,dest=/x,colour=red", "unknown key colour for type=local"),
    ("--cache-to", "type=registry", "type=registry needs ref=REF"),
    ("--cache-to", "type=registry,ref=Bad/Name:x", "invalid reference format"),
    ("--cache-to", "dest=/x", "no type"),
    ("--cache-to", "type=local,dest=/x,ignore-error=maybe", "ignore-error=maybe: expected true or false"),
    ("--cache-from", "type=local,dest=/x", "unknown key dest for type=local"),
    ("--cache-from", "type=local,src=/x,mode=max", "unknown key mode for type=local"),
    ("--cache-from", "", "expected type=registry,ref=REF or type=local,src=DIR"),
]


@pytest.mark.parametrize(("flag", "value", "message"), BAD_FLAGS)
def test_bad_flag_values_are_one_line(pybuild, busybox_root, ctx, flag, value, message):
    (ctx / "Dockerfile").write_text(SINGLE)
    r = pybuild("build", "--progress", "plain", flag, value, str(ctx))
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"pybuild: error: {flag} {value!r}: "), r.stderr
    assert message in r.stderr


def test_an_unwritable_dest_fails_the_build_in_one_line(pybuild, busybox_root, ctx, tmp_path):
    (tmp_path / "file").write_text("")
    _, _, r = build(pybuild, busybox_root, ctx, SINGLE, "--cache-to", f"type=local,dest={tmp_path}/file/d",
                    ok=False)
    assert r.returncode == 1
    last = r.stderr.splitlines()[-1]
    assert last == f"pybuild: error: --cache-to local:{tmp_path}/file/d: cannot create OCI " \
                   f"layout {tmp_path}/file/d: Not a directory", r.stderr
    # ignore-error=true: a warning, the image is built and named
    _, _, r = build(pybuild, busybox_root, ctx, SINGLE, "-t", "app",
                    "--cache-to", f"type=local,dest={tmp_path}/file/d,ignore-error=true")
    assert "WARNING: --cache-to" in r.stderr and "naming to docker.io/library/app done" in r.stderr


def test_registry_cache_makes_a_second_machine_build_all_cached(pybuild, busybox_root,
                                                               other_busybox_root, ctx, registry):
    """A CI fleet sharing one cache through a registry: machine A exports, machine B (an empty
    build cache, same base) gets every step CACHED, runs no RUN and makes the same image."""
    ref = f"{registry.host}/ci/app:buildcache"
    image_a, outcome_a, _ = build(pybuild, busybox_root, ctx, MULTI, "--cache-to",
                                  f"type=registry,ref={ref},mode=max")
    assert set(layer_steps(outcome_a).values()) == {"DONE"}
    raw = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    assert json.loads(raw)["artifactType"] == "application/vnd.pybuild.buildcache.v1"
    image_b, outcome_b, r = build(pybuild, other_busybox_root, ctx, MULTI, "--cache-from", ref)
    assert set(layer_steps(outcome_b).values()) == {"CACHED"}, outcome_b
    assert not ran(r, "RAN-BUILDER") and not ran(r, "RAN-FINAL")
    assert image_b == image_a
    # the short form names the same thing as type=registry,ref=
    image_c, outcome_c, _ = build(pybuild, other_busybox_root, ctx, MULTI, "--cache-from",
                                  f"type=registry,ref={ref}")
    assert image_c == image_a


def test_a_registry_cache_that_is_not_there_is_a_warning(pybuild, busybox_root, ctx, registry):
    image, outcome, r = build(pybuild, busybox_root, ctx, SINGLE, "--cache-from",
                              f"{registry.host}/ci/nothing:here")
    assert "WARNING" in r.stderr and "not found" in r.stderr
    assert set(layer_steps(outcome).values()) == {"DONE"}


def test_mode_min_holds_the_stages_the_final_image_is_from(pybuild, busybox_root, ctx, tmp_path):
    chain = ("FROM busybox AS base\nRUN echo base > /base\nFROM busybox AS side\nRUN echo side > /side\n"
             "FROM base\nCOPY --from=side /side /side\nRUN echo top > /top\n")
    d = tmp_path / "cache"
    build(pybuild, busybox_root, ctx, chain, "--cache-to", f"type=local,dest={d}",
          "--cache-to", f"type=local,dest={d},mode=max,tag=max")
    min_steps = cache_doc(d)[1]["pybuild.cache"]["steps"]
    max_steps = cache_doc(d, "max")[1]["pybuild.cache"]["steps"]
    assert len(min_steps) == 3 and len(max_steps) == 4 and set(min_steps) < set(max_steps)
    assert len(json.loads((d / "index.json").read_text())["manifests"]) == 2  # two tags, one dir
