#!/usr/bin/env bash
# `make test`: Envoy into the project venv; Redis, Prometheus and PostgreSQL when missing; one build
# of every binary, then every test. Ends with one line totalling all test binaries,
# whether they passed or not, and fails when any test did.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
envoy=$(scripts/envoy.sh)
export TRIREME_REDIS
TRIREME_REDIS=$(scripts/redis.sh)
export TRIREME_PROMETHEUS
TRIREME_PROMETHEUS=$(scripts/prometheus.sh)
export TRIREME_PG_BIN
TRIREME_PG_BIN=$(scripts/postgres.sh)
# The capture test runs iptables and curl inside network namespaces it makes.
for need in iptables-restore:iptables curl:curl; do
  if ! command -v "${need%%:*}" >/dev/null; then
    echo "installing ${need#*:} from apt" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need#*:}" >&2 ||
      { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need#*:}" >&2; }
  fi
done
cargo build --workspace --bins
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
TRIREME_ENVOY="$envoy" cargo test --workspace --lib --bins --tests 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i == "passed;") p += $(i - 1); if ($i == "failed;") f += $(i - 1) } }
     END { printf "all tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
