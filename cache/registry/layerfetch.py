"""One layer blob from a registry or an OCI layout dir into the store's tmp/, checked: its bytes
against the descriptor's digest and size while they stream (the source's fetch_blob), then its
tar against the config's diff_id. Pull and build-cache import both take layers this way; the
caller moves the file in (`store.add_blob_file`) once everything it fetches checked out."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cache.compress import layer_digest
from cache.errors import StoreError
from cache.registry.errors import DigestMismatch


@dataclass
class Staged:
    tmp: Path          # the verified blob, in the store's tmp/ (the caller removes it)
    compression: str   # gzip | zstd | none, as sniffed
    tar_size: int


def stage(store, source, desc: dict, diff_id: str, *, progress=None) -> Staged:
    """Fetch `desc`'s blob from `source`; a mismatch leaves nothing behind."""
    digest, size = desc["digest"], desc.get("size")
    out, tmp = store.tmp_file("layer")
    try:
        with out:
            source.fetch_blob(digest, out, size=size, progress=progress)
        return Staged(tmp, *check(tmp, diff_id, f"{source.name}: layer {digest}"))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check(path, diff_id: str, where: str) -> tuple[str, int]:
    """(compression, tar size) of a blob file whose tar must hash to `diff_id`."""
    try:
        kind, got, tar_size = layer_digest(path)
    except StoreError as e:
        raise DigestMismatch(f"{where}: {e}") from None
    if got != diff_id:
        raise DigestMismatch(f"{where} does not match the config's diff_id {diff_id} (its tar "
                             f"hashes to {got}); nothing was stored")
    return kind, tar_size
