"""Docker's seccomp profile format, compiled to a BPF program: the cache-miss path of
runtime.seccomp (json and the libseccomp binding load only here).

The rules follow moby's profile loader and runc's filter set-up: `architectures` or `archMap`
(the native architecture's entry and its sub-architectures), `syscalls[]` with `names` (or the
old `name`), `action`, `errnoRet`, `args[]` (index, value, valueTwo, op; several on one
index are alternatives, else all must hold) and `includes`/`excludes` on `arches` (Go's
GOARCH names), `caps` and `minKernel`. A rule whose action is the default action is dropped
(libseccomp refuses it), a name libseccomp does not know is skipped (runc does both). As runc's
patchbpf does, a syscall numbered above every one the profile names answers ENOSYS instead of
the default errno (so a libc falls back from a call newer than the profile), on the native
architecture only and only when the default action denies.
"""
from __future__ import annotations

import errno
import json
import os
import struct

from runtime.caps import CAP_NAMES
from runtime.errors import SandboxError
from runtime.seccomp import libseccomp as lib

# capability numbers by name (runtime.caps' one table), for includes.caps / excludes.caps
CAP_NUMBERS = {"CAP_" + name: n for n, name in enumerate(CAP_NAMES)}
# uname -m -> (Go's GOARCH as profiles' arches name it, libseccomp's native architecture)
MACHINES = {
    "x86_64": ("amd64", "SCMP_ARCH_X86_64"), "aarch64": ("arm64", "SCMP_ARCH_AARCH64"),
    "i686": ("386", "SCMP_ARCH_X86"), "armv7l": ("arm", "SCMP_ARCH_ARM"),
    "ppc64le": ("ppc64le", "SCMP_ARCH_PPC64LE"), "s390x": ("s390x", "SCMP_ARCH_S390X"),
    "riscv64": ("riscv64", "SCMP_ARCH_RISCV64"),
}
_SIMPLE_ACTIONS = {"SCMP_ACT_KILL": lib.ACT_KILL_THREAD, "SCMP_ACT_KILL_THREAD": lib.ACT_KILL_THREAD,
                   "SCMP_ACT_KILL_PROCESS": lib.ACT_KILL_PROCESS, "SCMP_ACT_TRAP": lib.ACT_TRAP,
                   "SCMP_ACT_ALLOW": lib.ACT_ALLOW, "SCMP_ACT_LOG": lib.ACT_LOG}


def compact(data: bytes, name: str) -> str:
    """The profile file's JSON without insignificant space (docker's CLI sends it so), checked
    as a profile now: a bad file is refused before anything is made."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise SandboxError(f"compacting json for seccomp profile ({name}) failed: {e}") from None
    _check(doc)
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def _fail(msg: str) -> SandboxError:
    return SandboxError(f"decoding seccomp profile failed: {msg}")


def _check(doc) -> None:
    """The profile's shape: every error a compile would meet, raised before one."""
    if not isinstance(doc, dict):
        raise _fail("the profile is not a JSON object")
    _action(doc.get("defaultAction", ""), doc.get("defaultErrnoRet"))
    if doc.get("architectures") and doc.get("archMap"):
        raise _fail("'architectures' and 'archMap' were specified in the seccomp profile, use "
                    "either 'architectures' or 'archMap'")
    for a in doc.get("architectures") or []:
        if a not in lib.ARCH:
            raise _fail(f"unknown architecture {a!r}")
    for m in doc.get("archMap") or []:
        if not isinstance(m, dict):
            raise _fail("archMap entries must be objects")
        for a in [m.get("architecture"), *(m.get("subArchitectures") or [])]:
            if a not in lib.ARCH:
                raise _fail(f"unknown architecture {a!r}")
    calls = doc.get("syscalls") or []
    if not isinstance(calls, list):
        raise _fail("syscalls must be a list")
    for call in calls:
        if not isinstance(call, dict):
            raise _fail("syscalls entries must be objects")
        if call.get("name") and call.get("names"):
            raise _fail("'name' and 'names' were specified in the seccomp profile, use either "
                        "'name' or 'names'")
        names = call.get("names") or ([call["name"]] if call.get("name") else [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise _fail("names must be a list of strings")
        _action(call.get("action", ""), call.get("errnoRet"))
        _args(call.get("args") or [])
        for key in ("includes", "excludes"):
            f = call.get(key) or {}
            if not isinstance(f, dict):
                raise _fail(f"{key} must be an object")
            if f.get("minKernel"):
                _kernel_version(f["minKernel"], fail=True)


def _action(name, errno_ret) -> int:
    if errno_ret is not None and not isinstance(errno_ret, int):
        raise _fail(f"errnoRet must be a number, not {errno_ret!r}")
    if name in _SIMPLE_ACTIONS:
        if errno_ret is not None:
            raise _fail(f"errnoRet is not supported by action {name}")
        return _SIMPLE_ACTIONS[name]
    if name == "SCMP_ACT_ERRNO":
        return lib.act_errno(errno.EPERM if errno_ret is None else errno_ret)
    if name == "SCMP_ACT_TRACE":
        return lib.act_trace(errno.EPERM if errno_ret is None else errno_ret)
    if name == "SCMP_ACT_NOTIFY":
        raise _fail("SCMP_ACT_NOTIFY needs a listener, which pybuild has not")
    raise _fail(f"unknown action {name!r}" if name else "no action given")


def _args(args) -> list[tuple[int, int, int, int]]:
    out = []
    if not isinstance(args, list):
        raise _fail("args must be a list")
    for a in args:
        if not isinstance(a, dict):
            raise _fail("args entries must be objects")
        index, op = a.get("index", 0), a.get("op", "")
        value, two = a.get("value", 0), a.get("valueTwo", 0)
        if op not in lib.CMP:
            raise _fail(f"unknown comparison operator {op!r}")
        if not isinstance(index, int) or not 0 <= index <= 5:
            raise _fail(f"argument index {index!r} is not 0 to 5")
        for v in (value, two):
            if not isinstance(v, int) or not 0 <= v < 1 << 64:
                raise _fail(f"argument value {v!r} is not an unsigned 64-bit number")
        out.append((index, lib.CMP[op], value, two))
    return out


def _kernel_version(text: str, fail: bool = False) -> tuple[int, int]:
    """"major.minor[.patch...]" (a release as uname gives it, or minKernel) as (major, minor)."""
    try:
        parts = str(text).split("-", 1)[0].split(".")
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        if fail:
            raise _fail(f"invalid kernel version {text!r}") from None
        return 0, 0


def _applies(call: dict, goarch: str, cap_mask: int, kernel: tuple[int, int]) -> bool:
    """moby's rule filter: every included cap held and arch listed, no excluded one."""
    inc, exc = call.get("includes") or {}, call.get("excludes") or {}
    if inc.get("arches") and goarch not in inc["arches"]:
        return False
    for c in inc.get("caps") or []:
        if not cap_mask >> CAP_NUMBERS.get(c, 63) & 1:
            return False
    if inc.get("minKernel") and kernel < _kernel_version(inc["minKernel"]):
        return False
    if exc.get("arches") and goarch in exc["arches"]:
        return False
    for c in exc.get("caps") or []:
        if c in CAP_NUMBERS and cap_mask >> CAP_NUMBERS[c] & 1:
            return False
    return not (exc.get("minKernel") and kernel >= _kernel_version(exc["minKernel"]))


def compile_profile(data: bytes, cap_mask: int, library: str) -> bytes:
    """The BPF program of the profile `data` (docker's JSON) for a process holding cap_mask,
    compiled by the libseccomp at `library`."""
    lib.load(library)
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise _fail(str(e)) from None
    _check(doc)
    u = os.uname()
    goarch, native_name = MACHINES.get(u.machine, (u.machine, ""))
    kernel = _kernel_version(u.release)
    default = _action(doc.get("defaultAction"), doc.get("defaultErrnoRet"))
    native = lib.native_arch()
    arches = list(doc.get("architectures") or [])
    for m in doc.get("archMap") or []:
        if m.get("architecture") == native_name:
            arches += [m["architecture"], *(m.get("subArchitectures") or [])]
    f = lib.Filter(default)
    try:
        f.set_attr(lib.FLTATR_CTL_NNP, 0)       # we set no_new_privs ourselves, or not
        try:
            f.set_attr(lib.FLTATR_CTL_OPTIMIZE, 2)  # a binary tree of syscalls: fewer jumps per call
        except SandboxError:
            pass                                    # libseccomp < 2.5: the linear list
        for a in dict.fromkeys(arches):
            f.add_arch(lib.ARCH[a])
        highest = -1
        for call in doc.get("syscalls") or []:
            if not _applies(call, goarch, cap_mask, kernel):
                continue
            action = _action(call.get("action"), call.get("errnoRet"))
            names = call.get("names") or ([call["name"]] if call.get("name") else [])
            for name in names:
                nr = lib.resolve(name, native)
                if nr != lib.NR_ERROR:
                    highest = max(highest, nr)
            if action == default:
                continue
            args = _args(call.get("args") or [])
            indexes = [a[0] for a in args]
            groups = [[a] for a in args] if len(set(indexes)) < len(indexes) else [args]
            for name in names:
                nr = lib.resolve(name, native)
                if nr == lib.NR_ERROR:
                    continue        # newer than this libseccomp: runc skips it too
                for group in groups:
                    rc = f.add_rule(action, nr, group)
                    if rc < 0:
                        raise SandboxError(f"seccomp: the rule for {name} was refused: "
                                           f"{os.strerror(-rc)}")
        prog = f.export_bpf()
    finally:
        f.release()
    denies = default not in (lib.ACT_ALLOW, lib.ACT_LOG)
    if denies and highest >= 0:
        prog = _enosys_above(highest, native) + prog
    if len(prog) > 8 * 4096:
        raise SandboxError(f"seccomp: the profile needs {len(prog) // 8} BPF instructions, "
                           f"more than the kernel's 4096")
    return prog


def _enosys_above(highest: int, native: int) -> bytes:
    """A BPF prelude (jumps are relative: the program after it is unchanged): on the native
    architecture a syscall number above `highest` returns ENOSYS; x32's numbers (bit 30 on
    x86_64) go to the program as they are."""
    x32_bit = 0x40000000 if native == lib.ARCH["SCMP_ARCH_X86_64"] else 0
    ld, jeq, jset, jgt, ret = 0x20, 0x15, 0x45, 0x25, 0x06
    ins = [(ld, 0, 0, 4),                   # A = seccomp_data.arch
           (jeq, 0, 4, native),             # not native: to the program
           (ld, 0, 0, 0),                   # A = seccomp_data.nr
           (jset, 2, 0, x32_bit),           # an x32 call: to the program
           (jgt, 0, 1, highest),            # above every named syscall: ENOSYS
           (ret, 0, 0, lib.act_errno(errno.ENOSYS))]
    return b"".join(struct.pack("=HBBI", *i) for i in ins)
