#!/usr/bin/env bash
# The threaded tests under ThreadSanitizer: decoders sharing a model from
# several threads (tables in RAM and on disk), the prefetcher, the disk
# tiers, the trainer's disk tier and the signal tests. OpenMP runs one thread
# (libgomp is not instrumented, so its own synchronisation would be reported);
# the threads under test are stem's (callers, prefetchers, the batch
# generator's scheduler and the readers of its streams, the signal
# receiver, and the server's HTTP threads under the load test). Not part of
# CI for time (a full TSan build is ~15 min on 2 cores).
# Usage: scripts/tsan_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cmake --preset tsan > /dev/null
cmake --build build-tsan -j "$(nproc)" --target stem_tests
export OMP_NUM_THREADS=1 TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1"
build-tsan/tests/stem_tests --gtest_filter='Generate.*:BatchDecoder.*:*BatchGenerate.*:BatchGenerator.Cancel*:TierErrors.*:TierLogits.*:TrainTablesOnDisk.SameLosses*:Signals.NoHandler*:Signals.Second*:Serve.*'
