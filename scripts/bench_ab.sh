#!/usr/bin/env bash
# Throughput of two stem builds, A and B, measured interleaved on the same
# machine: ROUNDS rounds, each running every benchmark once on A and once on
# B, the order flipping every round, so that drifts of a noisy machine fall
# on both. Prints one line per benchmark: every round's tokens/s of A and of
# B, the medians and B's change in percent.
#
# The benchmarks: `bench train` of M-stem and M-dense (batch 4 x seq 512,
# 5 steps after a warm-up step) and `bench decode` of the S-shape models that
# scripts/bench_decode.sh makes (DIR/decode-S-dense, DIR/decode-S-stem).
#
# Usage: scripts/bench_ab.sh A_STEM B_STEM [ROUNDS] [DIR]   (default 6, runs/bench-decode)
set -euo pipefail
cd "$(dirname "$0")/.."
A=$1 B=$2 ROUNDS=${3:-6} DIR=${4:-runs/bench-decode}
for m in decode-S-dense decode-S-stem; do
  [[ -d $DIR/$m ]] || build/stem init --config "configs/${m}.json" --out "$DIR/$m" > /dev/null
done
names=(train-M-stem train-M-dense decode-S-dense decode-S-stem)
args=("bench train --config configs/M-stem.json --batch 4 --seq 512 --steps 5 --warmup 1 --no-peak --json"
      "bench train --config configs/M-dense.json --batch 4 --seq 512 --steps 5 --warmup 1 --no-peak --json"
      "bench decode --model $DIR/decode-S-dense --json"
      "bench decode --model $DIR/decode-S-stem --json")
tps() {  # binary, args -> tokens/s
  "$1" $2 2> /dev/null | /usr/bin/python3 -c 'import json,sys; print(round(json.load(sys.stdin)["tokens_per_second"], 1))'
}
declare -A got
for ((r = 0; r < ROUNDS; ++r)); do
  for i in "${!names[@]}"; do
    if ((r % 2 == 0)); then order=(A B); else order=(B A); fi
    for w in "${order[@]}"; do
      bin=$A; [[ $w == B ]] && bin=$B
      got[$w,$i]+="$(tps "$bin" "${args[$i]}") "
    done
  done
  echo "round $((r + 1))/$ROUNDS done" >&2
done
for i in "${!names[@]}"; do
  /usr/bin/python3 - "${names[$i]}" "${got[A,$i]}" "${got[B,$i]}" <<'PY'
import statistics, sys
name, a, b = sys.argv[1], [float(x) for x in sys.argv[2].split()], [float(x) for x in sys.argv[3].split()]
ma, mb = statistics.median(a), statistics.median(b)
print(f"| {name} | {', '.join(f'{x:g}' for x in a)} | {', '.join(f'{x:g}' for x in b)} | {ma:g} -> {mb:g} ({100 * (mb / ma - 1):+.1f}%) |")
PY
done
