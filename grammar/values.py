"""Parsers of single instruction values that validation and the builder must agree on.

``grammar.checks`` runs them on literal values before the build (a word with ``$`` waits);
the builder runs the same function on the expanded value. Each raises ``ValueError`` whose
text is the user's message; the caller adds the file and line.
"""

from __future__ import annotations

import re

from .errors import with_suggestion
from .goduration import parse_duration
from .goquote import go_quote

SIGNALS = frozenset(
    ["ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL", "PIPE",
     "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP", "TTIN", "TTOU",
     "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ"])
_PORT = re.compile(r"^(\d+)(?:-(\d+))?(?:/([A-Za-z]+))?\Z")
HEALTHCHECK_DURATIONS = {"interval": "Interval", "timeout": "Timeout", "start-period": "StartPeriod",
                         "start-interval": "StartInterval"}


def _rt_names() -> dict[str, int]:
    """moby/sys/signal's real-time names on Linux: RTMIN (34), RTMIN+1..+15, RTMAX-14..-1, RTMAX (64)."""
    out = {"RTMIN": 34, "RTMAX": 64}
    out.update({f"RTMIN+{i}": 34 + i for i in range(1, 16)})
    out.update({f"RTMAX-{i}": 64 - i for i in range(1, 15)})
    return out


def parse_signal(sig: str) -> int:
    """A signal as docker's signal.ParseSignal reads it (``SIGTERM``, ``term``, ``9``,
    ``SIGRTMIN+3``), as its number; ``ValueError("Invalid signal: X")`` (docker's line) else.
    The one parser of run --stop-signal, stop/restart -s, kill -s and STOPSIGNAL."""
    import signal

    text = str(sig)
    if text.isdigit():
        if not 1 <= int(text) <= 64:
            raise ValueError(f"Invalid signal: {text}")
        return int(text)
    name = text.upper().removeprefix("SIG")
    if name in SIGNALS:
        return int(getattr(signal, "SIG" + name))
    rt = _rt_names().get(name)
    if rt is None:
        raise ValueError(f"Invalid signal: {text}")
    return rt


def stop_signal(sig: str) -> str:
    """A STOPSIGNAL value checked by ``parse_signal``, returned as written (BuildKit keeps the
    text); the Dockerfile's message suggests the nearest name."""
    try:
        parse_signal(sig)
    except ValueError:
        if sig.isdigit():
            raise ValueError(f"invalid signal: {sig}") from None
        names = ["SIG" + s for s in sorted(SIGNALS)]
        raise ValueError(with_suggestion(f"invalid signal: {sig}", sig.upper(), names)) from None
    return sig


def expose_ports(word: str) -> list[str]:
    """One EXPOSE word (``80``, ``53/UDP``, ``8000-8010/tcp``) as config keys ``80/tcp``..."""
    m = _PORT.match(word)
    ok = m is not None and 0 < int(m.group(1)) <= 65535
    if ok and m.group(2) is not None:
        ok = int(m.group(1)) <= int(m.group(2)) <= 65535
    if ok and m.group(3) is not None:
        ok = m.group(3).lower() in ("tcp", "udp", "sctp")
    if not ok:
        raise ValueError(f"invalid port {go_quote(word)} in EXPOSE: use PORT[/PROTO] or START-END[/PROTO] "
                         "with PROTO tcp, udp or sctp")
    lo, hi, proto = int(m.group(1)), int(m.group(2) or m.group(1)), (m.group(3) or "tcp").lower()
    return [f"{p}/{proto}" for p in range(lo, hi + 1)]


def healthcheck_duration(flag: str, value: str, *, cli: bool = False) -> int:
    """A health-check ``interval``/``timeout``/``start-period``/``start-interval`` in nanoseconds:
    0 is "inherit", anything else at least 1ms. The Dockerfile's HEALTHCHECK words BuildKit's
    parseOptInterval errors; ``cli`` words docker run's ``--health-*`` flag errors instead."""
    try:
        ns = parse_duration(value)
    except ValueError as e:
        if cli:
            raise ValueError(f'invalid argument "{value}" for "--health-{flag}" flag: {e}') from None
        raise ValueError(f"{e} (--{flag}, e.g. 30s, 1m30s)") from None
    if ns < 0:
        raise ValueError(f"--health-{flag} cannot be negative" if cli
                         else f"--{flag} cannot be negative ({value})")
    if 0 < ns < 1_000_000:
        raise ValueError(f"{HEALTHCHECK_DURATIONS[flag]} in Healthcheck cannot be less than 1ms" if cli
                         else f'Interval "{flag}" cannot be less than 1ms')
    return ns


def healthcheck_retries(value: str) -> int:
    """``--retries``: a non-negative Go int32 (strconv.ParseInt wording)."""
    if not re.fullmatch(r"[+-]?\d+", value) or abs(int(value)) > 2**31 - 1:
        raise ValueError(f"strconv.ParseInt: parsing {go_quote(value)}: invalid syntax (--retries)")
    if int(value) < 0:
        raise ValueError(f"--retries cannot be negative ({int(value)})")
    return int(value)
