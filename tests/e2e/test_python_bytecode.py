"""Issue 12's check with a real Python: a Debian bookworm image with python3 and pip (made by
mmdebstrap, cached in /var/cache/pybuild-tests), a RUN that `pip install`s a pure-Python wheel
made here (no network), the image saved, loaded into a private dockerd and run there with
`python3 -v -c 'import PKG'`: the .pyc pip wrote must be used, not found stale (pip byte-compiles
with py_compile, which writes checked-hash .pyc when SOURCE_DATE_EPOCH is set, as it is in every
RUN; before issue 12 the layer's clamped mtimes made every one stale). And the same image from two
store roots, built under different hostnames and umasks, has one ID. One test (~30 s: loading
the 245 MB Debian image twice and into docker is most of it)."""
from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import debian_fixture
import pytest
from busybox_fixture import run_pybuild
from e2e_helpers import ok

SKIP = debian_fixture.skip_reason(debian_fixture.PYTHON)
pytestmark = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")

PKG = "pbhello"


def make_wheel(where: Path) -> Path:
    """A pure-Python wheel (two modules), written by hand as the wheel spec says."""
    files = {f"{PKG}/__init__.py": "from .greet import greet\n",
             f"{PKG}/greet.py": "def greet():\n    return 'hello from a wheel'\n",
             f"{PKG}-1.0.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {PKG}\nVersion: 1.0\n",
             f"{PKG}-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\n"
                                            "Root-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{name},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{PKG}-1.0.dist-info/RECORD,,")
    files[f"{PKG}-1.0.dist-info/RECORD"] = "\n".join(record) + "\n"
    wheel = where / f"{PKG}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for name, text in files.items():
            z.writestr(zipfile.ZipInfo(name, (2023, 1, 1, 0, 0, 0)), text)
    return wheel


def cli(root: Path, *args: str, umask: int = 0o022, hostname: str | None = None):
    """pybuild with its own store root, umask and (in a new UTS namespace) hostname."""
    env = {**os.environ, "PYBUILD_ROOT": str(root)}
    env.pop("SOURCE_DATE_EPOCH", None)
    cmd = [os.sys.executable, "-m", "builder", *args]
    if hostname:
        cmd = ["unshare", "--uts", "sh", "-c", f'hostname {hostname} && exec "$@"', "sh", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=600,
                          cwd=run_pybuild.__globals__["REPO"], preexec_fn=lambda: os.umask(umask))


def test_pip_installed_bytecode_is_fresh_in_docker_and_the_image_is_reproducible(tmp_path, dockerd):
    # the base layer gzipped (cached): the save below copies its blob instead of compressing it
    layout = debian_fixture.make_layout(tmp_path / "layout", "py", include=debian_fixture.PYTHON,
                                        gzip=True)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    make_wheel(ctx)
    (ctx / "Dockerfile").write_text(
        "FROM debian:py\n"
        f"COPY {PKG}-1.0-py3-none-any.whl /tmp/\n"
        "RUN python3 -m pip install --no-index --no-cache-dir --disable-pip-version-check"
        f" --break-system-packages /tmp/{PKG}-1.0-py3-none-any.whl && rm /tmp/*.whl\n"
        f"CMD [\"python3\", \"-c\", \"import {PKG}; print({PKG}.greet())\"]\n")
    archive = tmp_path / "pyapp.tar"

    def build(n: int, umask: int, host: str | None) -> str:
        """Load the base into store root n, build there; root0 also saves the image (its gzip
        of the 245 MB base layer is most of the time, so it runs beside root1's build)."""
        root = tmp_path / f"root{n}"
        image_id = ok(cli(root, "load", "-i", str(layout))).stdout.split()[-1]
        ok(cli(root, "tag", image_id, "debian:py"))
        r = ok(cli(root, "build", "-q", "-t", "pyapp", str(ctx), umask=umask, hostname=host))
        if n == 0:
            ok(cli(root, "save", "-o", str(archive), "pyapp"))
        return r.stdout.strip()

    # the two store roots share nothing: built at the same time (2 cores), as two machines would
    with ThreadPoolExecutor(2) as pool:
        ids = [f.result() for f in [pool.submit(build, 0, 0o022, None),
                                    pool.submit(build, 1, 0o077, "elsewhere")]]
    assert ids[0] == ids[1], "two store roots, hostnames and umasks gave two images"
    ok(subprocess.run([*dockerd, "load", "-i", str(archive)], capture_output=True, text=True,
                      check=False))
    r = subprocess.run([*dockerd, "run", "--rm", "--network", "none", "pyapp:latest", "python3",
                        "-v", "-c", f"import {PKG}.greet"], capture_output=True, text=True,
                       check=False, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stderr.splitlines()
    assert not [ln for ln in lines if "bytecode is stale" in ln], r.stderr[-3000:]
    used = [ln for ln in lines if ln.startswith("# code object from") and f"/{PKG}/" in ln]
    assert len(used) == 2, "\n".join(ln for ln in lines if PKG in ln)
    assert ok(subprocess.run([*dockerd, "run", "--rm", "--network", "none", "pyapp:latest"],
                             capture_output=True, text=True, check=False)).stdout == \
        "hello from a wheel\n"
