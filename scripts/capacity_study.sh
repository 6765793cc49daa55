#!/usr/bin/env bash
# Knowledge capacity, dense against STEM: N synthetic biographies
# (stem tasks make --bios N), the S dense and S STEM configs trained on them
# alone (vocabulary VOCAB, default 2048: the text is small) for STEPS steps
# of 8 x 256 tokens, then `stem eval --capacity` on
# each: the bits of the table each model holds, per parameter and per active
# parameter (docs/evaluation.md).
#
#   bash scripts/capacity_study.sh [DIR]      (N=1000, STEPS=800)
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-runs/capacity}
STEM=${STEM:-build/stem}
N=${N:-1000}
STEPS=${STEPS:-800}
VOCAB=${VOCAB:-2048}
mkdir -p "$DIR"
"$STEM" tasks make --out "$DIR/tasks" --bios "$N" --book none --wordnet none --countries none >/dev/null
[ -d "$DIR/data" ] || "$STEM" prepare --input "$DIR/tasks/bios_train.txt" --out "$DIR/data" --vocab-size "$VOCAB" \
  --val-fraction 0 --doc-bytes 512 >/dev/null
for kind in dense stem; do
  /usr/bin/python3 -c "import json, sys; c = json.load(open(sys.argv[1])); c['vocab_size'] = int(sys.argv[3]); json.dump(c, open(sys.argv[2], 'w'), indent=2)" \
    "configs/S-$kind.json" "$DIR/S-$kind.json" "$VOCAB"
  [ -d "$DIR/$kind" ] || "$STEM" train --config "$DIR/S-$kind.json" --data "$DIR/data" --out "$DIR/$kind" \
    --steps "$STEPS" --batch 8 --seq 256 --eval-every 0 --save-every 0 --keep 1 --seed 1 >/dev/null
  echo "== S-$kind"
  "$STEM" eval --model "$DIR/$kind" --capacity "$DIR/tasks/bios.json"
done
