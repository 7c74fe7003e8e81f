"""A path's stat identity: what the context's stat memo (builder.context) and the replay record
(builder.replay) compare to know that a path is as it was, one tuple for both, so a walked
entry's identity is made once and the record holds the memo's own tuple. An edit moves the
mtime, a touch the times only, a chmod, chown or xattr change the ctime; a replaced file its
inode. Imports nothing (the replay's path)."""
from __future__ import annotations

# field order, for the readers that look at one field: (dev, ino, size, mode, uid, gid,
# mtime_ns, ctime_ns); a record entry may add the file's "sha256hex:capability" at CONTENT
DEV, INO, SIZE, MODE, UID, GID, MTIME, CTIME, CONTENT = range(9)


def content(hexd: str, cap: str, xattrs: str) -> str:
    """A regular file's content as the replay record holds it and a touch is checked against:
    "sha256hex:capability", with "\0" and the other layer xattrs when it has any (the stat
    memo's entry holds the three parts)."""
    return f"{hexd}:{cap}\0{xattrs}" if xattrs else f"{hexd}:{cap}"


def identity(st) -> tuple:
    """(st_dev, st_ino, st_size, st_mode, st_uid, st_gid, st_mtime_ns, st_ctime_ns)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mode, st.st_uid, st.st_gid,
            st.st_mtime_ns, st.st_ctime_ns)
