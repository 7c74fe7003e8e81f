#!/usr/bin/env bash
# Run pybuild's whole test suite on a Debian machine as root: installs what the tests need
# (skopeo, umoci, docker-registry, docker.io, podman, mmdebstrap, htpasswd, ...) and then runs pytest. Tests start and stop
# their own servers (registry, dockerd) and use throw-away store roots.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
./install.sh --test
exec .venv/bin/python -m pytest -q "$@"
