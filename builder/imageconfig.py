"""The image config a build produces: OCI config JSON as BuildKit writes it.

BuildKit writes Docker's extension fields (Healthcheck, OnBuild, Shell, ArgsEscaped) inside
the OCI config, one history entry per instruction except FROM and ONBUILD (config-only steps
have `empty_layer: true`), and with SOURCE_DATE_EPOCH every `created` is that time.
"""
from __future__ import annotations

import copy
import datetime as _dt

from builder.plan import DEFAULT_PATH, host_arch

HISTORY_COMMENT = "buildkit.dockerfile.v0"


def timestamp(epoch: int) -> str:
    """RFC 3339 UTC, as Go's time.Time marshals a whole second."""
    return _dt.datetime.fromtimestamp(epoch, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def scratch_config() -> dict:
    """The config of `FROM scratch` (BuildKit: WorkingDir / and the default PATH)."""
    return {
        "architecture": host_arch(),
        "os": "linux",
        "config": {"Env": [f"PATH={DEFAULT_PATH}"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [],
    }


def inherit(base: dict) -> dict:
    """A stage's starting config: a deep copy of its base with PATH ensured, OnBuild kept."""
    cfg = copy.deepcopy(base)
    cfg.setdefault("config", {})
    cfg.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    cfg.setdefault("history", [])
    cfg.setdefault("architecture", host_arch())
    cfg.setdefault("os", "linux")
    env = cfg["config"].get("Env") or []
    if not any(e.startswith("PATH=") for e in env):
        cfg["config"]["Env"] = [f"PATH={DEFAULT_PATH}", *env]
    return cfg


def env_dict(cfg: dict) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in cfg.get("config", {}).get("Env") or []:
        k, _, v = item.partition("=")
        out[k] = v
    return out


def set_env(cfg: dict, key: str, value: str) -> None:
    """Replace in place or append, keeping Docker's order."""
    env = list(cfg["config"].get("Env") or [])
    for i, item in enumerate(env):
        if item.partition("=")[0] == key:
            env[i] = f"{key}={value}"
            break
    else:
        env.append(f"{key}={value}")
    cfg["config"]["Env"] = env


def add_history(cfg: dict, created_by: str, *, empty_layer: bool, epoch: int) -> None:
    entry = {"created": timestamp(epoch), "created_by": created_by, "comment": HISTORY_COMMENT}
    if empty_layer:
        entry["empty_layer"] = True
    cfg.setdefault("history", []).append(entry)


def add_layer(cfg: dict, diff_id: str) -> None:
    cfg["rootfs"]["diff_ids"] = [*cfg["rootfs"].get("diff_ids", []), diff_id]


def finalize(cfg: dict, epoch: int, labels: dict[str, str]) -> dict:
    """The config that is stored: `--label` values applied last, `created` set."""
    out = copy.deepcopy(cfg)
    if labels:
        out["config"]["Labels"] = {**(out["config"].get("Labels") or {}), **labels}
    out["created"] = timestamp(epoch)
    return out


def go_list(items) -> str:
    """Go's `%q` of a []string: `["a" "b"]` (used in history `created_by`)."""
    from grammar.goquote import go_quote_list

    return go_quote_list(items)
