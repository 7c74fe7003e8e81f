"""Go's ``time.ParseDuration`` and ``Duration.String``, exactly: HEALTHCHECK flags are Go durations.

Validation (``grammar.checks``) and the builder (the HEALTHCHECK config and its history line)
both use these, so a value one accepts the other accepts too (``.5s``, ``1h30m``, ``1µs``).
"""

from __future__ import annotations

from .goquote import go_quote

_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9,
          "h": 3600 * 10**9}
_MAX = (1 << 63) - 1


class DurationError(ValueError):
    """A malformed duration; ``str()`` is Go's message (``time: invalid duration "x"``)."""


def parse_duration(text: str) -> int:
    """Nanoseconds of a Go duration string: ``[-+]`` then one or more ``<decimal><unit>``."""
    orig, s = text, text
    neg = False
    if s[:1] in ("-", "+"):
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise DurationError(f"time: invalid duration {go_quote(orig)}")
    total = 0
    i, n = 0, len(s)
    while i < n:
        if not (s[i] == "." or "0" <= s[i] <= "9"):
            raise DurationError(f"time: invalid duration {go_quote(orig)}")
        j = i
        while j < n and "0" <= s[j] <= "9":
            j += 1
        whole, pre = s[i:j], j > i
        frac = ""
        if j < n and s[j] == ".":
            k = j + 1
            while k < n and "0" <= s[k] <= "9":
                k += 1
            frac = s[j + 1:k]
            j = k
        if not pre and not frac:  # "." alone, ".s"
            raise DurationError(f"time: invalid duration {go_quote(orig)}")
        k = j
        while k < n and s[k] != "." and not ("0" <= s[k] <= "9"):
            k += 1
        unit = s[j:k]
        if not unit:
            raise DurationError(f"time: missing unit in duration {go_quote(orig)}")
        if unit not in _UNITS:
            raise DurationError(f"time: unknown unit {go_quote(unit)} in duration {go_quote(orig)}")
        scale = _UNITS[unit]
        v = int(whole or "0") * scale
        if frac:
            v += _fraction(frac, scale)
        total += v
        if total > _MAX + (1 if neg else 0):
            raise DurationError(f"time: invalid duration {go_quote(orig)}")
        i = k
    return -total if neg else total


def _fraction(digits: str, unit: int) -> int:
    """Go's leadingFraction and its float64 scaling (digits past int64 range are dropped)."""
    x, scale = 0, 1.0
    for c in digits:
        if x > _MAX // 10:
            break
        y = x * 10 + int(c)
        if y > 1 << 63:
            break
        x, scale = y, scale * 10
    return int(float(x) * (float(unit) / scale))


def _frac(v: int, prec: int) -> tuple[str, int]:
    digits = []
    printed = False
    for _ in range(prec):
        d = v % 10
        printed = printed or d != 0
        if printed:
            digits.append(str(d))
        v //= 10
    text = "." + "".join(reversed(digits)) if printed else ""
    return text, v


def format_duration(ns: int) -> str:
    """Go's ``Duration.String``: ``1h30m0s``, ``1.5s``, ``300ms``, ``1µs``, ``0s``."""
    if ns == 0:
        return "0s"
    u = abs(ns)
    sign = "-" if ns < 0 else ""
    if u < 10**9:
        prec, unit = (0, "ns") if u < 1_000 else (3, "µs") if u < 1_000_000 else (6, "ms")
        frac, whole = _frac(u, prec)
        return f"{sign}{whole}{frac}{unit}"
    frac, secs = _frac(u, 9)
    out = f"{secs % 60}{frac}s"
    mins = secs // 60
    if mins:
        out = f"{mins % 60}m" + out
        hours = mins // 60
        if hours:
            out = f"{hours}h" + out
    return sign + out
