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


def stop_signal(sig: str) -> str:
    """A STOPSIGNAL value (``SIGTERM``, ``term``, ``9``, ``SIGRTMIN+3``), returned as written."""
    if sig.isdigit():
        if not 1 <= int(sig) <= 64:
            raise ValueError(f"invalid signal: {sig}")
        return sig
    name = sig.upper().removeprefix("SIG")
    if name not in SIGNALS and not re.fullmatch(r"RTM(IN|AX)([+-]\d+)?", name):
        names = ["SIG" + s for s in sorted(SIGNALS)]
        raise ValueError(with_suggestion(f"invalid signal: {sig}", sig.upper(), names))
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


def healthcheck_duration(flag: str, value: str) -> int:
    """A HEALTHCHECK ``--interval`` etc. in nanoseconds (BuildKit's parseOptInterval: 0 is
    "inherit", anything else at least 1ms)."""
    try:
        ns = parse_duration(value)
    except ValueError as e:
        raise ValueError(f"{e} (--{flag}, e.g. 30s, 1m30s)") from None
    if ns < 0:
        raise ValueError(f"--{flag} cannot be negative ({value})")
    if 0 < ns < 1_000_000:
        raise ValueError(f'Interval "{flag}" cannot be less than 1ms')
    return ns


def healthcheck_retries(value: str) -> int:
    """``--retries``: a non-negative Go int32 (strconv.ParseInt wording)."""
    if not re.fullmatch(r"[+-]?\d+", value) or abs(int(value)) > 2**31 - 1:
        raise ValueError(f"strconv.ParseInt: parsing {go_quote(value)}: invalid syntax (--retries)")
    if int(value) < 0:
        raise ValueError(f"--retries cannot be negative ({int(value)})")
    return int(value)
