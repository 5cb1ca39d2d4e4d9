#!/usr/bin/env bash
# Quick start 1: install what is missing, build, run the demo against a private redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target demo
scripts/redis-sandbox.sh build/release/examples/demo
