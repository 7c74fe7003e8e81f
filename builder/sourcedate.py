"""The build's epoch (SOURCE_DATE_EPOCH): `--timestamp`, else the `SOURCE_DATE_EPOCH` build
arg, else the environment's, else the commit time of HEAD when the context is in a git work
tree (reproducible-builds.org's recommendation), else 0. `--timestamp now` gives None: wall-clock
`created`, real file times, no variable in RUN.

The git time is read from the repository's files, never by running git, because a replayed
(fully cached) build asks for it too and may load only os and zlib: `.git` found upwards from
the context (a dir, or a worktree's `.git` file with `gitdir:` and its `commondir`), HEAD and its
ref (loose, then `packed-refs`), then the commit object, loose (zlib) or in a pack (its `.idx`
searched, the object inflated). Only a commit stored in a pack as a delta is handed to `git log
-1 --format=%ct` (`Epoch.how` says so).
"""
from __future__ import annotations

import os
import zlib


class Epoch:
    """The epoch (None: `--timestamp now`) and where it came from, said in a few words."""

    def __init__(self, value: int | None, how: str):
        self.value = value
        self.how = how

    def __repr__(self) -> str:
        return f"Epoch({self.value!r}, {self.how!r})"


def _whole(text: str, what: str) -> int:
    t = text.strip()
    if not t.isdigit():
        raise ValueError(f"{what}={text!r}: expected whole seconds since 1970 (or --timestamp now)")
    return int(t)


def resolve(context: str, build_args: dict, environ, timestamp: str | None = None, *,
            git: bool = True) -> Epoch:
    """The epoch of a build of `context`; ValueError (one line, the user's) for a bad value.
    `git=False` for a context pybuild made from a tar, URL or repository: its `.git` (and any
    above the store) is not the user's to trust or date the build by."""
    if timestamp is not None:
        if timestamp == "now":
            return Epoch(None, "--timestamp now")
        return Epoch(_whole(timestamp, "--timestamp"), "--timestamp")
    v = build_args.get("SOURCE_DATE_EPOCH")
    if v:
        return Epoch(_whole(v, "SOURCE_DATE_EPOCH"), "--build-arg SOURCE_DATE_EPOCH")
    v = environ.get("SOURCE_DATE_EPOCH")
    if v:
        return Epoch(_whole(v, "SOURCE_DATE_EPOCH"), "SOURCE_DATE_EPOCH in the environment")
    got = git_head_time(context) if git else None
    if got is not None:
        return Epoch(got[0], got[1])
    return Epoch(0, "default")


# -- git --------------------------------------------------------------------------------------
def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def find_git_dir(start: str) -> tuple[str, str] | None:
    """(git dir, common dir) of the work tree `start` is in, as git discovers it upwards."""
    d = os.path.realpath(start)
    while True:
        dot = os.path.join(d, ".git")
        if os.path.isdir(dot):
            gitdir = dot
        elif os.path.isfile(dot):
            text = (_read(dot) or b"").decode("utf-8", "replace").strip()
            if not text.startswith("gitdir:"):
                return None
            gitdir = os.path.normpath(os.path.join(d, text[7:].strip()))
        else:
            up = os.path.dirname(d)
            if up == d:
                return None
            d = up
            continue
        common = (_read(os.path.join(gitdir, "commondir")) or b"").decode("utf-8", "replace").strip()
        return gitdir, os.path.normpath(os.path.join(gitdir, common)) if common else gitdir


def _resolve_ref(gitdir: str, common: str, ref: str) -> str | None:
    for _ in range(8):  # a symbolic ref may name another
        raw = _read(os.path.join(gitdir, ref))
        if raw is None and common != gitdir:
            raw = _read(os.path.join(common, ref))
        if raw is None:
            packed = _read(os.path.join(common, "packed-refs")) or b""
            for line in packed.splitlines():
                sha, _, name = line.partition(b" ")
                if name.decode("utf-8", "replace") == ref and not line.startswith((b"#", b"^")):
                    return sha.decode()
            return None
        text = raw.decode("utf-8", "replace").strip()
        if not text.startswith("ref:"):
            return text
        ref = text[4:].strip()
    return None


def head_commit(gitdir: str, common: str) -> str | None:
    """The object name HEAD points at; None for a repository without commits."""
    head = (_read(os.path.join(gitdir, "HEAD")) or b"").decode("utf-8", "replace").strip()
    sha = _resolve_ref(gitdir, common, head[4:].strip()) if head.startswith("ref:") else head or None
    if sha is None or len(sha) not in (40, 64) or any(c not in "0123456789abcdef" for c in sha):
        return None
    return sha


def committer_time(body: bytes) -> int | None:
    """The committer timestamp of a commit object's text (its header, before the first blank
    line)."""
    for line in body.split(b"\n\n", 1)[0].split(b"\n"):
        if line.startswith(b"committer "):
            parts = line.rsplit(b" ", 2)
            if len(parts) == 3 and parts[1].lstrip(b"-").isdigit():
                return int(parts[1])
    return None


def _loose(common: str, sha: str) -> bytes | None:
    raw = _read(os.path.join(common, "objects", sha[:2], sha[2:]))
    if raw is None:
        return None
    data = zlib.decompressobj().decompress(raw, _HEADER_MAX)   # a header, never a bomb
    kind, _, rest = data.partition(b"\0")
    return rest if kind.startswith(b"commit ") else None


_DELTA = object()  # the object is in a pack, stored as a delta of another
_HEADER_MAX = 1 << 16   # a commit's header lines are read from at most this much inflated text


def _in_pack(idx_path: str, want: bytes):
    """The commit's text from the pack beside a version-2 `.idx`; None when the index does not
    hold it, `_DELTA` when the pack stores it as a delta."""
    with open(idx_path, "rb") as f:
        head = f.read(8 + 256 * 4)
        if head[:4] != b"\xfftOc" or int.from_bytes(head[4:8], "big") != 2:
            return None
        fanout = [int.from_bytes(head[8 + 4 * i:12 + 4 * i], "big") for i in range(256)]
        n = fanout[255]
        hl = len(want)
        lo = fanout[want[0] - 1] if want[0] else 0
        hi = fanout[want[0]]
        names_at = 8 + 256 * 4
        while lo < hi:  # binary search in the sorted object names
            mid = (lo + hi) // 2
            f.seek(names_at + mid * hl)
            name = f.read(hl)
            if name == want:
                break
            if name < want:
                lo = mid + 1
            else:
                hi = mid
        else:
            return None
        offsets_at = names_at + n * hl + n * 4  # after the names and their CRCs
        f.seek(offsets_at + mid * 4)
        off = int.from_bytes(f.read(4), "big")
        if off & 0x80000000:  # in the 8-byte table of large offsets
            f.seek(offsets_at + n * 4 + (off & 0x7FFFFFFF) * 8)
            off = int.from_bytes(f.read(8), "big")
    with open(idx_path[:-4] + ".pack", "rb") as p:
        p.seek(off)
        byte = p.read(1)[0]
        kind = (byte >> 4) & 7
        while byte & 0x80:  # the rest of the size varint
            byte = p.read(1)[0]
        if kind in (6, 7):
            return _DELTA
        if kind != 1:
            return None
        z = zlib.decompressobj()
        out = b""
        while not z.eof and len(out) < _HEADER_MAX:
            chunk = z.unconsumed_tail or p.read(4096)
            if not chunk:
                break
            out += z.decompress(chunk, _HEADER_MAX - len(out))
        return out


def git_head_time(context: str) -> tuple[int, str] | None:
    """(HEAD's committer time, how it was found) for a context in a git work tree, else None."""
    found = find_git_dir(context)
    if found is None:
        return None
    gitdir, common = found
    sha = head_commit(gitdir, common)
    if sha is None:
        return None
    how = f"git HEAD {sha[:12]}"
    try:
        body = _loose(common, sha)
    except (OSError, zlib.error):
        body = None
    if body is None:
        pack_dir = os.path.join(common, "objects", "pack")
        want = bytes.fromhex(sha)
        try:
            names = sorted(n for n in os.listdir(pack_dir) if n.endswith(".idx"))
        except OSError:
            names = []
        for name in names:
            try:
                got = _in_pack(os.path.join(pack_dir, name), want)
            except (OSError, IndexError, zlib.error):
                got = None
            if got is _DELTA:
                t = _git_log_time(context)
                return None if t is None else (t, how + " (a packed delta: read by git log)")
            if got is not None:
                body = got
                how += " (packed)"
                break
    if body is None:
        return None
    t = committer_time(body)
    return None if t is None else (t, how)


def _git_log_time(where: str) -> int | None:
    import subprocess

    from builder.gitsource import git_env

    try:        # no signature checks, pager or system config: only the committer time
        r = subprocess.run(["git", "-C", where, "-c", "log.showSignature=false", "--no-pager",
                            "log", "--no-show-signature", "-1", "--format=%ct"],
                           capture_output=True, text=True, check=False, timeout=30,
                           stdin=subprocess.DEVNULL, env={**git_env(), "GIT_CONFIG_NOSYSTEM": "1"})
    except (OSError, subprocess.TimeoutExpired):
        return None
    out = r.stdout.strip()
    return int(out) if r.returncode == 0 and out.isdigit() else None
