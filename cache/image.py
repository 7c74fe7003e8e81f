"""Image config, history and manifest documents, shaped as BuildKit writes them.

The image ID is the digest of the config bytes (as in Docker), so a build never waits on
compression: manifests, which name compressed blobs, are only made on save/push.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
HISTORY_COMMENT = "buildkit.dockerfile.v0"


@dataclass(frozen=True)
class Image:
    id: str                      # sha256 of the config bytes
    config: dict                 # the whole OCI/Docker image config
    diff_ids: tuple[str, ...] = field(default=())

    @property
    def container_config(self) -> dict:
        """The `config` member: Env, Cmd, Entrypoint, WorkingDir, User, ExposedPorts, ..."""
        return self.config.get("config") or {}


def rfc3339(epoch: float | None = None) -> str:
    """UTC, whole seconds, `Z` (what Go's time.RFC3339 marshals for a UTC time)."""
    t = time.time() if epoch is None else epoch
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(t)))


def source_date_epoch(default: int | None = None) -> int | None:
    import os
    v = os.environ.get("SOURCE_DATE_EPOCH")
    if v and v.strip().isdigit():
        return int(v)
    return default


def new_config(*, arch: str = "amd64", os_name: str = "linux", created: str | None = None,
               env: list[str] | None = None, cmd: list[str] | None = None) -> dict:
    """An empty image config for `FROM scratch`."""
    cfg: dict = {}
    if env:
        cfg["Env"] = list(env)
    if cmd:
        cfg["Cmd"] = list(cmd)
    return {"architecture": arch, "os": os_name, "config": cfg,
            "created": created or rfc3339(source_date_epoch(0)),
            "rootfs": {"type": "layers", "diff_ids": []}, "history": []}


def add_step(config: dict, created_by: str, *, diff_id: str | None, created: str | None = None,
             comment: str = HISTORY_COMMENT) -> dict:
    """A copy of `config` with one history entry (and layer, when `diff_id` is given); a step
    that makes no layer is recorded with `empty_layer: true`, as BuildKit does."""
    import copy
    cfg = copy.deepcopy(config)
    entry = {"created": created or rfc3339(source_date_epoch(0)), "created_by": created_by,
             "comment": comment}
    if diff_id is None:
        entry["empty_layer"] = True
    else:
        cfg.setdefault("rootfs", {"type": "layers", "diff_ids": []})["diff_ids"].append(diff_id)
    cfg.setdefault("history", []).append(entry)
    cfg["created"] = entry["created"]
    return cfg


def manifest(config_desc: dict, layer_descs: list[dict], *, oci: bool = True) -> dict:
    return {"schemaVersion": 2,
            "mediaType": MT_OCI_MANIFEST if oci else MT_DOCKER_MANIFEST,
            "config": config_desc, "layers": layer_descs}


def platform_of(config: dict) -> dict:
    p = {"architecture": config.get("architecture", "amd64"), "os": config.get("os", "linux")}
    if config.get("variant"):
        p["variant"] = config["variant"]
    return p
