#!/usr/bin/env bash
# The main job: installs the dependencies, builds, then runs `stem demo`.
# Usage: scripts/demo.sh [extra stem demo options]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake --preset release
cmake --build --preset release -j "$(nproc)"
if build/stem demo --help >/dev/null 2>&1; then
  exec build/stem demo "$@"
fi
# Until `stem demo` exists: make a small STEM model and show what it holds.
build/stem init --config configs/S-stem.json --out runs/S-stem --force
build/stem inspect --model runs/S-stem
