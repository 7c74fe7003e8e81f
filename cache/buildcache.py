"""The build-cache index, cachekeys.json: {step key: value dict}. Its schema is the builder's;
gc counts any `sha256:` string inside a value as a reference."""
from __future__ import annotations

import json

from cache import layout
from cache.indexes import Indexes


class BuildCache:
    def __init__(self, indexes: Indexes):
        self.ix = indexes

    def get(self, key: str) -> dict | None:
        return self.ix.read(layout.CACHEKEYS).get(key)

    def put(self, key: str, value: dict) -> None:
        json.dumps(value)  # fail here, not half-way through the index write
        with self.ix.update(layout.CACHEKEYS) as idx:
            idx[key] = value

    def entries(self) -> dict[str, dict]:
        return self.ix.read(layout.CACHEKEYS)

    def clear(self) -> int:
        """Drop every entry; returns how many there were."""
        with self.ix.lock.held():
            n = len(self.entries())
            if n:
                self.ix.write(layout.CACHEKEYS, {})
        return n
