#!/usr/bin/env bash
# Installs the dependencies (Debian 12 packages), builds in Release, builds and
# runs examples/ against the installed library, and runs the whole test suite
# with ctest. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake --preset release
cmake --build --preset release -j "$(nproc)"
bash scripts/check_examples.sh build     # examples/ against the installed package
ctest --preset release -j "$(nproc)"
