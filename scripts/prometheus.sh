#!/usr/bin/env bash
# Prints the path of a Prometheus server the tests may run (Debian's
# `prometheus`), installing it from apt when missing. Nothing is started here:
# each test runs its own, scraping what it started.
set -euo pipefail
if [ -n "${TRIREME_PROMETHEUS:-}" ]; then
  echo "$TRIREME_PROMETHEUS"
  exit 0
fi
if ! command -v prometheus >/dev/null; then
  echo "installing prometheus from apt" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus >&2 ||
    { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus >&2; }
fi
command -v prometheus
