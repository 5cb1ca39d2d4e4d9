#!/usr/bin/env bash
# Quick start 2: install what is missing, build and run the whole test suite.
#   scripts/test.sh [PRESET]   PRESET: dev (default), release, asan, tsan
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-dev}
scripts/install-deps.sh
cmake --preset "$preset"
cmake --build --preset "$preset"
ctest --preset "$preset"
