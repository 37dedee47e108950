#!/usr/bin/env bash
# `make fuzz`: the cargo-fuzz targets of pilot, each for FUZZ_SECONDS (30 by
# default). Installs cargo-fuzz when missing. cargo-fuzz needs nightly flags;
# RUSTC_BOOTSTRAP lets the one stable toolchain here accept them. The corpus
# grows under the target directory; the config-directory target starts from
# the repository's own YAML.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds="${FUZZ_SECONDS:-30}"
target_dir="${CARGO_TARGET_DIR:-$root/target}/../fuzz-target"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz" >&2
  cargo install --locked cargo-fuzz >&2
fi
export RUSTC_BOOTSTRAP=1
cd "$root/pilot"
mkdir -p "$target_dir/corpus/config_dir" "$target_dir/corpus/ads_request"
run() {
  local name=$1
  shift
  echo "== fuzz $name for ${seconds}s"
  local log
  log=$(mktemp)
  local status=0
  cargo fuzz run --target-dir "$target_dir" "$name" "$target_dir/corpus/$name" "$@" \
    -- -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 || status=$?
  grep -E '^(Done|stat::number_of_executed_units)' "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 60 "$log" >&2
    echo "fuzz $name failed (exit $status); the input is under pilot/fuzz/artifacts/$name" >&2
    exit 1
  fi
  rm -f "$log"
}
run config_dir "$root/pilot/tests/golden" "$root/samples/demo"
run ads_request
