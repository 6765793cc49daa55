#!/usr/bin/env bash
# The tests under sanitizers, as CI runs them after the release suite:
#   asan  the whole suite under AddressSanitizer + UndefinedBehaviorSanitizer
#         (leaks included; tests/sanitizers/lsan.supp lists what Open MPI and
#         CPython keep until exit), the Python module with the ASan runtime
#         preloaded;
#   tsan  the threaded tests under ThreadSanitizer: decoders sharing a model,
#         the batch generator and its streams, the prefetcher and disk tiers,
#         the trainer's disk tier, the signal thread and the server under its
#         load test. OpenMP runs one thread there (libgomp is not
#         instrumented); the threads under test are stem's own.
# Both build with the Sanitize build type (-O1, line tables). On 2 cores:
# tsan about 6 min to build the tests and 2 min to run them; asan about 15
# min to build everything and 6 min to run the suite.
# Usage: scripts/sanitize_check.sh [asan|tsan|all]   (default all)
set -euo pipefail
cd "$(dirname "$0")/.."
jobs="$(nproc)"
run() {
  local preset="$1" target="$2"
  echo "== $preset: configure and build ($target)"
  cmake --preset "$preset" > /dev/null
  cmake --build --preset "$preset" -j "$jobs" --target "$target"
  echo "== $preset: tests"
  ctest --preset "$preset" -j "$jobs"
}
case "${1:-all}" in
  asan) run asan all ;;
  tsan) run tsan stem_tests ;;
  all) run tsan stem_tests; run asan all ;;
  *) echo "sanitize_check.sh: expected asan, tsan or all, got '$1'" >&2; exit 2 ;;
esac
