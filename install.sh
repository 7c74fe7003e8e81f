#!/usr/bin/env bash
# Install pybuild on Debian (as root) with everything it needs: the Debian packages it drives,
# a virtualenv with its Python dependencies, `pybuild` on PATH, and the busybox base image that
# fixtures build FROM. Idempotent: a second run only checks. `--test` adds what the tests use.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

pkgs=(busybox-static git iproute2 iptables libseccomp2 openssh-client skopeo umoci)
if [ "${1:-}" = "--test" ]; then
  pkgs+=(apache2-utils docker-registry docker.io gcc hyperfine libc6-dev mmdebstrap podman zstd)
fi
python3 -c 'import ensurepip, venv' 2>/dev/null || pkgs+=(python3-venv)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
extra=""
[ "${1:-}" = "--test" ] && extra="[test]"
.venv/bin/python -m pip install -q --disable-pip-version-check --config-settings editable_mode=compat -e ".${extra}"
# pip's console-script wrapper imports re (~7 ms) before pybuild starts and `site` costs ~5 ms
# more; start-up is a hot path (a fully cached rebuild, `pybuild run`), so PATH gets a plain
# launcher on `python -I -S` that puts the project and the venv's packages on sys.path itself
# and loads the project's modules from an index of their compiled code (builder/launcher.py;
# an edited source falls back to the normal import, rerun install.sh to index it again).
.venv/bin/python -m builder.launcher "$here/.venv/bin/pybuild-launcher" >/dev/null
ln -sf "$here/.venv/bin/pybuild-launcher" /usr/local/bin/pybuild

# The base image that demos and tests build FROM, made from the host's busybox-static.
if [ -f fixtures/busybox.py ]; then
  .venv/bin/python fixtures/busybox.py
fi
