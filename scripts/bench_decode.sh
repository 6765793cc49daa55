#!/usr/bin/env bash
# Inference benchmarks of docs/performance.md: decode and prefill of the
# llama-bench shapes (configs/decode-*.json) in F32 and BF16, dense against
# STEM, and STEM tables in RAM, mmap and disk with a cold page cache, prefetch
# on and off. Checkpoints are random (speed does not depend on the values) and
# are made once under DIR (default: runs/bench-decode; the L STEM model takes
# about 17 GB of disk with its BF16 copy and packs).
#
#   bash scripts/bench_decode.sh [DIR] [S|L|all]
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-runs/bench-decode}
WHICH=${2:-all}
STEM=${STEM:-build/stem}
REPS=${REPS:-5}
mkdir -p "$DIR"

make_models() {  # $1 = S or L
  for kind in dense stem; do
    local m="$DIR/decode-$1-$kind"
    [ -d "$m" ] || "$STEM" init --config "configs/decode-$1-$kind.json" --out "$m" >/dev/null
    [ -d "$m-bf16" ] || "$STEM" convert --model "$m" --dtype bf16 --out "$m-bf16" >/dev/null
  done
  for m in "$DIR/decode-$1-stem" "$DIR/decode-$1-stem-bf16"; do
    [ -f "$m/tables.stem" ] || "$STEM" convert --model "$m" --pack-tables >/dev/null
  done
}

row() {  # prints one result line: label, then the bench's JSON summarised
  local label=$1; shift
  "$STEM" bench "$@" --reps "$REPS" --json | python3 -c '
import json, sys
j = json.load(sys.stdin)
cells = [sys.argv[1], "%.1f" % j["tokens_per_second"], "%.3f" % j["p50_ms"], "%.3f" % j["p99_ms"],
         "%.0f" % (j["peak_rss_bytes"] / 2**20), "%.1f" % (j["table_bytes_read"] / 1e6),
         "%.2f" % j["cache_hit_rate"], "%.1f" % j["prefetch_wait_ms"]]
print("| " + " | ".join(cells) + " |")' "$label"
}

run_shape() {  # $1 = S or L
  local s=$1 d="$DIR/decode-$1"
  make_models "$s"
  echo "### $s: configs/decode-$s-*.json, $(nproc) threads"
  echo
  echo "| run | tokens/s | p50 ms | p99 ms | peak RSS MB | table MB read | cache hits | prefetch wait ms |"
  echo "|---|---|---|---|---|---|---|---|"
  for dt in "" "-bf16"; do
    for kind in dense stem; do
      row "decode $kind${dt:+ bf16}" decode --model "$d-$kind$dt"
      row "prefill 512 $kind${dt:+ bf16}" prefill --model "$d-$kind$dt"
    done
  done
  for tier in mmap disk; do
    for pf in "" "--no-prefetch"; do
      row "decode stem, $tier, cold${pf:+, no prefetch}" decode --model "$d-stem" --tables $tier --cold $pf
    done
  done
  row "decode stem, disk, cold, table-major (no pack)" decode --model "$d-stem" --tables disk --cold --no-pack
  row "decode stem bf16, disk 64 MB cache, cold" decode --model "$d-stem-bf16" --tables disk --table-cache-mb 64 --cold
  echo
}

case "$WHICH" in
  S|L) run_shape "$WHICH" ;;
  all) run_shape S; run_shape L ;;
  *) echo "usage: $0 [DIR] [S|L|all]" >&2; exit 2 ;;
esac
