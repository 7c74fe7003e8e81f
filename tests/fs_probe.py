"""What the filesystem under the tests' temp dirs can do, probed once at collection, so a test
that needs it is skipped with a reason (skipif) and a failure where it should work is a failure."""
from __future__ import annotations

import os
import tempfile


def xattrs_supported(*names: str) -> bool:
    """Can a dir under the temp dir (where pytest's tmp_path lives) carry these xattrs?"""
    d = tempfile.mkdtemp(prefix="pybuild-xattr-probe-")
    try:
        for name in names:
            os.setxattr(d, name, b"y")
        return True
    except OSError:
        return False
    finally:
        os.rmdir(d)


XATTR_REASON = "the temp dir's filesystem refuses user./trusted. xattrs: set TMPDIR to an ext4 or xfs dir"
