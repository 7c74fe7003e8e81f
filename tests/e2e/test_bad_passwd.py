"""An image whose /etc/passwd is a fifo or a link to /dev/zero: resolving a user name in it
(`pybuild run -u app`, `USER app` + RUN) is one clear error line, quickly, not a hang or a read
that fills memory (runtime.users.read_table is the one bounded reader, --chown uses it too)."""
from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="builds mount overlays: run as root")

BAD = {"fifo": "rm /etc/passwd && mkfifo /etc/passwd",
       "zero": "ln -sf /dev/zero /etc/passwd"}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_user_lookup_in_a_bad_passwd_is_one_error_line(kind, busybox_root, tmp_path, pybuild):
    base = tmp_path / "base"
    base.mkdir()
    (base / "Dockerfile").write_text(f"FROM busybox\nRUN {BAD[kind]}\n")
    r = pybuild("build", "-q", "-t", "bad", str(base))
    assert r.returncode == 0, r.stderr

    r = pybuild("run", "--rm", "-u", "app", "bad", "true", timeout=30)
    assert r.returncode == 125
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pybuild: error: "), r.stderr
    assert "/etc/passwd" in lines[0] and "Traceback" not in r.stderr

    step = tmp_path / "step"
    step.mkdir()
    (step / "Dockerfile").write_text("FROM bad\nUSER app\nRUN true\n")
    r = pybuild("build", "--progress", "plain", str(step), timeout=30)
    assert r.returncode == 1
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("pybuild: error: ")]
    assert len(errors) == 1 and "/etc/passwd" in errors[0], r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
