"""Device rules on cgroup v2: an eBPF program of type BPF_PROG_TYPE_CGROUP_DEVICE attached to
the container's cgroup, as runc's devicefilter and crun do (v2 has no devices.allow).

The program reads the access the kernel asks about (`struct bpf_cgroup_dev_ctx`: type and
access in one word, major, minor) and returns 1 when an allow rule ("c 1:3 rwm", "b *:* m",
as runtime.cgroups writes them on v1) covers it: its type (or `a`), every access bit asked
for among its own, its major and minor (or `*`); else 0, the v1 rules' "a denied" default. It is
attached with BPF_F_ALLOW_MULTI (a parent's programs still apply) and stays attached, its fd
closed, until the cgroup is removed. Imported only where it is used (a v2 host).
"""
from __future__ import annotations

import ctypes
import os
import struct

from runtime.errors import SandboxError

_NR_BPF = {"x86_64": 321, "aarch64": 280}
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2
_TYPES = {"b": 1, "c": 2}               # BPF_DEVCG_DEV_BLOCK, _CHAR
_ACCESS = {"m": 1, "r": 2, "w": 4}      # BPF_DEVCG_ACC_MKNOD, _READ, _WRITE

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


_LDXW, _AND_K, _RSH_K, _MOV_K, _MOV_X, _JNE_K, _EXIT = 0x61, 0x57, 0x77, 0xb7, 0xbf, 0x55, 0x95


def _parse(rule: str) -> tuple[str, int, int, int]:
    """("c", major or -1, minor or -1, access bits) of "c 1:3 rwm"."""
    kind, numbers, access = rule.split()
    major, minor = numbers.split(":")
    return (kind, -1 if major == "*" else int(major), -1 if minor == "*" else int(minor),
            sum(_ACCESS[a] for a in access))


def program(rules) -> bytes:
    """The eBPF instructions allowing exactly `rules` (allow lines, v1's syntax)."""
    code = [
        _insn(_LDXW, 2, 1, 0), _insn(_AND_K, 2, imm=0xFFFF),    # r2 = type
        _insn(_LDXW, 3, 1, 0), _insn(_RSH_K, 3, imm=16),        # r3 = access asked for
        _insn(_LDXW, 4, 1, 4), _insn(_LDXW, 5, 1, 8),           # r4 = major, r5 = minor
    ]
    for rule in rules:
        kind, major, minor, access = _parse(rule)
        block: list[tuple] = []         # (code, dst, src, imm, is_jump)
        if kind != "a":
            block.append((_JNE_K, 2, 0, _TYPES[kind], True))
        if access != 7:                 # some access asked for that the rule lacks: no match
            block += [(_MOV_X, 1, 3, 0, False), (_AND_K, 1, 0, ~access & 7, False),
                      (_JNE_K, 1, 0, 0, True)]
        if major >= 0:
            block.append((_JNE_K, 4, 0, major, True))
        if minor >= 0:
            block.append((_JNE_K, 5, 0, minor, True))
        unconditional = not block
        block += [(_MOV_K, 0, 0, 1, False), (_EXIT, 0, 0, 0, False)]
        for i, (op, dst, src, imm, jump) in enumerate(block):
            code.append(_insn(op, dst, src, len(block) - i - 1 if jump else 0, imm))
        if unconditional:       # "a *:* rwm": what follows could never run (the verifier refuses it)
            return b"".join(code)
    code += [_insn(_MOV_K, 0, imm=0), _insn(_EXIT)]
    return b"".join(code)


def _bpf(cmd: int, attr: bytes) -> int:
    buf = ctypes.create_string_buffer(attr, 128)
    nr = _NR_BPF.get(os.uname().machine)
    if nr is None:
        raise SandboxError(f"device rules on cgroup v2: no bpf syscall number for {os.uname().machine}")
    r = _libc.syscall(nr, cmd, buf, 128)
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


def attach(path: str, rules) -> None:
    """Load the program for `rules` and attach it to the v2 cgroup dir `path`."""
    insns = ctypes.create_string_buffer(program(rules))
    license = ctypes.create_string_buffer(b"Apache")
    log = ctypes.create_string_buffer(65536)
    n = len(insns.raw) // 8
    attr = struct.pack("<IIQQIIQII16sII", BPF_PROG_TYPE_CGROUP_DEVICE, n, ctypes.addressof(insns),
                       ctypes.addressof(license), 1, len(log), ctypes.addressof(log), 0, 0,
                       b"pybuild_dev", 0, BPF_CGROUP_DEVICE)
    try:
        prog = _bpf(BPF_PROG_LOAD, attr)
    except OSError as e:
        why = log.value.decode(errors="replace").strip().splitlines()
        raise SandboxError(f"cannot load the container's device rules (BPF): {e.strerror}"
                           + (f": {why[-1]}" if why else "")) from None
    try:
        cg = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            _bpf(BPF_PROG_ATTACH, struct.pack("<IIII", cg, prog, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI))
        except OSError as e:
            raise SandboxError(f"cannot attach the container's device rules to {path}: "
                               f"{e.strerror}") from None
        finally:
            os.close(cg)
    finally:
        os.close(prog)
