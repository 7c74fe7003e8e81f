"""Seccomp for containers and RUN steps: docker's `--security-opt` rules, and the filter each
sandboxed process loads just before its exec.

The profile is data: `default.json` beside this file is moby's default profile, unchanged
(github.com/moby/profiles, seccomp/default.json at commit 3c28324314729dbade8287e868eef6338c42807a,
2026-05-06; Copyright The Moby Authors, Apache License 2.0 — see NOTICE beside it). Docker and
BuildKit apply it to every container and RUN; `--security-opt seccomp=FILE` takes a profile in
the same JSON format (runtime.seccomp.profile parses both), `seccomp=unconfined` none.

Compiling a profile (hundreds of rules, libseccomp through runtime.seccomp.libseccomp) costs
milliseconds, so it happens once: the BPF program is kept in CACHE_DIR (tmpfs: gone at reboot)
under the sha256 of what it depends on — the profile's bytes, the capability set its
conditional rules see, the architecture, the kernel release and libseccomp's version (its
soname link's target). A run with a cached program reads that file, checks its length and
the sha256 it starts with (a corrupt one is compiled again, never loaded), and the process
hands it to the kernel with prctl: this module imports neither json nor the binding.

Where it is loaded (runtime.process, runtime.containers.exec), as runc does: with
no-new-privileges, no_new_privs is set first and the filter loaded last, just before exec;
without it the filter is loaded before the capability drop and uid change (installing a filter
without no_new_privs needs CAP_SYS_ADMIN), so those syscalls must pass the profile (docker's
does). Either way pybuild's own set-up (mounts, pivot_root) is never filtered.
"""
from __future__ import annotations

import os

from runtime import kernel
from runtime.errors import SandboxError

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PROFILE = os.path.join(HERE, "default.json")
CACHE_DIR = "/run/pybuild/seccomp"
UNCONFINED = "unconfined"
BUILTIN = "builtin"         # docker's name for its default profile
_TRUE = ("1", "t", "T", "TRUE", "true", "True")      # Go's strconv.ParseBool
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def library_path() -> str:
    """libseccomp.so.2: Debian's multiarch path (its soname link names the version, which keys
    the cache), else the dynamic loader's search."""
    p = f"/usr/lib/{os.uname().machine}-linux-gnu/libseccomp.so.2"
    return p if os.path.exists(p) else "libseccomp.so.2"


def parse_options(opts: list[str] | None) -> tuple[str, bool]:
    """(profile, no_new_privileges) from --security-opt values as docker's daemon reads them
    (its parseSecurityOpt): profile "" for docker's default, "unconfined", or a profile's JSON
    text (the CLI has already put the file's content in: `cli_options`). SandboxError with
    docker's line for one it does not take."""
    profile, nnp = "", False
    for opt in opts or ():
        if opt == "no-new-privileges":
            nnp = True
            continue
        k, sep, v = opt.partition("=")
        if not sep:
            k, sep, v = opt.partition(":")
        if not sep:
            raise SandboxError(f'invalid --security-opt 1: "{opt}"')
        if k == "seccomp":
            profile = "" if v == BUILTIN else v
        elif k == "no-new-privileges":
            if v in _TRUE:
                nnp = True
            elif v in _FALSE:
                nnp = False
            else:
                raise SandboxError(f'invalid --security-opt 2: "{opt}"')
        elif k in ("label", "apparmor"):
            pass            # no SELinux nor AppArmor here: accepted, as docker on such a host
        elif k == "systempaths":
            raise SandboxError(f'--security-opt {opt} is not supported (masked paths stay masked)')
        else:
            raise SandboxError(f'invalid --security-opt 2: "{opt}"')
    return profile, nnp


def cli_options(opts: list[str]) -> list[str]:
    """--security-opt as docker's CLI sends them: `seccomp=FILE` becomes the file's compacted
    JSON (so the container keeps its profile when the file goes), checked and compiled now
    (the cache is warm for the run). SandboxError: one line, docker's wording."""
    out, given = [], False
    for opt in opts:
        k, sep, v = opt.partition("=")
        if not sep and opt != "no-new-privileges":
            k, sep, v = opt.partition(":")
        if (not sep or not v) and opt != "no-new-privileges":
            raise SandboxError(f'Invalid --security-opt: "{opt}"')
        if k == "seccomp" and v not in (BUILTIN, UNCONFINED):
            try:
                with open(v, "rb") as f:
                    data = f.read()
            except OSError as e:
                raise SandboxError(f"opening seccomp profile ({v}) failed: open {v}: "
                                   f"{(e.strerror or '').lower()}") from None
            from runtime.seccomp.profile import compact
            opt, given = "seccomp=" + compact(data, v), True
        out.append(opt)
    profile, _ = parse_options(out)
    if given and profile != UNCONFINED:
        from runtime.caps import DEFAULT_CAP_MASK
        program(profile, DEFAULT_CAP_MASK)      # what libseccomp refuses, now; the cache warm
    return out


class Policy:
    """What a container's processes apply before their exec: a BPF program (None: unconfined)
    and no_new_privs. Made on the host before the fork; the children only make system calls."""

    def __init__(self, program: bytes | None, no_new_privs: bool):
        self.program = program
        self.no_new_privs = no_new_privs
        self._fprog = kernel.seccomp_program(program) if program else None

    def before_drop(self) -> None:
        """Before the capability drop and uid change (runc's order)."""
        if self.no_new_privs:
            kernel.prctl(kernel.PR_SET_NO_NEW_PRIVS, 1)
        elif self._fprog is not None:
            kernel.seccomp_load(self._fprog)

    def before_exec(self) -> None:
        """Last before execve: the filter when no_new_privs allowed waiting for it."""
        if self.no_new_privs and self._fprog is not None:
            kernel.seccomp_load(self._fprog)


def policy(opts: list[str] | None, cap_mask: int, privileged: bool = False) -> Policy:
    """The Policy for --security-opt `opts` and the capability set the command keeps
    (the profile's includes.caps/excludes.caps see it). --privileged runs unconfined, as in
    docker; no-new-privileges still applies."""
    profile, nnp = parse_options(opts)
    if privileged or profile == UNCONFINED:
        return Policy(None, nnp)
    return Policy(program(profile, cap_mask), nnp)


def _sha256(data: bytes):
    # the C module hashlib wraps: ~0.3 ms to import, not hashlib's ~8 (3.12 renamed it _sha2)
    try:
        from _sha256 import sha256
    except ImportError:
        from hashlib import sha256
    return sha256(data)


def _key(profile_bytes: bytes, cap_mask: int) -> str:
    u = os.uname()
    try:
        lib = os.readlink(library_path())
    except OSError:
        lib = ""
    parts = [_sha256(profile_bytes).hexdigest(), f"{cap_mask:x}", u.machine, u.release, lib]
    return _sha256("\0".join(parts).encode()).hexdigest()


def program(profile: str, cap_mask: int) -> bytes:
    """The BPF program (struct sock_filter array) of profile ("" = docker's default, else
    its JSON text) for cap_mask: from the cache when its file is whole, else compiled and
    cached."""
    if profile:
        data = profile.encode()
    else:
        with open(DEFAULT_PROFILE, "rb") as f:
            data = f.read()
    path = os.path.join(CACHE_DIR, _key(data, cap_mask) + ".bpf")
    prog = read_cached(path)
    if prog is None:
        from runtime.seccomp.profile import compile_profile
        prog = compile_profile(data, cap_mask, library_path())
        write_cached(path, prog)
    return prog


def read_cached(path: str) -> bytes | None:
    """A cached program, or None when missing or not whole: it starts with the sha256 of
    the rest, whose length is a positive multiple of 8 (one struct sock_filter)."""
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError:
        return None
    digest, prog = blob[:32], blob[32:]
    if not prog or len(prog) % 8 or len(prog) > 8 * 4096 or _sha256(prog).digest() != digest:
        return None
    return prog


def write_cached(path: str, prog: bytes) -> None:
    """Keep prog for the next run (atomically: a reader never sees half a file). A cache that
    cannot be written costs only the next run's compile."""
    from cache.atomic import write_file
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        write_file(path, _sha256(prog).digest() + prog, mode=0o600)
    except OSError:
        pass
