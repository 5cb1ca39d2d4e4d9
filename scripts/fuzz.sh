#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan+UBSan: they live in the `asan`
# preset's tree, beside the sanitizer test build) and runs each for a bounded
# time over its seed corpus. Any crash, leak or sanitizer report fails the run.
#   scripts/fuzz.sh [SECONDS]   default 30 per target (fuzz_pickle gets twice that)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
scripts/install-deps.sh
cmake --preset asan >/dev/null
targets=(fuzz_reply fuzz_payload fuzz_pickle fuzz_url fuzz_cron)
cmake --build --preset asan --target "${targets[@]}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for name in "${targets[@]}"; do
  bin=build/asan/tests/fuzz/$name
  seeds="tests/fuzz/corpus/${name#fuzz_}"
  budget=$seconds
  [ "$name" = fuzz_pickle ] && budget=$((seconds * 2))
  mkdir -p "$work/$name"
  echo "::: $name for ${budget}s (seeds: $seeds)"
  # New inputs go to the scratch corpus; the checked-in seeds are only read.
  "$bin" -max_total_time="$budget" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$work/$name-" -print_final_stats=1 "$work/$name" "$seeds" 2>"$work/$name.log" || {
    tail -n 60 "$work/$name.log"; echo "$name: FAILED" >&2; exit 1; }
  grep -E '^stat::number_of_executed_units|^#[0-9]+.*DONE' "$work/$name.log" | tail -n 2 || true
  echo "$name: no crash"
done
