#!/usr/bin/env bash
# Training with the STEM tables in RAM or on disk (docs/performance.md):
# `stem train --lazy-tables` with --tables ram, disk, and disk --no-prefetch,
# on the built-in corpus, for the S-stem and M-stem configs. Prints the median
# tokens/s over steps 3.., the largest resident set between checkpoints (the
# disk tier's point), the peak (a checkpoint save brings the tables back into
# memory), and the time spent waiting on table rows.
#
#   bash scripts/bench_train_tables.sh [DIR] [S|M|all]
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-runs/bench-train-tables}
WHICH=${2:-all}
STEM=${STEM:-build/stem}
STEPS=${STEPS:-20}
mkdir -p "$DIR"

data() {  # $1 = vocabulary size
  local d="$DIR/data-$1"
  [ -d "$d" ] || "$STEM" prepare --input corpus/builtin --out "$d" --vocab-size "$1" >/dev/null 2>&1
  echo "$d"
}

run() {  # $1 label, $2 config, $3 data, $4 batch, $5 seq, rest: flags
  local label=$1 cfg=$2 dat=$3 b=$4 t=$5; shift 5
  "$STEM" train --config "$cfg" --data "$dat" --out "$DIR/run" --force --steps "$STEPS" --batch "$b" --seq "$t" \
      --lazy-tables --eval-every 0 --save-every 0 --json "$@" 2>/dev/null |
    python3 -c '
import json, statistics, sys
label = sys.argv[1]
lines = [json.loads(l) for l in sys.stdin if l.startswith("{")]
steps = [j for j in lines if "step" in j]
tps = statistics.median(s["tokens_per_second"] for s in steps[2:])
rss = max(s["rss_bytes"] for s in steps[:-1]) / 2**20
wait = sum(s.get("table_wait_seconds", 0) for s in steps[2:]) / max(1, len(steps) - 2)
print(f"{label:28s} {tps:8.1f} tok/s   rss between saves {rss:7.1f} MiB   wait/step {1e3*wait:6.1f} ms")
' "$label"
  # the summary line holds the peak, including the final checkpoint save
  "$STEM" train --config "$cfg" --data "$dat" --out "$DIR/run" --force --steps 3 --batch "$b" --seq "$t" \
      --lazy-tables --eval-every 0 --json "$@" 2>/dev/null | tail -1 |
    python3 -c 'import json,sys; j=json.load(sys.stdin); print("%28s peak with a save %7.1f MiB" % ("", j["peak_rss_bytes"]/2**20))'
}

shape() {  # $1 = S or M
  local cfg="configs/$1-stem.json" b=8 t=256 v=4096
  if [ "$1" = M ]; then b=4; t=512; v=8192; fi
  local d; d=$(data "$v")
  echo "== $1-stem, batch $b x $t, $STEPS steps"
  run "$1 ram" "$cfg" "$d" "$b" "$t" --tables ram
  run "$1 disk, prefetch" "$cfg" "$d" "$b" "$t" --tables disk
  run "$1 disk, no prefetch" "$cfg" "$d" "$b" "$t" --tables disk --no-prefetch
}

case "$WHICH" in
  S|M) shape "$WHICH" ;;
  all) shape S; shape M ;;
  *) echo "usage: $0 [DIR] [S|M|all]" >&2; exit 2 ;;
esac
