"""A fully cached rebuild should not pay for lark: parsed and validated Dockerfiles are kept.

The key is the Dockerfile's bytes and name, the build args (validation expands meta ARGs in
FROM) and the identity of pybuild's code (builder.codeid, as replay records), so editing
pybuild or the Dockerfile misses. The cache is a pickle, so it lives only in the user's own
private dir (0700, owned by them), never in a shared /tmp.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

from builder import codeid
from cache import atomic


def cache_dir() -> Path | None:
    """`$XDG_CACHE_HOME/pybuild` (default ~/.cache/pybuild), or None when it is not ours."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    d = Path(base) / "pybuild"
    try:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = d.stat()
    except OSError:
        return None
    if st.st_uid != os.getuid() or st.st_mode & 0o022 or not os.access(d, os.W_OK):
        return None
    return d


def _key(text: str, filename: str, build_args: dict[str, str]) -> str:
    h = hashlib.sha256(repr(codeid.identity()).encode())
    h.update(json.dumps([filename, sorted(build_args.items())]).encode())
    h.update(text.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def parse_and_validate(text: str, filename: str, build_args: dict[str, str]):
    """`grammar.parse` + `grammar.validate`, answered from the cache when nothing changed."""
    d = cache_dir()
    try:
        path = d / f"df-{_key(text, filename, build_args)}.pickle" if d else None
    except OSError:  # pybuild's own files cannot be listed: no cache, the parse still works
        path = None
    if path is not None:
        try:
            with open(path, "rb") as f:
                return pickle.load(f)
        except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError):
            pass
    import grammar
    import grammar.parser

    grammar.parser.CACHE_DIR = str(d) if d else None
    df = grammar.parse(text, filename=filename)
    grammar.validate(df, build_args)
    if path is not None:
        try:
            atomic.write_file(path, pickle.dumps(df, protocol=pickle.HIGHEST_PROTOCOL), mode=0o600)
        except OSError:
            pass
    return df
