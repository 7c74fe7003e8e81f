"""runtime.seccomp on the real kernel: docker's default profile compiled and loaded in a forked
child refuses what docker's does (a user namespace, mount, keyctl, kexec_load, bpf,
perf_event_open, AF_ALG sockets, odd personalities, namespace flags to clone; clone3 and
syscalls newer than the profile answer ENOSYS), its capability-conditional rules follow the
capability set, a custom profile's errno is what the call returns, --security-opt is read as
docker reads it, and the compiled program is cached: a second policy reads it without the
binding, and a corrupt file is compiled again, never loaded."""
from __future__ import annotations

import ctypes
import errno
import json
import os
import subprocess
import sys

import pytest
from busybox_fixture import REPO

from runtime import caps
from runtime.errors import SandboxError
from runtime.seccomp import policy as sp

pytestmark = pytest.mark.skipif(os.uname().machine != "x86_64",
                                reason="the syscall numbers below are x86_64's")

NR = {"unshare": 272, "mount": 165, "keyctl": 250, "kexec_load": 246, "bpf": 321,
      "perf_event_open": 298, "socket": 41, "personality": 135, "clone": 56, "clone3": 435,
      "getppid": 110, "mkdirat": 258}
CLONE_NEWUSER = 0x10000000
CAP_SYS_ADMIN = 21


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "seccomp-cache"
    monkeypatch.setattr(sp, "CACHE_DIR", str(d))
    return d


def in_filtered_child(policy: sp.Policy, calls: list[tuple]) -> list[int]:
    """Load policy in a forked child, make each raw syscall (name, args...) there; the errno
    each gave (0 when it succeeded; a call that succeeded is not undone, so pick harmless
    ones)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            libc = ctypes.CDLL(None, use_errno=True)
            libc.syscall.restype = ctypes.c_long
            policy.before_drop()
            policy.before_exec()
            out = []
            for name, *args in calls:
                nr = NR[name] if isinstance(name, str) else name
                rc = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
                out.append(ctypes.get_errno() if rc < 0 else 0)
            with open("/proc/self/status") as f:
                mode = [ln.split()[1] for ln in f if ln.startswith("Seccomp:")][0]
            os.write(w, json.dumps([int(mode), *out]).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        data = f.read()
    os.waitpid(pid, 0)
    assert data, "the child died"
    return json.loads(data)


def test_default_profile_refuses_what_dockers_refuses(cache_dir):
    pol = sp.policy([], caps.DEFAULT_CAP_MASK)
    got = in_filtered_child(pol, [
        ("unshare", CLONE_NEWUSER), ("mount", 0, 0, 0, 0, 0), ("keyctl", 0, 0), ("kexec_load", 0),
        ("bpf", 0, 0, 0), ("perf_event_open", 0, 0, 0, 0, 0),
        ("socket", 38, 5, 0),                   # AF_ALG
        ("socket", 40, 1, 0),                   # AF_VSOCK
        ("personality", 0x1234), ("personality", 0xffffffff),
        ("clone", CLONE_NEWUSER | 17, 0, 0, 0, 0),
        ("clone3", 0, 0), (1000,),             # clone3, and a number above every named one
        ("getppid",), ("mkdirat", -100, 0, 0),  # allowed: the kernel's own answer (EFAULT)
    ])
    assert got[0] == 2
    eperm, enosys = errno.EPERM, errno.ENOSYS
    assert got[1:] == [eperm, eperm, eperm, eperm, eperm, eperm, eperm, eperm, eperm, 0,
                       eperm, enosys, enosys, 0, errno.EFAULT]


def test_capability_conditional_rules_follow_the_caps(cache_dir):
    admin = sp.policy([], caps.DEFAULT_CAP_MASK | 1 << CAP_SYS_ADMIN)
    plain = sp.policy([], caps.DEFAULT_CAP_MASK)
    assert admin.program != plain.program
    # with CAP_SYS_ADMIN docker's profile allows unshare (the child is root: it works) and
    # clone3 is no longer refused with ENOSYS (the kernel sees the bad pointer: EFAULT)
    got = in_filtered_child(admin, [("unshare", 0x04000000), ("clone3", 0, 88)])
    assert got == [2, 0, errno.EFAULT]


def test_custom_profile_errno_and_unconfined(cache_dir, tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EROFS},
        {"names": ["getppid"], "action": "SCMP_ACT_ERRNO"},
        {"names": ["no_such_syscall_anywhere"], "action": "SCMP_ACT_ERRNO"}]}))
    opts = sp.cli_options([f"seccomp={f}"])
    assert opts[0].startswith('seccomp={"defaultAction":"SCMP_ACT_ALLOW"')
    got = in_filtered_child(sp.policy(opts, caps.DEFAULT_CAP_MASK),
                            [("mkdirat", -100, 0, 0), ("getppid",), (1000,)])
    assert got == [2, errno.EROFS, errno.EPERM, errno.ENOSYS]   # 1000: the kernel's own answer
    assert in_filtered_child(sp.policy(["seccomp=unconfined"], 0), [("getppid",)]) == [0, 0]
    assert sp.policy(["seccomp=unconfined"], 0).program is None
    assert sp.policy([], 0, privileged=True).program is None


def test_security_opt_as_docker_reads_it():
    assert sp.parse_options([]) == ("", False)
    assert sp.parse_options(["seccomp=unconfined", "no-new-privileges"]) == ("unconfined", True)
    assert sp.parse_options(["seccomp:builtin", "no-new-privileges=true"]) == ("", True)
    assert sp.parse_options(["no-new-privileges=1", "no-new-privileges=false"]) == ("", False)
    assert sp.parse_options(["apparmor=unconfined", "label=disable"]) == ("", False)
    for bad, line in (("nope", 'invalid --security-opt 1: "nope"'),
                      ("a=b", 'invalid --security-opt 2: "a=b"'),
                      ("no-new-privileges=yes", 'invalid --security-opt 2: "no-new-privileges=yes"')):
        with pytest.raises(SandboxError) as e:
            sp.parse_options([bad])
        assert str(e.value) == line
    with pytest.raises(SandboxError, match='Invalid --security-opt: "seccomp="'):
        sp.cli_options(["seccomp="])


@pytest.mark.parametrize("text, words", [
    ('{"defaultAction": 1', "compacting json"),
    ('[]', "not a JSON object"),
    ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"]}]}', "no action given"),
    ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": '
     '"SCMP_ACT_ERRNO", "args": [{"index": 9, "value": 1, "op": "SCMP_CMP_EQ"}]}]}', "index 9"),
    ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": '
     '"SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ODD"}]}]}', "SCMP_CMP_ODD"),
    ('{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"], '
     '"archMap": [{"architecture": "SCMP_ARCH_X86_64"}]}', "use either"),
])
def test_bad_profiles_are_one_line(tmp_path, cache_dir, text, words):
    f = tmp_path / "bad.json"
    f.write_text(text)
    with pytest.raises(SandboxError) as e:
        sp.cli_options([f"seccomp={f}"])
    assert words in str(e.value) and "\n" not in str(e.value)
    assert not cache_dir.exists() or not os.listdir(cache_dir)


def test_cached_program_is_read_without_the_binding_and_a_corrupt_one_is_rebuilt(cache_dir):
    first = sp.policy([], caps.DEFAULT_CAP_MASK).program
    files = os.listdir(cache_dir)
    assert len(files) == 1 and files[0].endswith(".bpf")
    path = cache_dir / files[0]
    probe = (f"import sys; sys.path.insert(0, {str(REPO)!r}); from runtime.seccomp import policy as sp; "
             f"sp.CACHE_DIR = {str(cache_dir)!r}; from runtime import caps; "
             "p = sp.policy([], caps.DEFAULT_CAP_MASK); "
             "print(len(p.program), sorted(m for m in sys.modules if m.startswith('runtime.seccomp')), "
             "'json' in sys.modules)")
    out = subprocess.run([sys.executable, "-S", "-c", probe], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout.split(" ", 1)
    assert int(out[0]) == len(first)
    assert out[1].strip() == "['runtime.seccomp', 'runtime.seccomp.policy'] False"

    for damage in (lambda b: b[:-3], lambda b: b[:32] + bytes(8) + b[40:], lambda b: b""):
        path.write_bytes(damage(path.read_bytes()))
        assert sp.read_cached(str(path)) is None
        assert sp.policy([], caps.DEFAULT_CAP_MASK).program == first     # compiled again
        assert sp.read_cached(str(path)) == first                        # and kept whole
    assert in_filtered_child(sp.policy([], caps.DEFAULT_CAP_MASK), [("getppid",)]) == [2, 0]
