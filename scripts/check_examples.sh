#!/usr/bin/env bash
# The library as others use it: installs the build into a clean prefix, builds
# examples/ against that installed package alone (find_package(stem), and a
# pkg-config compile of one example), and runs both programs: train a tiny
# model for a few steps, then generate from it.
# Usage: scripts/check_examples.sh [BUILD_DIR]   (default build; after a build)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" > /dev/null
# Nothing under the prefix may include a header of the source tree.
if grep -rn '#include "' "$prefix/include" | grep -v '#include "stem/'; then
  echo "check_examples: an installed header includes a non-public header" >&2
  exit 1
fi
cmake -S examples -B "$prefix/build-examples" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" > /dev/null
cmake --build "$prefix/build-examples" > /dev/null
PKG_CONFIG_PATH="$prefix/lib/pkgconfig" c++ -O1 -o "$prefix/generate_pc" examples/generate_text.cpp \
  $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags --libs stem)
"$build/stem" prepare --input corpus/builtin/persuasion.txt --out "$prefix/data" --vocab-size 512 > /dev/null
"$prefix/build-examples/train_tiny" "$prefix/data" "$prefix/run" 8 | tail -n 2
"$prefix/build-examples/generate_text" "$prefix/run" "It was" 12
"$prefix/generate_pc" "$prefix/run" "It was" 12 > /dev/null
echo "check_examples: examples built against the installed package and ran"
