#!/usr/bin/env bash
# The main job: installs the dependencies (Debian 12 packages), builds in
# Release, then runs `stem demo` (dense and STEM twins trained on the built-in
# corpus, compared; report in runs/demo/report.html).
# Usage: scripts/demo.sh [stem demo options, e.g. --steps 300 --stem-layers every2]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake --preset release
cmake --build --preset release -j "$(nproc)" --target stem
exec build/stem demo "$@"
