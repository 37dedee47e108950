#!/usr/bin/env bash
# `make bench`, after the criterion benchmarks: the load tools against the real
# release binaries. Results go to docs/benchmarks.md by hand, with the machine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="${CARGO_TARGET_DIR:-$root/target}/release"
echo "== this machine: how often a busy core is taken away, per core (tails read against it)"
for cpu in $(seq 0 $(( $(nproc) - 1 ))); do
  if command -v taskset >/dev/null; then taskset -c "$cpu" "$bin/stall-probe" --duration 5; else "$bin/stall-probe" --duration 5; fi
done
echo "== allocations per generation (1000 services x 10 endpoints)"
cargo bench -p pilot --bench allocations 2>/dev/null | grep -v '^$'
echo "== ADS load: 100 simulated sidecars against pilot-discovery"
"$bin/ads-load" --services 1000 --endpoints 10 --clients 100
echo "== config edit -> real Envoy updated"
"$bin/convergence" --edits 100
echo "== Mixer policy: expressions, attribute decoding, dispatcher (criterion)"
cargo bench -p mixer --bench expr 2>/dev/null | grep -v '^$'
echo "== Mixer policy: Check load against mixer-policy (20 rules)"
# mixer-policy on one core, the load tool on the other, where there are two.
pin_tool=() pin_server=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  pin_tool=(taskset -c 1) pin_server=(--server-cpus 0)
fi
"${pin_tool[@]}" "$bin/check-load" "${pin_server[@]}"
"${pin_tool[@]}" "$bin/check-load" "${pin_server[@]}" --hit-ratio 0.8
echo "== Mixer policy: the same load against check-floor, which admits every Check unread"
"${pin_tool[@]}" "$bin/check-load" "${pin_server[@]}" --floor
echo "== Mixer policy: latency added through real Envoy"
"$bin/policy-latency"
echo "== Mixer telemetry: Report and access-log ingestion on one core"
"${pin_tool[@]}" "$bin/report-load" "${pin_server[@]}"
echo "== Mixer telemetry: CPU per 1,000 mesh requests/s through real Envoy"
"$bin/telemetry-cost"
"$bin/telemetry-cost" --access-log
echo "== statsd-bridge: Envoy-like statsd over UDP, lines per CPU-second"
"${pin_tool[@]}" "$bin/statsd-load" "${pin_server[@]}"
echo "== statsd-bridge: 100,000 series for 10 minutes, memory sampled"
"${pin_tool[@]}" "$bin/statsd-load" "${pin_server[@]}" --soak 600
echo "== Citadel: signing alone (criterion), then CSRs through the real citadel beside openssl speed"
cargo bench -p citadel --bench sign 2>/dev/null | grep -v '^$'
"${pin_tool[@]}" "$bin/csr-load" "${pin_server[@]}"
echo "== mutual TLS: latency added through real Envoys, pooled and one connection per request"
"$bin/mtls-latency"
"$bin/mtls-latency" --new-connections
echo "== sidecar injector: admissions over HTTPS, and kube-inject of 1,000 documents"
cargo bench -p injector --bench inject 2>/dev/null | grep -v '^$'
# The injector on one core, then sharing both with the load tool.
"${pin_tool[@]}" "$bin/inject-load" "${pin_server[@]}"
"$bin/inject-load" --documents 10
echo "== Galley: validations (criterion), the webhook over HTTPS, MCP to 10 sinks, edit -> Envoy through Galley"
cargo bench -p galley --bench validate 2>/dev/null | grep -v '^$'
"$bin/galley-load"
"$bin/convergence" --galley --change vs --edits 100
