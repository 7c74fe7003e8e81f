"""Session setup for pybuild-vs-BuildKit tests: the session's private dockerd (tests/conftest.py),
a private pybuild store holding busybox:latest, and the same busybox loaded into dockerd so both
builders start from the very same base image."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fslist import Image, read_archive

REPO = Path(__file__).resolve().parents[2]


class Builders:
    """Build one context with `DOCKER_BUILDKIT=1 docker build` and with `pybuild build`."""

    def __init__(self, cli: list[str], pb_root: Path, work: Path):
        self.cli, self.pb_root, self.work = cli, pb_root, work
        self.pb_env = dict(os.environ, PYBUILD_ROOT=str(pb_root))
        self.bk_env = dict(os.environ, DOCKER_BUILDKIT="1")
        self._features: dict[str, bool] = {}
        server = self.docker("version", "--format", "{{.Server.Version}}").stdout.strip()
        #: docker < 23 embeds BuildKit v0.8 and its Dockerfile frontend (1.2); pybuild follows
        #: current BuildKit where the two differ (history texts, --chmod on parents, ADD --chown)
        self.old = int(server.split(".")[0]) < 23

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run([*self.cli, *args], capture_output=True, text=True, env=self.bk_env,
                           timeout=180, check=False)
        if check:
            assert r.returncode == 0, f"docker {args[0]}: {r.stderr[-3000:]}"
        return r

    def pybuild(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "builder", *args], capture_output=True,
                              text=True, env=self.pb_env, cwd=REPO, timeout=180, check=False)

    def buildkit(self, ctx: Path, args: list[str]) -> Image:
        tag = f"interop/{uuid.uuid4().hex[:10]}"
        r = self.docker("build", "--network", "host", "--progress", "plain", "-t", tag, *args,
                        str(ctx), check=False)
        assert r.returncode == 0, f"BuildKit failed:\n{r.stderr[-3000:]}"
        out = self.work / f"{tag.replace('/', '-')}-bk.tar"
        self.docker("save", "-o", str(out), tag)
        try:
            return read_archive(out)
        finally:
            out.unlink()
            self.docker("rmi", tag, check=False)

    def ours(self, ctx: Path, args: list[str]) -> Image:
        tag = f"interop/{uuid.uuid4().hex[:10]}"
        r = self.pybuild("build", "--progress", "plain", "-t", tag, *args, str(ctx))
        assert r.returncode == 0, f"pybuild failed:\n{r.stderr[-3000:]}"
        out = self.work / f"{tag.replace('/', '-')}-pb.tar"
        r = self.pybuild("save", "-o", str(out), tag)
        assert r.returncode == 0, r.stderr
        try:
            return read_archive(out)
        finally:
            out.unlink()

    def both(self, ctx: Path, args: list[str]) -> tuple[Image, Image]:
        """(BuildKit's image, pybuild's image), built at the same time."""
        with ThreadPoolExecutor(2) as pool:
            bk = pool.submit(self.buildkit, ctx, args)
            pb = pool.submit(self.ours, ctx, args)
            return bk.result(), pb.result()

    def supports(self, feature: str, dockerfile: str) -> bool:
        """Whether this dockerd's built-in Dockerfile frontend accepts `dockerfile` (docker 20.10
        embeds BuildKit v0.8: no heredocs, no ${a#b} modifiers, and `# syntax=` images cannot be
        pulled offline)."""
        if feature not in self._features:
            ctx = Path(tempfile.mkdtemp(dir=self.work))
            (ctx / "Dockerfile").write_text(dockerfile)
            r = self.docker("build", "--network", "host", "-q", str(ctx), check=False)
            self._features[feature] = r.returncode == 0
            shutil.rmtree(ctx)
        return self._features[feature]


@pytest.fixture(scope="session")
def builders(dockerd, busybox_store, tmp_path_factory) -> Builders:
    work = tmp_path_factory.mktemp("interop")
    pb_root = work / "pbstore"
    # cp -a keeps owners and xattrs, which are part of a layer dir's content
    subprocess.run(["cp", "-a", str(busybox_store.root), str(pb_root)], check=True)
    b = Builders(dockerd, pb_root, work)
    bb = work / "busybox.tar"
    r = b.pybuild("save", "-o", str(bb), "busybox:latest")
    assert r.returncode == 0, r.stderr
    b.docker("load", "-i", str(bb))
    bb.unlink()
    yield b
    shutil.rmtree(work, ignore_errors=True)
