#!/usr/bin/env bash
# Decode's matrix-vector products against ggml's, the CPU kernels llama.cpp
# runs, on this machine, interleaved.
#
# What it does: builds ggml's test-backend-ops (CPU backend, -march=native)
# from a ggml source tree you provide, then for ROUNDS rounds times one
# 4096 x 14336 product with a single input row (a decode step's shape: 58.7M
# weights, from DRAM) in F32, F16, BF16 and Q8_0 with ggml, and in F32, BF16
# and Q8 with stem's kernels (build/bench/stem_microbench, BM_matvec_*
# /4096/14336, cold). Both use every core. It prints microseconds a product;
# compare the same round's numbers, since this machine's memory bandwidth
# moves between runs. Nothing is downloaded: no ggml tree, no run.
#
# Usage: scripts/bench_ggml.sh GGML_SOURCE_DIR [ROUNDS]   (default 3 rounds)
#   The ggml build goes to GGML_SOURCE_DIR/build-stem-bench.
set -euo pipefail

cd "$(dirname "$0")/.."
src=${1:?usage: scripts/bench_ggml.sh GGML_SOURCE_DIR [ROUNDS]}
rounds=${2:-3}
[[ -f $src/tests/test-backend-ops.cpp ]] || { echo "$src: not a ggml source tree (no tests/test-backend-ops.cpp)" >&2; exit 1; }
bench=build/bench/stem_microbench
[[ -x $bench ]] || { echo "no $bench: build stem first (cmake --preset release && cmake --build --preset release)" >&2; exit 1; }

gb=$src/build-stem-bench
if [[ ! -x $gb/bin/test-backend-ops ]]; then
  echo "building ggml's test-backend-ops in $gb" >&2
  cmake -S "$src" -B "$gb" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DGGML_BUILD_EXAMPLES=OFF \
    -DGGML_BUILD_TESTS=ON >"$gb.log" 2>&1 || { echo "ggml configure failed: $gb.log" >&2; exit 1; }
  cmake --build "$gb" -j"$(nproc)" --target test-backend-ops >>"$gb.log" 2>&1 ||
    { echo "ggml build failed: $gb.log" >&2; exit 1; }
fi

echo "| round | who | dtype | us a product |"
echo "|---|---|---|---|"
for ((r = 1; r <= rounds; r++)); do
  "$bench" --benchmark_filter='BM_matvec_(f32|bf16|q8)/4096/14336/1/' --benchmark_min_time=0.5 2>/dev/null |
    awk -v r="$r" '/^BM_matvec_/ { split($1, a, "/"); sub("BM_matvec_", "", a[1]); printf "| %d | stem | %s | %.0f |\n", r, a[1], $2 }'
  "$gb/bin/test-backend-ops" perf -o MUL_MAT -b CPU \
    -p 'type_a=(f32|f16|bf16|q8_0),type_b=f32,m=4096,n=1,k=14336,' 2>/dev/null |
    sed 's/\x1b\[[0-9;]*m//g' |
    awk -v r="$r" '/MUL_MAT\(type_a=/ { match($0, /type_a=[a-z0-9_]+/); t = substr($0, RSTART + 7, RLENGTH - 7);
                                         for (i = 1; i <= NF; i++) if ($(i + 1) == "us/run") printf "| %d | ggml | %s | %.0f |\n", r, t, $i }'
done
