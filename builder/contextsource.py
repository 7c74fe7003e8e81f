"""Where a build's context comes from, as docker's CLI decides: a local directory, `-` (a tar
archive on stdin, or a Dockerfile alone), a git repository URL, or an http(s) URL of a tarball
or a Dockerfile.

Anything but a local directory is made into one first: a fresh owner-named dir under the
store's tmp/ (`pybuild prune` removes it after a kill; the build removes it when it ends), the
tar unpacked by cache.extract's root-confined extractor in ADD's `untar` mode (no entry can
land outside it), a repository cloned by builder.gitsource. Then the build is the directory
build: same keys, same image. For those contexts `-f` names a file inside the context, as in
docker; a Dockerfile alone on stdin or at a URL gets an empty context, as BuildKit gives it.
"""
from __future__ import annotations

import os
import sys

_TAR_BLOCK = 512
_URL_PREFIXES = ("http://", "https://")
_GIT_PREFIXES = ("git://", "github.com/", "git@")


def is_git_url(spec: str) -> bool:
    """docker's urlutil.IsGitURL: git://, github.com/, git@, or an http(s) URL whose path ends
    in .git (optionally followed by #ref:dir)."""
    if spec.startswith(_URL_PREFIXES):
        base = spec.partition("#")[0]
        return base.endswith(".git") or (".git#" in spec)
    return spec.startswith(_GIT_PREFIXES)


def is_local(spec: str) -> bool:
    """A context that is a path on this machine: what a replayed build may observe (so this
    module imports only os and sys at its top; builder.replay asks it)."""
    return spec != "-" and not is_git_url(spec) and not spec.startswith(_URL_PREFIXES)


class Prepared:
    """A context as a directory: `context` (its root), `dockerfile` (-f's path, or None for
    the default), `dockerfile_text` (a Dockerfile that came alone, or None), `made` (the
    temporary dir it was made in, or None for a local directory)."""

    def __init__(self, context: str, dockerfile: str | None = None,
                 dockerfile_text: str | None = None, made: str | None = None):
        self.context, self.dockerfile, self.dockerfile_text = context, dockerfile, dockerfile_text
        self.made = made

    def remove(self) -> None:
        if self.made:
            from cache.fspath import remove_tree

            remove_tree(self.made)
            self.made = None


def prepare(spec: str, file: str | None, tmp_parent: str, build_args: dict[str, str]) -> Prepared:
    """The context `spec` (build's CONTEXT argument) with `-f` `file`, as a directory; for a
    non-local context in a fresh dir under `tmp_parent` that the caller removes."""
    from builder.errors import BuildError

    if is_local(spec):
        if not os.path.exists(spec):
            raise BuildError(f"unable to prepare context: path {spec!r} not found")
        if not os.path.isdir(spec):
            raise BuildError("unable to prepare context: context must be a directory: "
                             f"{os.path.abspath(spec)}")
        return Prepared(spec, file)
    if spec == "-" and file == "-":
        raise BuildError("invalid argument: can't use stdin for both build context and dockerfile")
    from cache import owner

    made = Prepared("", made=owner.temp_dir(tmp_parent, "context"))
    try:
        return _make(spec, file, made.made, build_args)
    except BaseException:
        made.remove()
        raise


def _make(spec: str, file: str | None, dest: str, build_args: dict[str, str]) -> Prepared:
    return _confined(_fetch(spec, file, dest, build_args))


def _confined(p: Prepared) -> Prepared:
    """A made context is somebody else's tree: its Dockerfile and .dockerignore are read as
    if its root were `/` (a symlink to a host file, or to /dev/zero, must not be followed out
    of it), and only as regular files. The Dockerfile's path becomes the resolved one; a
    linked .dockerignore is replaced by the regular file it names inside (or goes)."""
    import stat

    from builder.context import resolve_in_root
    from builder.errors import BuildError

    if p.dockerfile_text is not None:
        return p
    root = p.context
    rel = os.path.relpath(p.dockerfile, root) if p.dockerfile else "Dockerfile"
    if not p.dockerfile and not os.path.lexists(os.path.join(root, rel)) and \
            os.path.lexists(os.path.join(root, "dockerfile")):
        rel = "dockerfile"          # docker's fallback to the lowercase name
    path = resolve_in_root(root, rel)
    try:
        st = os.stat(path)
    except OSError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise BuildError(f"failed to read Dockerfile: {rel} is not a regular file in the context")
    p.dockerfile = path
    for ignore in (path + ".dockerignore", os.path.join(root, ".dockerignore")):
        if os.path.islink(ignore):
            target = resolve_in_root(root, os.path.relpath(ignore, root))
            data = None
            try:
                if stat.S_ISREG(os.stat(target).st_mode):
                    with open(target, "rb") as f:
                        data = f.read()
            except OSError:
                pass
            os.unlink(ignore)
            if data is not None:
                with open(ignore, "wb") as f:
                    f.write(data)
    return p


def _fetch(spec: str, file: str | None, dest: str, build_args: dict[str, str]) -> Prepared:
    if spec == "-":
        return _from_stream(sys.stdin.buffer, "stdin", file, dest)
    if is_git_url(spec):
        from builder import gitsource

        sub = gitsource.clone(spec, dest, keep_git_dir=_true(build_args.get(
            "BUILDKIT_CONTEXT_KEEP_GIT_DIR", "")))
        return Prepared(sub, _inside(sub, file), made=dest)
    from builder.fetch import fetch_url

    download = os.path.join(dest, "download")
    os.mkdir(download, 0o700)
    path = fetch_url(spec, download)
    try:
        with open(path, "rb") as f:
            return _from_stream(f, spec, file, dest, sub="context")
    finally:
        os.unlink(path)
        os.rmdir(download)


def _true(v: str) -> bool:
    return v.lower() in ("1", "true", "yes", "on")


def _inside(root: str, file: str | None) -> str | None:
    """-f of a context that is not a local directory: a path inside it (docker's rule)."""
    if not file:
        return None
    from cache.fspath import clean

    return os.path.join(root, *clean(file))


def is_tar_header(block: bytes) -> bool:
    """Whether a 512-byte block is a tar header (its checksum field matches its bytes)."""
    if len(block) < _TAR_BLOCK or not block[:100].strip(b"\0"):
        return False
    try:
        want = int(block[148:156].replace(b"\0", b" ").strip() or b"x", 8)
    except ValueError:
        return False
    rest = block[:148] + b" " * 8 + block[156:_TAR_BLOCK]
    return want in (sum(rest), sum(b - 256 if b > 127 else b for b in rest))


def _from_stream(stream, what: str, file: str | None, made: str, sub: str = "") -> Prepared:
    """A tar archive (plain, gzip, bzip2, xz or zstd) unpacked as the context, or else the
    whole stream as the Dockerfile with an empty context (docker's DetectArchiveReader), in
    `made` (or its dir `sub`)."""
    from builder.errors import BuildError
    from cache.compress import Prefixed, sniff

    dest = os.path.join(made, sub) if sub else made
    if sub:
        os.mkdir(dest, 0o700)
    head = stream.read(_TAR_BLOCK)
    if sniff(head) == "none" and not is_tar_header(head):
        if file:
            raise BuildError(f"ambiguous Dockerfile source: both {what} and -f {file}")
        text = (head + stream.read()).decode("utf-8", "replace")
        return Prepared(dest, None, text, made)
    from cache.errors import StoreError
    from cache.extract import extract_stream

    try:
        extract_stream(Prefixed(head, stream), dest, whiteouts="untar", owner=(0, 0),
                       devices=False)   # somebody else's tar: no device nodes on this host
    except StoreError as e:
        raise BuildError(f"unable to prepare context: {what}: {e}") from None
    return Prepared(dest, _inside(dest, file), made=made)
