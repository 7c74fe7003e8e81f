"""The store's small JSON indexes (tags, images, layers, build cache): read whole, written
whole through `cache.atomic`, read-modify-written only under the store lock."""
from __future__ import annotations

import contextlib
from pathlib import Path

from cache import atomic, layout
from cache.errors import StoreError


class Indexes:
    def __init__(self, root: Path, lock: atomic.Lock, tmp: Path):
        self.root, self.lock, self.tmp = Path(root), lock, Path(tmp)

    def read(self, name: str) -> dict:
        try:
            return layout.read_index(str(self.root), name)
        except ValueError as e:
            raise StoreError(f"{self.root / name}: corrupt store index ({e})") from None

    def write(self, name: str, value) -> None:
        atomic.write_json(self.root / name, value, tmp_dir=self.tmp)

    @contextlib.contextmanager
    def update(self, name: str):
        """Read-modify-write of one index under the lock."""
        with self.lock.held():
            value = self.read(name)
            yield value
            self.write(name, value)
