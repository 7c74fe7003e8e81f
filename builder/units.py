"""Sizes as docker prints them (go-units CustomSize): one formatter for images, ps, df, stats
and the prune reports, so their columns cannot drift apart."""

from __future__ import annotations

_DECIMAL = ("B", "kB", "MB", "GB", "TB", "PB", "EB")
_BINARY = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def _custom_size(n: float, base: float, units: tuple, precision: int) -> str:
    i = 0
    while n >= base and i < len(units) - 1:
        n /= base
        i += 1
    return f"{n:.{precision}g}{units[i]}"


def human_size(n: float, precision: int = 3) -> str:
    """go-units HumanSizeWithPrecision: decimal units; 3 digits (`4.26MB`) as images/ps/stats
    show sizes, 4 (HumanSize, `12.35kB`) as the prune reports do."""
    return _custom_size(n, 1000.0, _DECIMAL, precision)


def bytes_size(n: float) -> str:
    """go-units BytesSize: binary units, 4 significant digits (`1.5MiB`), stats' memory."""
    return _custom_size(n, 1024.0, _BINARY, 4)
