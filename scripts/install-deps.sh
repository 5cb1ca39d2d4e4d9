#!/usr/bin/env bash
# Installs the Debian packages retools needs that are missing. Idempotent.
# As root it runs apt-get; otherwise it prints the exact command to run.
set -euo pipefail

# Build: compiler, CMake, libraries. Tests: redis-server (also Sentinel), redis-cli
# (Cluster set-up), openssl (test certificates), python3 with redis-py (the
# cross-language checks), chromium (the dashboard in a real browser), clang
# with libFuzzer (fuzz targets), lua5.1 (luac5.1 parses the Lua scripts as the
# Lua that Redis runs).
packages=(cmake ninja-build g++ pkg-config libhiredis-dev libfmt-dev nlohmann-json3-dev libssl-dev
          libcpp-httplib-dev libgtest-dev libgmock-dev libbenchmark-dev
          redis-server redis-tools openssl python3 python3-redis chromium
          clang libfuzzer-14-dev libclang-rt-14-dev lua5.1 ccache)
packages+=("$@")  # extra packages a caller needs (e.g. benchmark peers)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

cmd=(apt-get install -y --no-install-recommends "${missing[@]}")
if [ "$(id -u)" -ne 0 ]; then
  echo "retools needs: ${missing[*]}" >&2
  echo "run: sudo apt-get update && sudo ${cmd[*]}" >&2
  exit 1
fi
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
"${cmd[@]}" >/dev/null
