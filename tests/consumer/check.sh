#!/usr/bin/env bash
# Builds tests/consumer against retools, either installed (find_package and
# pkg-config) or embedded (add_subdirectory): check.sh MODE SOURCE_DIR BUILD_DIR WORK_DIR
set -euo pipefail
mode=$1 src=$2 build=$3 work=$4
rm -rf "$work" && mkdir -p "$work"
if [ "$mode" = find_package ]; then
  cmake --install "$build" --prefix "$work/prefix" >/dev/null
  cmake -S "$src/tests/consumer" -B "$work/build" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
  # The internal hiredis target stays internal.
  if grep -rq retools_hiredis "$work/prefix/lib/cmake/retools"; then
    echo "the installed package exports retools_hiredis" >&2
    exit 1
  fi
  # pkg-config: the consumer's flags choose the language standard.
  export PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig"
  cflags=$(pkg-config --cflags retools)
  libs=$(pkg-config --libs --static retools)
  echo "pkg-config: $cflags $libs"
  case " $cflags " in *" -std="*) echo "retools.pc forces a language standard: $cflags" >&2; exit 1 ;; esac
  # shellcheck disable=SC2086  # flags are words
  ${CXX:-c++} -std=c++20 "$src/tests/consumer/main.cpp" -o "$work/consumer-pkg-config" $cflags $libs
  "$work/consumer-pkg-config"
else
  # A unity build, like the other test trees: compiling every library source
  # on its own again would double this test's time (the release preset does).
  cmake -S "$src/tests/consumer" -B "$work/build" -G Ninja -DRETOOLS_CONSUMER_MODE=add_subdirectory \
    -DRETOOLS_SOURCE_DIR="$src" -DCMAKE_UNITY_BUILD=ON >/dev/null
fi
cmake --build "$work/build" -j2 >/dev/null
"$work/build/consumer"
echo "consumer ($mode) built and ran"
