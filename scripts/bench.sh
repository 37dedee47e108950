#!/usr/bin/env bash
# `make bench`, after the criterion benchmarks: the load tools against the real
# release binaries. Results go to docs/benchmarks.md by hand, with the machine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="${CARGO_TARGET_DIR:-$root/target}/release"
echo "== allocations per generation (1000 services x 10 endpoints)"
cargo bench -p pilot --bench allocations 2>/dev/null | grep -v '^$'
echo "== ADS load: 100 simulated sidecars against pilot-discovery"
"$bin/ads-load" --services 1000 --endpoints 10 --clients 100
echo "== config edit -> real Envoy updated"
"$bin/convergence" --edits 100
