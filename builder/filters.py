"""docker's --filter KEY=VALUE options (opts.FilterOpt, filters.Args), for ps, images and
the prunes: `parse` groups the values by key and refuses a key the command does not know with
docker's line; `labels_match` is the label=K / label=K=V test (every value must hold)."""
from __future__ import annotations


def parse(specs: list[str], allowed: tuple) -> dict[str, list[str]]:
    """docker's --filter KEY=VALUE flags, grouped by key; an unknown key is docker's error."""
    from builder.errors import BuildError

    out: dict[str, list[str]] = {}
    for spec in specs:
        key, eq, value = spec.partition("=")
        if not eq:
            raise BuildError(f"bad format of filter (expected name=value): {spec!r}")
        key = key.strip().lower()
        if key not in allowed:
            raise BuildError(f"invalid filter '{key}'")
        out.setdefault(key, []).append(value)
    return out


def labels_match(values: list[str], labels: dict) -> bool:
    """label=K (it is set) or label=K=V (set to V); every value must hold (docker: AND)."""
    for v in values:
        k, eq, want = v.partition("=")
        if k not in labels or (eq and labels[k] != want):
            return False
    return True
