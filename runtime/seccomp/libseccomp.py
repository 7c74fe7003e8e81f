"""A small ctypes binding to libseccomp.so.2: only what compiling a profile to BPF needs.

Why our own rather than PyPI's `pyseccomp` (ctypes too, API-compatible with libseccomp's
official binding): that package has had no release since 2021 and would be a dependency to
install for eight functions; ctypes is already loaded on the run path, and this binding is
imported only when a profile is compiled (a cache miss, runtime.seccomp.policy), never to load a
cached filter. Debian's libseccomp2 (install.sh) provides the library.
"""
from __future__ import annotations

import ctypes
import os

from runtime.errors import SandboxError

# actions (seccomp.h)
ACT_KILL_PROCESS = 0x80000000
ACT_KILL_THREAD = 0x00000000
ACT_TRAP = 0x00030000
ACT_NOTIFY = 0x7fc00000
ACT_LOG = 0x7ffc0000
ACT_ALLOW = 0x7fff0000


def act_errno(n: int) -> int:
    return 0x00050000 | (n & 0xffff)


def act_trace(n: int) -> int:
    return 0x7ff00000 | (n & 0xffff)


# comparison operators (enum scmp_compare)
CMP = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4, "SCMP_CMP_GE": 5,
       "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}

# filter attributes (enum scmp_filter_attr)
FLTATR_ACT_BADARCH = 2
FLTATR_CTL_NNP = 3
FLTATR_CTL_OPTIMIZE = 8

# architecture tokens (AUDIT_ARCH_*), by libseccomp's SCMP_ARCH_ names as docker's profiles spell them
ARCH = {
    "SCMP_ARCH_X86": 0x40000003, "SCMP_ARCH_X86_64": 0xc000003e, "SCMP_ARCH_X32": 0x4000003e,
    "SCMP_ARCH_ARM": 0x40000028, "SCMP_ARCH_AARCH64": 0xc00000b7,
    "SCMP_ARCH_MIPS": 0x00000008, "SCMP_ARCH_MIPS64": 0x80000008, "SCMP_ARCH_MIPS64N32": 0xa0000008,
    "SCMP_ARCH_MIPSEL": 0x40000008, "SCMP_ARCH_MIPSEL64": 0xc0000008,
    "SCMP_ARCH_MIPSEL64N32": 0xe0000008, "SCMP_ARCH_PPC": 0x00000014, "SCMP_ARCH_PPC64": 0x80000015,
    "SCMP_ARCH_PPC64LE": 0xc0000015, "SCMP_ARCH_S390": 0x00000016, "SCMP_ARCH_S390X": 0x80000016,
    "SCMP_ARCH_RISCV64": 0xc00000f3, "SCMP_ARCH_LOONGARCH64": 0xc0000102,
    "SCMP_ARCH_PARISC": 0x0000000f, "SCMP_ARCH_PARISC64": 0x8000000f, "SCMP_ARCH_M68K": 0x00000004,
    "SCMP_ARCH_SH": 0x4000002a, "SCMP_ARCH_SHEB": 0x0000002a,
}
NR_ERROR = -1       # __NR_SCMP_ERROR: a name libseccomp does not know


class _Arg(ctypes.Structure):     # struct scmp_arg_cmp
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


_lib = None


def load(path: str):
    """Open the library at path (runtime.seccomp.policy.library_path) once."""
    global _lib
    if _lib is None:
        try:
            lib = ctypes.CDLL(path, use_errno=True)
        except OSError:
            raise SandboxError("seccomp needs libseccomp.so.2 (Debian: apt-get install "
                               "libseccomp2), or run with --security-opt seccomp=unconfined") from None
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_release.argtypes = [ctypes.c_void_p]
        lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.seccomp_arch_exist.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.seccomp_arch_native.restype = ctypes.c_uint32
        lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
        lib.seccomp_syscall_resolve_name_arch.argtypes = [ctypes.c_uint32, ctypes.c_char_p]
        lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                               ctypes.c_uint, ctypes.POINTER(_Arg)]
        lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
        _lib = lib
    return _lib


def version() -> str:
    lib = _opened()
    lib.seccomp_version.restype = ctypes.POINTER(ctypes.c_uint * 3)
    v = lib.seccomp_version().contents
    return ".".join(str(x) for x in v)


def native_arch() -> int:
    return _opened().seccomp_arch_native()


def resolve(name: str, arch: int) -> int:
    """The syscall number of name on arch, NR_ERROR when libseccomp does not know it."""
    return _opened().seccomp_syscall_resolve_name_arch(arch, name.encode())


def _opened():
    if _lib is None:
        raise SandboxError("internal error: libseccomp was not loaded")
    return _lib


class Filter:
    """A libseccomp filter context: rules in, a BPF program (bytes of struct sock_filter) out."""

    def __init__(self, default_action: int):
        self._lib = _opened()
        self._ctx = self._lib.seccomp_init(default_action)
        if not self._ctx:
            raise SandboxError("seccomp: libseccomp refused the profile's default action")

    def _check(self, rc: int, what: str) -> None:
        if rc < 0:
            raise SandboxError(f"seccomp: {what}: {os.strerror(-rc)}")

    def set_attr(self, attr: int, value: int) -> None:
        self._check(self._lib.seccomp_attr_set(self._ctx, attr, value), f"attribute {attr}")

    def add_arch(self, arch: int) -> None:
        if self._lib.seccomp_arch_exist(self._ctx, arch) != 0:
            self._check(self._lib.seccomp_arch_add(self._ctx, arch), f"architecture {arch:#x}")

    def add_rule(self, action: int, nr: int, args: list[tuple[int, int, int, int]]) -> int:
        """Add a rule (args: (index, op, datum_a, datum_b), all must hold); the raw return
        code (negative errno) so the caller may skip what libseccomp cannot express."""
        arr = (_Arg * max(len(args), 1))(*[_Arg(*a) for a in args])
        return self._lib.seccomp_rule_add_array(self._ctx, action, nr, len(args), arr)

    def export_bpf(self) -> bytes:
        fd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC)
        try:
            self._check(self._lib.seccomp_export_bpf(self._ctx, fd), "export the BPF program")
            os.lseek(fd, 0, os.SEEK_SET)
            chunks = []
            while b := os.read(fd, 65536):
                chunks.append(b)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def release(self) -> None:
        if self._ctx:
            self._lib.seccomp_release(self._ctx)
            self._ctx = None
