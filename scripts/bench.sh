#!/usr/bin/env bash
# Benchmarks: builds the release preset and runs every benchmark against one
# private redis-server — retools, the raw-hiredis floor beside each operation,
# and the peers (redis-py, dogpile.cache, RQ, Sidekiq) — then prints the table
# and writes it as Markdown to build/release/bench-results.md.
#   scripts/bench.sh            full run (several minutes; medians of alternating rounds)
#   scripts/bench.sh --smoke    tiny counts, one round: checks that everything works (CI);
#                               it uses the dev build (built by scripts/test.sh), as
#                               timings are not read, and builds nothing new there
# Other arguments go to retools-bench (e.g. --rounds 3, --only worker, --no-peers).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
# Peers come from Debian packages; one that cannot be installed is reported as
# missing in the table, so a failure here does not stop the run.
scripts/install-deps.sh python3-redis python3-dogpile.cache python3-rq ruby-sidekiq ||
  echo "bench.sh: some peer packages are not installed; the table marks them missing" >&2

preset=release
[ "${1:-}" = --smoke ] && preset=dev
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset" --target retools-bench -j "${RETOOLS_BUILD_JOBS:-2}"
out=build/$preset/bench-results.md
"build/$preset/tests/bench/retools-bench" --markdown "$out" "$@"
