"""Image config, history and manifest documents, shaped as BuildKit writes them.

The image ID is the digest of the config bytes (as in Docker), so a build never waits on
compression: manifests, which name compressed blobs, are only made on save/push.
"""
from __future__ import annotations

import time

from cache import platform as _platform

MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
HISTORY_COMMENT = "buildkit.dockerfile.v0"


class Image:
    """A stored image: `id` (sha256 of the config bytes), `config` (the whole OCI/Docker image
    config), `diff_ids`. A plain class: dataclasses (and inspect behind it) cost ~12 ms of
    every command that opens the store (`images`, `inspect`, `history`)."""

    __slots__ = ("id", "config", "diff_ids")

    def __init__(self, id: str, config: dict, diff_ids: tuple[str, ...] = ()):
        self.id, self.config, self.diff_ids = id, config, tuple(diff_ids)

    def __eq__(self, other) -> bool:
        return isinstance(other, Image) and (self.id, self.diff_ids) == (other.id, other.diff_ids) \
            and self.config == other.config

    def __repr__(self) -> str:
        return f"Image(id={self.id!r}, diff_ids={self.diff_ids!r})"

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


def new_config(*, platform: dict | None = None, created: str | None = None,
               env: list[str] | None = None, cmd: list[str] | None = None,
               workdir: str | None = None) -> dict:
    """An image config with no layers and no history (`FROM scratch`, an import, a fixture),
    for this machine's platform unless `platform` is given."""
    cfg: dict = {}
    if env:
        cfg["Env"] = list(env)
    if cmd:
        cfg["Cmd"] = list(cmd)
    if workdir:
        cfg["WorkingDir"] = workdir
    return {**_platform_fields(platform or _platform.host()), "config": cfg,
            "created": created or rfc3339(source_date_epoch(0)),
            "rootfs": {"type": "layers", "diff_ids": []}, "history": []}


def add_history(config: dict, created_by: str, *, empty_layer: bool, created: str,
                comment: str = HISTORY_COMMENT) -> None:
    """Append one history entry in place, as BuildKit writes it (`empty_layer: true` for a step
    that made no layer)."""
    entry = {"created": created, "created_by": created_by, "comment": comment}
    if empty_layer:
        entry["empty_layer"] = True
    config.setdefault("history", []).append(entry)


def add_layer(config: dict, diff_id: str) -> None:
    """Append a layer to rootfs.diff_ids in place."""
    rootfs = config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    rootfs["diff_ids"] = [*rootfs.get("diff_ids", []), diff_id]


def add_step(config: dict, created_by: str, *, diff_id: str | None, created: str | None = None,
             comment: str = HISTORY_COMMENT) -> dict:
    """A copy of `config` with one history entry (and layer, when `diff_id` is given), its
    `created` set to the entry's."""
    import copy
    cfg = copy.deepcopy(config)
    when = created or rfc3339(source_date_epoch(0))
    if diff_id is not None:
        add_layer(cfg, diff_id)
    add_history(cfg, created_by, empty_layer=diff_id is None, created=when, comment=comment)
    cfg["created"] = when
    return cfg


def manifest(config_desc: dict, layer_descs: list[dict], *, oci: bool = True) -> dict:
    return {"schemaVersion": 2,
            "mediaType": MT_OCI_MANIFEST if oci else MT_DOCKER_MANIFEST,
            "config": config_desc, "layers": layer_descs}


def _platform_fields(p: dict) -> dict:
    out = {"architecture": p["architecture"], "os": p.get("os") or "linux"}
    if p.get("variant"):
        out["variant"] = p["variant"]
    return out


def _host_platform(config: dict) -> dict:
    """This machine's architecture and variant, with the config's os."""
    return _platform_fields({**_platform.host(), "os": config.get("os") or "linux"})


def ensure_platform(config: dict) -> None:
    """Give a config that names no architecture this machine's platform (architecture and
    variant, as `new_config` does), in place; one that names one keeps it."""
    if not config.get("architecture"):
        config.pop("variant", None)
        config.update(_host_platform(config))
    config.setdefault("os", "linux")


def platform_of(config: dict) -> dict:
    """The platform an image config is for, normalised as containerd does (`cache.platform`);
    a config naming no architecture is for this machine (what `ensure_platform` gives it)."""
    if not config.get("architecture"):
        return _host_platform(config)
    arch, variant = _platform.normalize(config["architecture"], config.get("variant") or "")
    return _platform_fields({"architecture": arch, "variant": variant, "os": config.get("os")})
