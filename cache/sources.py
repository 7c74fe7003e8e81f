"""Where blobs live in registries, sources.json: {blob digest: ["host/repo", ...]}, the role of
containerd's distribution-source labels. A push asks for a cross-repository mount from a repo of
the same registry known to hold the blob instead of uploading it again."""
from __future__ import annotations

from cache import layout
from cache.indexes import Indexes

_KEEP = 8  # repos remembered per blob, newest last


class Sources:
    def __init__(self, indexes: Indexes):
        self.ix = indexes

    def of(self, digest: str) -> list[str]:
        return list(self.ix.read(layout.SOURCES).get(digest) or ())

    def add(self, digests, repo: str) -> None:
        """`repo` (full name, `host/path`) holds each of `digests`."""
        digests = list(digests)
        if not digests:
            return
        with self.ix.update(layout.SOURCES) as idx:
            for d in digests:
                have = [r for r in idx.get(d) or () if r != repo]
                idx[d] = [*have, repo][-_KEEP:]

    def forget(self, keep) -> int:
        """Drop entries of blobs not in `keep` (for gc); returns how many went."""
        with self.ix.lock.held():
            idx = self.ix.read(layout.SOURCES)
            gone = [d for d in idx if d not in keep]
            for d in gone:
                del idx[d]
            if gone:
                self.ix.write(layout.SOURCES, idx)
        return len(gone)
