"""Locate BuildKit's own tables (shared/conformance); tests using them skip if none is found.

Looked for in `$PYBUILD_CONFORMANCE`, then `../shared/conformance` next to the repo, then the
team machines' `/work/shared/conformance` (CI tests a clean clone made elsewhere)."""

import os
from pathlib import Path

import pytest

_CANDIDATES = [Path(p) for p in (os.environ.get("PYBUILD_CONFORMANCE"),) if p] + [
    Path(__file__).resolve().parents[2].parent / "shared" / "conformance",
    Path("/work/shared/conformance"),
]
CONFORMANCE = next((p for p in _CANDIDATES if p.is_dir()), _CANDIDATES[0])
SHARED = CONFORMANCE.parent

needs_conformance = pytest.mark.skipif(
    not CONFORMANCE.is_dir(),
    reason=f"conformance data not found (looked in {', '.join(map(str, _CANDIDATES))}): check out "
           "the shared/ folder next to the repo or set PYBUILD_CONFORMANCE=DIR",
)
