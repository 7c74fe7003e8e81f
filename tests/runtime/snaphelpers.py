"""What a layer made of an upper dir would say, path by path (for the snapshotter tests)."""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from cache.overlayfmt import is_opaque, is_whiteout


def listing(upper: Path) -> dict[str, str]:
    """rel path -> what a layer of it says: whiteout, opaque dir, dir, file:<sha>, link:<target>..."""
    out = {}
    for root, dirs, files in os.walk(upper):
        for n in dirs + files:
            p = Path(root) / n
            rel = str(p.relative_to(upper))
            st = os.lstat(p)
            if is_whiteout(st):
                out[rel] = "whiteout"
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = "opaque" if is_opaque(p) else "dir"
            elif stat.S_ISLNK(st.st_mode):
                out[rel] = "link:" + os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                out[rel] = "file:" + hashlib.sha256(p.read_bytes()).hexdigest()[:12]
            else:
                out[rel] = stat.filemode(st.st_mode)[0]
    return out
