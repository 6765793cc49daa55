#!/usr/bin/env bash
# The paper's editing example on real facts: small 4-layer models (all STEM,
# and with layer 0 dense) trained on the world-facts sentences alone
# (`stem tasks make`, from countries-list), then Spain's STEM rows replaced by
# Germany's, and the same prompts asked before and after. Then, on the all-STEM
# model, a country of two pieces: "New Zealand" takes Germany's answers (rows
# copied, and rows trained with --prompts), and gets a capital it never saw
# (Auckland) by injection. About 1 minute on 2 cores. Needs the task sources
# (scripts/setup.sh --tasks data/task-sources).
#
#   bash scripts/world_edit.sh [DIR]      (default runs/world; STEPS=1500)
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-runs/world}
STEM=${STEM:-build/stem}
STEPS=${STEPS:-1500}
export OMP_NUM_THREADS=1  # tiny models: one thread is fastest and the same on every machine
mkdir -p "$DIR"
"$STEM" tasks make --out "$DIR/tasks" --book none --wordnet none > /dev/null
if [ ! -f "$DIR/tasks/world_facts_train.txt" ]; then
  echo "world_edit: no countries-list (run scripts/setup.sh --tasks data/task-sources)" >&2
  exit 1
fi
[ -d "$DIR/data" ] || "$STEM" prepare --input "$DIR/tasks/world_facts_train.txt" --out "$DIR/data" --doc-bytes 32 \
  --val-fraction 0 --vocab-size 1536 > /dev/null
for layout in full all; do
  if [ "$layout" = full ]; then ffn='"stem", "stem", "stem", "stem"'; else ffn='"dense", "stem", "stem", "stem"'; fi
  cat > "$DIR/$layout.json" <<JSON
{"model_type": "stem", "vocab_size": 1536, "hidden_size": 64, "intermediate_size": 256,
 "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4,
 "max_position_embeddings": 64, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
 "tie_word_embeddings": false, "ffn_types": [$ffn], "num_hash_experts": 0}
JSON
  [ -f "$DIR/$layout/latest" ] || "$STEM" train --config "$DIR/$layout.json" --data "$DIR/data" --out "$DIR/$layout" \
    --steps "$STEPS" --batch 16 --seq 32 --lr 5e-3 --warmup 50 --eval-every 0 --save-every 0 --keep 1 \
    --weight-decay 0 --peak-gflops 100 --seed 1 > "$DIR/$layout-train.log" 2>&1 || { tail -3 "$DIR/$layout-train.log" >&2; exit 1; }
  "$STEM" edit swap --model "$DIR/$layout" --from Spain --to Germany --out "$DIR/$layout-spain.ovl" > /dev/null
  echo "== $layout: [$ffn]"
  for p in "The capital of Spain is" "The government of Spain sits in" "People in Spain speak" \
           "The currency of Spain is the" "The capital of France is" "Berlin is the capital city of"; do
    base=$("$STEM" generate --model "$DIR/$layout" --prompt "$p" --greedy -n 3 2> /dev/null | tr '\n' ' ')
    edited=$("$STEM" generate --model "$DIR/$layout" --edit "$DIR/$layout-spain.ovl" --prompt "$p" --greedy -n 3 \
             2> /dev/null | tr '\n' ' ')
    printf '%-34s base:%-14s Spain <- Germany:%s\n' "$p" "$base" "$edited"
  done
done

# A country of two pieces, on the all-STEM model.
ask() {  # OVERLAY|- PROMPT...: the greedy answer, without and with the overlay
  local ovl=$1 p base edited
  shift
  for p in "$@"; do
    base=$("$STEM" generate --model "$DIR/full" --prompt "$p" --greedy -n 4 2> /dev/null | tr '\n' ' ')
    edited=$("$STEM" generate --model "$DIR/full" --edit "$ovl" --prompt "$p" --greedy -n 4 2> /dev/null | tr '\n' ' ')
    printf '%-38s base:%-22s edited:%s\n' "$p" "$base" "$edited"
  done
}
nz=("The capital of New Zealand is" "The government of New Zealand sits in" "People in New Zealand speak"
    "The currency of New Zealand is the")
others=("The capital of France is" "The capital of Papua New Guinea is" "The currency of Niue is the"
        "The capital of Australia is")
printf '%s\n' "${nz[@]}" "The main language of New Zealand is" > "$DIR/nz-prompts.txt"
"$STEM" edit swap --model "$DIR/full" --from "New Zealand" --to Germany --shared allow --out "$DIR/nz-copy.ovl" \
  > /dev/null 2>&1
"$STEM" edit swap --model "$DIR/full" --from "New Zealand" --to Germany --shared allow \
  --prompts "$DIR/nz-prompts.txt" --out "$DIR/nz-train.ovl" > /dev/null 2>&1
cat > "$DIR/nz-facts.jsonl" <<'JSON'
{"subject": "New Zealand", "text": "The capital of New Zealand is Auckland."}
{"subject": "New Zealand", "text": "The government of New Zealand sits in Auckland."}
{"subject": "New Zealand", "text": "People in New Zealand speak English."}
{"subject": "New Zealand", "text": "The currency of New Zealand is the New Zealand Dollar."}
JSON
"$STEM" edit inject --model "$DIR/full" --facts "$DIR/nz-facts.jsonl" --out "$DIR/nz-inject.ovl" > /dev/null 2>&1
echo "== full, New Zealand <- Germany, rows copied"
ask "$DIR/nz-copy.ovl" "${nz[@]}" "${others[@]}"
echo "== full, New Zealand <- Germany, rows trained (--prompts)"
ask "$DIR/nz-train.ovl" "${nz[@]}" "${others[@]}"
echo "== full, New Zealand's capital is Auckland (inject)"
ask "$DIR/nz-inject.ovl" "${nz[@]}" "${others[@]}"
