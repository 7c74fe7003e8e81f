"""The explain record (issue 14: marshal, not JSON) reads back as the JSON record did: a step's
inputs come back with JSON's types (lists, string keys), which is what a later build compares
its own json round-tripped inputs with (builder.steps.copy's sharing, the miss reasons), and a
file listing of 10,000 entries comes back whole."""
from __future__ import annotations

import json

from builder.explain import Explainer


def test_inputs_read_back_with_jsons_types_and_the_listing_whole(tmp_path):
    (tmp_path / "tmp").mkdir()
    listing = {f"d{i // 100:03d}/f{i % 100:02d}.txt": f"100000 644 0:0 - {i:016x}"
               for i in range(10_000)}
    inputs = {"sources": ("a", "b"), "chown": None, "flags": {1: ("x",)}, "n": 3}
    ex = Explainer(tmp_path, "/ctx/Dockerfile", ["app"], None)
    ex.base("0", "busybox", "sha256:" + "1" * 64)
    ex.config_step("0", 2, "ENV A=1", "k1")
    ex.layer_step("0", "[2/3] COPY . /app", 3, "COPY . /app", "k2", "k1", inputs, listing, ["*.log"])
    ex.save()
    again = Explainer(tmp_path, "/ctx/Dockerfile", ["app"], None)
    prev = again.previous()
    steps = prev["stages"]["0"]["steps"]
    assert steps[0] == {"config": True, "line": 2, "text": "ENV A=1", "key": "k1"}
    assert steps[1]["inputs"] == json.loads(json.dumps(inputs)) == {
        "sources": ["a", "b"], "chown": None, "flags": {"1": ["x"]}, "n": 3}
    assert steps[1]["files"] == listing and steps[1]["ignore"] == ["*.log"]
    assert prev["stages"]["0"]["base"] == "busybox"
    assert ex.stages["0"]["steps"][1]["inputs"] is inputs   # this build's own notes untouched
