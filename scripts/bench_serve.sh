#!/usr/bin/env bash
# Serving throughput of `stem serve` with continuous batching: the M-shape
# STEM model (configs/M-stem.json, random weights, a tokenizer of 8192 pieces
# from the built-in corpus) served with its tables in RAM and on disk; for
# each, 1 streaming client and then 8 (tests/serve/load_test.mjs), ROUNDS
# times interleaved. Prints aggregate generated tokens/s, time to first token
# and inter-token latency (p50, p99), and the 8-stream / 1-stream ratio.
# Usage: scripts/bench_serve.sh [WORK_DIR]
#   ROUNDS=2 MAX_TOKENS=64 REQ1=4 REQ8=16 PARALLEL=8
set -euo pipefail
cd "$(dirname "$0")/.."
STEM=${STEM:-build/stem}
WORK=${1:-$(mktemp -d)}
ROUNDS=${ROUNDS:-2} MAX_TOKENS=${MAX_TOKENS:-64} REQ1=${REQ1:-4} REQ8=${REQ8:-16} PARALLEL=${PARALLEL:-8}
[[ -x $STEM ]] || { echo "bench_serve: $STEM not built (cmake --build --preset release)" >&2; exit 2; }
[[ -d tests/serve/node_modules ]] || { echo "bench_serve: run scripts/setup.sh (the Node test clients)" >&2; exit 2; }
mkdir -p "$WORK"
if [[ ! -f $WORK/model/tokenizer.model ]]; then
  "$STEM" prepare --input corpus/builtin --out "$WORK/data" --vocab-size 8192 > /dev/null
  "$STEM" init --config configs/M-stem.json --out "$WORK/model" --seed 1 > /dev/null
  cp "$WORK/data/tokenizer.model" "$WORK/model/"
  "$STEM" convert --model "$WORK/model" --pack-tables > /dev/null  # tables.stem: one read per token on disk
fi
run_load() {  # URL CLIENTS REQUESTS
  node tests/serve/load_test.mjs --url "$1" --model m --clients "$2" --requests "$3" \
    --max-tokens "$MAX_TOKENS" --timeout-s 300 --json | tail -1
}
for round in $(seq "$ROUNDS"); do
  for tables in ram disk; do
    log="$WORK/serve-$tables.out"
    "$STEM" serve --model "$WORK/model" --name m --port 0 --parallel "$PARALLEL" --tables "$tables" \
      > "$log" 2> "$WORK/serve-$tables.err" &
    pid=$!
    url=""
    for _ in $(seq 600); do
      url=$(sed -n 's/^listening on //p' "$log"); [[ -n $url ]] && break; sleep 0.1
    done
    until node -e "fetch('$url/health').then(r=>process.exit(r.status==200?0:1)).catch(()=>process.exit(1))"; do
      sleep 0.2
    done
    run_load "$url" 8 8 > /dev/null  # warm-up (GEMM shapes of every batch size)
    one=$(run_load "$url" 1 "$REQ1")
    eight=$(run_load "$url" 8 "$REQ8")
    kill -TERM "$pid"; wait "$pid"
    python3 - "$round" "$tables" "$one" "$eight" <<'EOF'
import json, sys
r, tables, one, eight = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
def line(label, j):
    return "%s: %.1f tok/s, TTFT p50 %.0f / p99 %.0f ms, ITL p50 %.1f / p99 %.1f ms, failed %d" % (
        label, j["tokens_per_s"], j["ttft_ms"]["p50"], j["ttft_ms"]["p99"],
        j["inter_token_ms"]["p50"], j["inter_token_ms"]["p99"], j["failed"])
print("round %s, tables %s" % (r, tables))
print("  " + line("1 stream ", one))
print("  " + line("8 streams", eight))
print("  ratio 8/1: %.2fx" % (eight["tokens_per_s"] / one["tokens_per_s"]))
EOF
  done
done
