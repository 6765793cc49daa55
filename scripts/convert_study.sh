#!/usr/bin/env bash
# From dense to STEM (docs/convert.md), on the dense model of `stem demo`:
#  1. the validation loss of the dense model and of its STEM conversions
#     (`stem convert --to-stem --layers LAYERS`, --init embed and --init mean);
#  2. STEPS steps of continued training of each, the same data, batches and
#     backbone schedule (peak LR, warm-up WARMUP, cosine decay):
#       dense          the dense model itself;
#       stem-embed     the embed conversion, tables at LR_TABLES;
#       stem-mean      the mean conversion, tables at LR_TABLES;
#       stem-mean-kd   stem-mean distilled from the dense model (--distill-alpha ALPHA);
#       stem-mean-frz  stem-mean with the backbone frozen for the first STEPS/4 steps;
#  3. with LONG=1, stem-mean-long: the mean conversion trained at twice its
#     max_position_embeddings (--seq, the same tokens per step, --rope-theta
#     4x, --doc-mask), evaluated in windows of SEQ and of the new length.
# Prints a table of validation losses (`stem eval`, the whole held-out split
# in windows of SEQ tokens) and writes DIR/summary.json.
#
#   bash scripts/convert_study.sh [DEMO_DIR] [DIR]     (defaults: runs/demo, runs/convert)
# Environment: STEPS (300), LR (2e-3), LR_TABLES (6e-2), WARMUP (20), ALPHA (0.5),
#   LAYERS (all-but-first), SEQ (256), LONG (0), STEM (build/stem).
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO=${1:-runs/demo}
DIR=${2:-runs/convert}
STEM=${STEM:-build/stem}
STEPS=${STEPS:-300}
LR=${LR:-2e-3}
LR_TABLES=${LR_TABLES:-6e-2}
WARMUP=${WARMUP:-20}
ALPHA=${ALPHA:-0.5}
LAYERS=${LAYERS:-all-but-first}
SEQ=${SEQ:-256}
LONG=${LONG:-0}
DATA=$DEMO/data
[[ -d $DEMO/dense && -d $DATA ]] || { echo "convert_study: no $DEMO/dense or $DATA (run: $STEM demo --out $DEMO)" >&2; exit 2; }
mkdir -p "$DIR"
results=$DIR/results.jsonl
: > "$results"

# val NAME MODEL [SEQ]: the held-out loss of MODEL, appended to results.jsonl
# (or why stem eval refused, and status 1).
val() {
  local seq=${3:-$SEQ} out
  if ! out=$("$STEM" eval --model "$2" --data "$DATA" --seq "$seq" --json 2> "$DIR/eval.err"); then
    echo "$1, windows of $seq: $(tail -n 1 "$DIR/eval.err")"
    return 1
  fi
  /usr/bin/python3 -c "import json, sys; r = json.load(sys.stdin); print(json.dumps({'model': sys.argv[1], 'seq': int(sys.argv[2]), 'loss': r['loss'], 'se': r['loss_se']}))" \
      "$1" "$seq" <<< "$out" | tee -a "$results"
}

# train NAME MODEL [stem train options...]: STEPS continued-training steps from MODEL.
train() {
  local name=$1 from=$2
  shift 2
  "$STEM" train --init-from "$from" --data "$DATA" --out "$DIR/$name" --steps "$STEPS" --batch "${BATCH:-8}" --seq "$SEQ" \
    --lr "$LR" --warmup "$WARMUP" --eval-every 0 --save-every "$STEPS" --keep 1 --seed 2 --force --json "$@" |
    tail -n 1 > "$DIR/$name.summary.json"
}

"$STEM" convert --model "$DEMO/dense" --to-stem --layers "$LAYERS" --init embed --out "$DIR/embed" --json > "$DIR/embed.json"
"$STEM" convert --model "$DEMO/dense" --to-stem --layers "$LAYERS" --init mean --data "$DATA" --out "$DIR/mean" --json \
  > "$DIR/mean.json"
val dense@0 "$DEMO/dense"
val stem-embed@0 "$DIR/embed"
val stem-mean@0 "$DIR/mean"

train dense "$DEMO/dense"
train stem-embed "$DIR/embed" --lr-tables "$LR_TABLES"
train stem-mean "$DIR/mean" --lr-tables "$LR_TABLES"
train stem-mean-kd "$DIR/mean" --lr-tables "$LR_TABLES" --teacher "$DEMO/dense" --distill-alpha "$ALPHA"
train stem-mean-frz "$DIR/mean" --lr-tables "$LR_TABLES" --freeze-backbone-steps $((STEPS / 4))
for name in dense stem-embed stem-mean stem-mean-kd stem-mean-frz; do val "$name@$STEPS" "$DIR/$name"; done

if ((LONG)); then
  read -r long theta < <(/usr/bin/python3 -c "import json, sys; c = json.load(open(sys.argv[1])); print(2 * c['max_position_embeddings'], 4 * c['rope_theta'])" "$DIR/mean/config.json")
  BATCH=$((8 * SEQ / long > 0 ? 8 * SEQ / long : 1)) SEQ=$long \
    train stem-mean-long "$DIR/mean" --lr-tables "$LR_TABLES" --rope-theta "$theta" --doc-mask
  val "stem-mean-long@$STEPS" "$DIR/stem-mean-long"
  val "stem-mean-long@$STEPS" "$DIR/stem-mean-long" "$long"
  val "stem-mean@$STEPS" "$DIR/stem-mean" "$long" || true  # past its positions: refused, or worse
fi

/usr/bin/python3 - "$results" "$DIR/summary.json" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
json.dump(rows, open(sys.argv[2], "w"), indent=2)
print("| model | window | val loss | ± se |\n|---|---|---|---|")
for r in rows:
    print(f"| {r['model']} | {r['seq']} | {r['loss']:.4f} | {r['se']:.4f} |")
EOF
