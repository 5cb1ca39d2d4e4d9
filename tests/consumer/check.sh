#!/usr/bin/env bash
# Builds tests/consumer against retools, either installed (find_package and
# pkg-config) or embedded (add_subdirectory): check.sh MODE SOURCE_DIR BUILD_DIR WORK_DIR
set -euo pipefail
mode=$1 src=$2 build=$3 work=$4
rm -rf "$work" && mkdir -p "$work"
if [ "$mode" = find_package ]; then
  cmake --install "$build" --prefix "$work/prefix" >/dev/null
  cmake -S "$src/tests/consumer" -B "$work/build" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
  PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig" pkg-config --cflags --libs retools
else
  cmake -S "$src/tests/consumer" -B "$work/build" -G Ninja -DRETOOLS_CONSUMER_MODE=add_subdirectory \
    -DRETOOLS_SOURCE_DIR="$src" >/dev/null
fi
cmake --build "$work/build" -j2 >/dev/null
"$work/build/consumer"
echo "consumer ($mode) built and ran"
