"""Locate ../shared/conformance (BuildKit's own tables); tests using it skip if it is absent."""

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
CONFORMANCE = SHARED / "conformance"

needs_conformance = pytest.mark.skipif(
    not CONFORMANCE.is_dir(),
    reason=f"conformance data not found at {CONFORMANCE} (checkout the shared/ folder next to the repo)",
)
