"""The image config a build produces: OCI config JSON as BuildKit writes it.

BuildKit writes Docker's extension fields (Healthcheck, OnBuild, Shell, ArgsEscaped) inside
the OCI config, one history entry per instruction except FROM and ONBUILD (config-only steps
have `empty_layer: true`), and with SOURCE_DATE_EPOCH every `created` is that time.
"""
from __future__ import annotations

import copy

from cache import image as im
from runtime.spec import DEFAULT_PATH


def scratch_config() -> dict:
    """The config of `FROM scratch` (BuildKit: WorkingDir / and the default PATH)."""
    cfg = im.new_config(env=[f"PATH={DEFAULT_PATH}"], workdir="/")
    del cfg["created"]  # set by finalize
    return cfg


def inherit(base: dict) -> dict:
    """A stage's starting config: a deep copy of its base with PATH ensured, OnBuild kept."""
    cfg = copy.deepcopy(base)
    cfg.setdefault("config", {})
    cfg.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    cfg.setdefault("history", [])
    im.ensure_platform(cfg)
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
    im.add_history(cfg, created_by, empty_layer=empty_layer, created=im.rfc3339(epoch))


def finalize(cfg: dict, epoch: int, labels: dict[str, str]) -> dict:
    """The config that is stored: `--label` values applied last, `created` set."""
    out = copy.deepcopy(cfg)
    if labels:
        out["config"]["Labels"] = {**(out["config"].get("Labels") or {}), **labels}
    out["created"] = im.rfc3339(epoch)
    return out


def go_list(items) -> str:
    """Go's `%q` of a []string: `["a" "b"]` (used in history `created_by`)."""
    from grammar.goquote import go_quote_list

    return go_quote_list(items)
