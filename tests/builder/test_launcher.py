"""The launcher install.sh puts on PATH (builder.launcher): it runs pybuild on `python -I -S`,
the project's modules come from its index, and an index that no longer matches the sources
(an edit, a new or removed module, another interpreter's file, garbage) falls back to the
normal import without changing what runs."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig

import pytest
from busybox_fixture import REPO

from builder import launcher
from cache.version import VERSION

SITE = sysconfig.get_paths()["purelib"]


def probe(repo, index, code: str) -> list[str]:
    """Run `code` on `python -I -S` with repo first on sys.path and the index installed (its
    result printed first); the words it prints."""
    script = (f"import sys\nsys.path[:0] = [{str(repo)!r}, {str(REPO)!r}]\n"
              f"from builder.launcher import install\nprint(install({str(index)!r}))\n{code}")
    r = subprocess.run([sys.executable, "-I", "-S", "-c", script], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_the_launcher_runs_pybuild_with_its_modules_from_the_index(tmp_path):
    script = tmp_path / "pybuild"
    n = launcher.write(str(script), sys.executable, str(REPO), [SITE])
    assert n > 100 and os.access(script, os.X_OK)
    r = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (0, f"pybuild {VERSION}\n", "")
    words = probe(REPO, f"{script}.index",
                  "import runtime.kernel as k, runtime.seccomp as s\n"
                  "print(type(k.__spec__.loader).__name__, k.__file__, s.__path__[0])")
    assert words == ["True", "_Finder", str(REPO / "runtime" / "kernel.py"),
                     str(REPO / "runtime" / "seccomp")]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: run pytest as root (namespaces, "
                                                "overlayfs, cgroups)")
def test_the_launcher_runs_a_container(tmp_path, busybox_root):
    """`pybuild run` as a user starts it: through the launcher, its modules from the index."""
    script = tmp_path / "pybuild"
    launcher.write(str(script), sys.executable, str(REPO), [SITE])
    r = subprocess.run([str(script), "run", "--rm", "--network", "none", "busybox", "echo", "hi"],
                       capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stdout, r.stderr) == (0, "hi\n", "")


@pytest.fixture
def fake_repo(tmp_path):
    """A checkout with one package of the index's (`grammar`) holding two small modules."""
    repo = tmp_path / "repo"
    (repo / "grammar").mkdir(parents=True)
    (repo / "grammar" / "__init__.py").write_text("")
    (repo / "grammar" / "one.py").write_text("VALUE = 1\n")
    (repo / "grammar" / "two.py").write_text("VALUE = 2\n")
    index = tmp_path / "index"
    assert launcher.build(str(repo), str(index)) == 3
    return repo, index


SHOW = ("import grammar.one as m\n"
        "print(m.VALUE, type(m.__spec__.loader).__name__)\n")


def test_an_edited_module_is_imported_from_its_source(fake_repo):
    repo, index = fake_repo
    assert probe(repo, index, SHOW) == ["True", "1", "_Finder"]
    (repo / "grammar" / "one.py").write_text("VALUE = 11\n")          # another size
    assert probe(repo, index, SHOW) == ["True", "11", "SourceFileLoader"]
    (repo / "grammar" / "one.py").write_text("VALUE = 3\n")           # the same size, newer
    st = os.stat(repo / "grammar" / "one.py")
    os.utime(repo / "grammar" / "one.py", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert probe(repo, index, SHOW) == ["True", "3", "SourceFileLoader"]
    assert probe(repo, index, "import grammar.two as t\nprint(t.VALUE)") == ["True", "2"]


def test_a_new_or_removed_module_is_the_import_system_s(fake_repo):
    repo, index = fake_repo
    (repo / "grammar" / "three.py").write_text("VALUE = 3\n")
    (repo / "grammar" / "two.py").unlink()
    code = ("import grammar.three as t\nprint(t.VALUE, type(t.__spec__.loader).__name__)\n"
            "try:\n    import grammar.two\nexcept ModuleNotFoundError as e:\n    print(e.name)\n")
    assert probe(repo, index, code) == ["True", "3", "SourceFileLoader", "grammar.two"]


@pytest.mark.parametrize("content", [b"", b"garbage", b"\0" * 64, None])
def test_an_unusable_index_is_ignored(fake_repo, content):
    """Missing, empty, garbage or another interpreter's (magic number) index: install says no
    and everything imports normally."""
    repo, index = fake_repo
    if content is None:
        index.unlink()
    else:
        index.write_bytes(content)
    assert probe(repo, index, SHOW) == ["False", "1", "SourceFileLoader"]
