"""A git repository as a build context: `pybuild build https://host/repo.git#ref:dir`.

The URL forms are docker's (git://, git@host:path, github.com/..., an http(s) URL ending in
.git), and `#ref:dir` picks a branch, tag or commit and a directory inside the checkout. The
checkout is what BuildKit's git source makes: a shallow fetch of the one ref (a full fetch
when the server refuses a commit by id), submodules included, and no .git directory unless
`--build-arg BUILDKIT_CONTEXT_KEEP_GIT_DIR=1`. git runs with prompts off and stdin closed, so
a repository that asks for credentials fails with git's own line instead of waiting.
"""
from __future__ import annotations

import os
import subprocess

from builder.errors import BuildError


def parse(url: str) -> tuple[str, str, str]:
    """(remote, ref, subdir) of a git context URL; ref "" is the remote's HEAD."""
    remote, _, fragment = url.partition("#")
    if remote.startswith("github.com/"):
        remote = "https://" + remote
    ref, _, subdir = fragment.partition(":")
    if ref.startswith("-"):
        raise BuildError(f"unable to prepare context: invalid refspec: {ref}")
    return remote, ref, subdir


# the caller's GIT_* that may stay: how to reach a server (BuildKit's gitutil keeps these)
_KEEP = ("GIT_SSH", "GIT_SSH_COMMAND", "GIT_SSH_VARIANT", "GIT_SSL_NO_VERIFY", "GIT_SSL_CAINFO")


def git_env() -> dict[str, str]:
    """The environment git runs with: the caller's, without the GIT_* variables that point it
    at another repository, work tree, index or object store (set inside git hooks and `git
    rebase -x`: a clone would write into the caller's repo), prompts off, protocols as git's
    defaults for a command a user did not type."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_") or k in _KEEP}
    env.update(GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="true", GIT_PROTOCOL_FROM_USER="0",
               LC_ALL="C")
    return env


def _git(args: list[str], cwd: str) -> subprocess.CompletedProcess:
    env = git_env()
    try:
        return subprocess.run(["git", *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise BuildError("unable to prepare context: a git URL needs git (apt-get install git)") \
            from None


def _fail(what: str, r: subprocess.CompletedProcess) -> BuildError:
    lines = [ln.strip() for ln in (r.stderr or r.stdout).splitlines() if ln.strip()]
    detail = next((ln for ln in lines if ln.startswith("fatal:")), lines[-1] if lines else
                  f"git exited with {r.returncode}")
    return BuildError(f"unable to prepare context: unable to 'git clone' to temporary context "
                      f"directory: {what}: {detail}")


def clone(url: str, dest: str, *, keep_git_dir: bool = False) -> str:
    """Check the repository at `url` out into the empty dir `dest`; the context dir (dest or
    the #ref:dir's directory inside it)."""
    remote, ref, subdir = parse(url)
    want = ref or "HEAD"
    for args in (["init", "-q"], ["remote", "add", "origin", remote]):
        r = _git(args, dest)
        if r.returncode:
            raise _fail("git " + args[0], r)
    target = "FETCH_HEAD"
    first = _git(["fetch", "-q", "--depth", "1", "origin", "--", want], dest)
    # a server without shallow fetches (git's dumb http) gets a full one; a commit by id that
    # a server will not serve alone, a fetch of every branch and tag, then a checkout of it
    if first.returncode and _git(["fetch", "-q", "origin", "--", want], dest).returncode:
        by_id = len(ref) >= 7 and all(c in "0123456789abcdef" for c in ref.lower())
        if not by_id or _git(["fetch", "-q", "--tags", "origin"], dest).returncode:
            raise _fail("error fetching", first)
        target = ref
    for args in (["checkout", "-q", target], ["submodule", "update", "-q", "--init", "--recursive",
                                              "--depth", "1"]):
        r = _git(args, dest)
        if r.returncode:
            raise _fail("git " + args[0], r)
    if not keep_git_dir:
        from cache.fspath import remove_tree

        remove_tree(os.path.join(dest, ".git"))
    if not subdir:
        return dest
    from builder.context import resolve_in_root

    path = resolve_in_root(dest, subdir)
    if not os.path.isdir(path):
        raise BuildError(f"unable to prepare context: error setting git context, not a directory: "
                         f"{subdir}")
    return path
