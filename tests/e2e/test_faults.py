"""Faults a user meets, generated (tests/fault_harness.py), sized for the suite: builds killed
with SIGKILL, builds racing rmi and prune, malformed archives for `load`. Each failure line
names the seed and case that reproduce it. The large run: `python bench/faults.py`."""
from __future__ import annotations

import pytest
from busybox_fixture import copy_store
from fault_harness import archives, crash_context, kills, races, unmount_under


@pytest.fixture
def cleanup(tmp_path, busybox_root):
    """Whatever a killed build left mounted, unmount it so the test's dirs can be removed."""
    yield tmp_path
    unmount_under(busybox_root)
    unmount_under(tmp_path)


def test_killed_builds_leave_a_consistent_store(busybox_root, busybox_store, cleanup):
    """Three builds killed (the first the moment a COPY's overlay is mounted): every tag still
    resolves, images/inspect/save work, a rebuild gives the uninterrupted build's image ID, and
    `prune` leaves no scratch dir and no mount under the store root."""
    reference = copy_store(busybox_store.root, cleanup / "reference")
    ctx = crash_context(cleanup / "ctx", files=500)
    failures = kills(busybox_root, reference, ctx, 3, seed=0, log=print)
    assert not failures, "\n".join(failures)


def test_builds_racing_rmi_and_prune_leave_usable_tags(busybox_root, cleanup):
    """Two build loops race tag/rmi, prune and prune -a: each build that exits 0 leaves a tag
    that inspect and save can use."""
    failures = races(busybox_root, cleanup / "ctx", 3, seed=0, log=print)
    assert not failures, "\n".join(failures)


def test_malformed_archives_fail_cleanly(busybox_root, cleanup):
    """Generated mutations of valid docker and OCI archives: `load` exits 0, or 1 with one
    `pybuild: error:` line and no traceback, the store unchanged, nothing left in tmp/."""
    failures = archives(busybox_root, cleanup / "arch", 12, seed=0)
    assert not failures, f"{len(failures)} of 12 cases:\n" + "\n".join(failures)
