"""ARG values in scope, as docker 20.10's BuildKit has them: a stage built on another keeps the
ARGs that stage declared, and a bare `ARG NAME` there takes the global default or else keeps the
inherited value (it does not clear it). Compared with the private dockerd on one Dockerfile."""
import os
import re
import subprocess

DOCKERFILE = """\
ARG GLOBAL=g
ARG EMPTYG
FROM busybox AS base
ARG G=hello
ARG H=h1
ARG GLOBAL
ARG EMPTYG
RUN echo "base G=$G H=$H GLOBAL=$GLOBAL E=${EMPTYG-unset} B=${B-unset}"
FROM base AS child
ARG G
ARG H=h2
ARG GLOBAL
ARG B
RUN echo "child G=$G H=$H GLOBAL=$GLOBAL E=${EMPTYG-unset} B=${B-unset}"
FROM base AS child2
RUN echo "child2 G=$G H=$H GLOBAL=$GLOBAL B=${B-unset}"
FROM child
COPY --from=child2 /bin/true /t
"""


def echoed(text: str) -> list[str]:
    """The RUNs' own output lines ("#N 0.123 base G=..."), without the step numbers and times."""
    return sorted({m.group(1) for m in re.finditer(r"^#\d+ \d+\.\d+ (\w+ G=.*)$", text, re.M)})


def test_stage_args_as_buildkit(docker_busybox, busybox_root, pybuild, tmp_path):
    (tmp_path / "Dockerfile").write_text(DOCKERFILE)
    for extra in ([], ["--build-arg", "G=cli", "--build-arg", "B=b"]):
        theirs = subprocess.run([*docker_busybox, "build", "--no-cache", "--network", "host",
                                 "--progress", "plain", *extra, str(tmp_path)],
                                capture_output=True, text=True, check=False, timeout=300,
                                env={**os.environ, "DOCKER_BUILDKIT": "1"})
        assert theirs.returncode == 0, theirs.stderr[-2000:]
        ours = pybuild("build", "--no-cache", "--progress", "plain", *extra, str(tmp_path))
        assert ours.returncode == 0, ours.stderr[-2000:]
        want = echoed(theirs.stderr)
        assert len(want) == 3, theirs.stderr[-2000:]
        assert echoed(ours.stderr) == want
