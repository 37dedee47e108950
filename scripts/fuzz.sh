#!/usr/bin/env bash
# `make fuzz`: the cargo-fuzz targets of pilot (config directory, ADS
# requests), of mixer (compressed attributes, expressions, Envoy's
# AttributeContext), of statsd-bridge
# (statsd datagrams, mapping configs), of citadel (CSRs), of the
# injector (AdmissionReview bodies) and of galley (AdmissionReview bodies,
# MCP requests and resource bodies), each for
# FUZZ_SECONDS (30 by default). Installs cargo-fuzz when missing. cargo-fuzz
# needs nightly flags; RUSTC_BOOTSTRAP lets the one stable toolchain here
# accept them. Each crate's fuzz directory is a workspace of its own. The
# corpora grow under the target directory; the config-directory target starts
# from the repository's own YAML, the others from their fuzz/seeds
# directories.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds="${FUZZ_SECONDS:-30}"
target_dir="${CARGO_TARGET_DIR:-$root/target}/../fuzz-target"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz" >&2
  cargo install --locked cargo-fuzz >&2
fi
export RUSTC_BOOTSTRAP=1
mkdir -p "$target_dir/corpus/config_dir" "$target_dir/corpus/ads_request" \
  "$target_dir/corpus/attributes" "$target_dir/corpus/expression" "$target_dir/corpus/attribute_context" \
  "$target_dir/corpus/line" "$target_dir/corpus/mapping_config" "$target_dir/corpus/csr" "$target_dir/corpus/review" \
  "$target_dir/corpus/admission" "$target_dir/corpus/mcp"
# run CRATE NAME [SEED_DIR...]: one target of CRATE/fuzz.
run() {
  local crate=$1 name=$2
  shift 2
  echo "== fuzz $name for ${seconds}s"
  local log
  log=$(mktemp)
  local status=0
  (cd "$root/$crate" &&
    cargo fuzz run --target-dir "$target_dir" "$name" "$target_dir/corpus/$name" "$@" \
      -- -max_total_time="$seconds" -print_final_stats=1) >"$log" 2>&1 || status=$?
  grep -E '^(Done|stat::number_of_executed_units)' "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 60 "$log" >&2
    echo "fuzz $name failed (exit $status); the input is under $crate/fuzz/artifacts/$name" >&2
    exit 1
  fi
  rm -f "$log"
}
run pilot config_dir "$root/pilot/tests/golden" "$root/samples/demo"
run pilot ads_request
run mixer attributes "$root/mixer/fuzz/seeds/attributes"
run mixer expression "$root/mixer/fuzz/seeds/expression"
run mixer attribute_context "$root/mixer/fuzz/seeds/attribute_context"
run statsd-bridge line "$root/statsd-bridge/fuzz/seeds/line"
run statsd-bridge mapping_config "$root/statsd-bridge/fuzz/seeds/mapping_config" "$root/bench/config"
run citadel csr "$root/citadel/fuzz/seeds/csr"
run injector review "$root/injector/fuzz/seeds/review"
run galley admission "$root/galley/fuzz/seeds/admission"
run galley mcp
